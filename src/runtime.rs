//! Process plumbing for `serve`: signals, systemd notifications and the
//! journald log format.
//!
//! SIGTERM and SIGINT cancel the shared token (graceful shutdown); SIGHUP asks the
//! caller to reload. Notifications go to `$NOTIFY_SOCKET` when systemd set it and
//! are a no-op otherwise, so the daemon runs unchanged outside systemd.
//!
//! The watchdog is not a timer of its own: [`Watchdog::ping`] is called by the
//! rotator's loop between passes, so a stuck loop stops the pings and systemd
//! restarts the service.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Listens for signals: cancels `shutdown` on SIGTERM/SIGINT, sends on `reload`
/// for each SIGHUP. Returns when shutdown starts.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub async fn signals(shutdown: CancellationToken, reload: mpsc::Sender<()>) -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                // A reload already queued covers this one too.
                let _ = reload.try_send(());
            }
            () = shutdown.cancelled() => return Ok(()),
        }
    }
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    shutdown.cancel();
    Ok(())
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::warn!(%err, "cannot notify systemd");
    }
}

/// Tells systemd the daemon is serving.
pub fn notify_ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd the daemon is re-reading its configuration; [`notify_reloaded`] ends it.
pub fn notify_reloading() {
    // systemd 253+ wants the monotonic time with RELOADING=1 to match it to the signal.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// Tells systemd a reload is over (applied or refused), with the new status if any.
pub fn notify_reloaded(status: Option<&str>) {
    match status {
        Some(status) => notify(&[NotifyState::Ready, NotifyState::Status(status)]),
        None => notify(&[NotifyState::Ready]),
    }
}

/// Updates the one-line status `systemctl status` shows.
pub fn notify_status(status: &str) {
    notify(&[NotifyState::Status(status)]);
}

/// Tells systemd the daemon is stopping.
pub fn notify_stopping() {
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: finishing requests in flight"),
    ]);
}

/// Proof of life for a watchdog, given by the loop that does the work.
#[derive(Clone)]
pub struct Watchdog {
    every: Duration,
    ping: Arc<dyn Fn() + Send + Sync>,
}

impl fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watchdog")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl Watchdog {
    /// systemd's watchdog for a `timeout` of `WATCHDOG_USEC`: `WATCHDOG=1` every
    /// half timeout, as sd_watchdog_enabled(3) advises. `None` when not enabled.
    pub fn systemd(timeout: Option<Duration>) -> Option<Watchdog> {
        let timeout = timeout.filter(|timeout| !timeout.is_zero())?;
        Some(Watchdog::new(timeout / 2, || {
            notify(&[NotifyState::Watchdog]);
        }))
    }

    /// A watchdog that calls `ping` every `every` (tests use this one).
    ///
    /// # Panics
    /// If `every` is zero.
    pub fn new(every: Duration, ping: impl Fn() + Send + Sync + 'static) -> Watchdog {
        assert!(!every.is_zero(), "a watchdog interval must not be zero");
        Watchdog {
            every,
            ping: Arc::new(ping),
        }
    }

    /// How often to ping.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// Says the caller's loop is alive.
    pub fn ping(&self) {
        (self.ping)();
    }
}

/// Whether stderr is the journal: systemd sets `JOURNAL_STREAM` to the
/// `device:inode` of the stream it connected, and a child that inherited the
/// variable but writes elsewhere must not think so (systemd.exec(5)).
pub fn stderr_is_journal(journal_stream: Option<&str>) -> bool {
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::MetadataExt as _;

    let Some((device, inode)) = journal_stream.and_then(|value| value.split_once(':')) else {
        return false;
    };
    let (Ok(device), Ok(inode)) = (device.parse::<u64>(), inode.parse::<u64>()) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|meta| meta.dev() == device && meta.ino() == inode)
}

/// The syslog priority prefix journald reads off each line (sd-daemon(3)).
pub fn syslog_prefix(level: Level) -> &'static str {
    match level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// Prefixes every line of `text` with `prefix`, so journald files a
/// multi-line message under one priority.
pub fn prefix_lines(prefix: &str, text: &str) -> String {
    let mut out = String::with_capacity(text.len() + prefix.len());
    for (line_idx, line) in text.split('\n').enumerate() {
        if line_idx > 0 {
            out.push('\n');
        }
        out.push_str(prefix);
        out.push_str(line);
    }
    out
}

/// Log lines for the journal: no timestamp (journald adds its own), no level
/// word, and the level as a `<N>` syslog prefix on every line instead.
#[derive(Debug)]
pub struct JournalFormat<F> {
    inner: F,
}

impl
    JournalFormat<
        tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Full, ()>,
    >
{
    /// The default fmt layout without time, level or colours.
    pub fn new() -> Self {
        JournalFormat {
            inner: tracing_subscriber::fmt::format()
                .without_time()
                .with_level(false)
                .with_ansi(false),
        }
    }
}

impl Default
    for JournalFormat<
        tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Full, ()>,
    >
{
    fn default() -> Self {
        Self::new()
    }
}

impl<S, N, F> FormatEvent<S, N> for JournalFormat<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        let prefix = syslog_prefix(*event.metadata().level());
        writeln!(writer, "{}", prefix_lines(prefix, line))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    #[test]
    fn journal_lines_carry_the_level_and_no_timestamp() {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .with_max_level(Level::DEBUG)
            .event_format(JournalFormat::new())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("broken");
            tracing::warn!(kid = "abc", "odd");
            tracing::info!("fine");
            tracing::debug!("first\nsecond");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let target = module_path!();
        assert_eq!(
            text,
            format!(
                "<3>{target}: broken\n<4>{target}: odd kid=\"abc\"\n<6>{target}: fine\n\
                 <7>{target}: first\n<7>second\n"
            )
        );
    }

    #[test]
    fn journal_stream_must_match_stderr() {
        assert!(!stderr_is_journal(None));
        assert!(!stderr_is_journal(Some("")));
        assert!(!stderr_is_journal(Some("not:numbers")));
        assert!(!stderr_is_journal(Some("0:0")));
    }

    #[test]
    fn prefix_every_line() {
        assert_eq!(prefix_lines("<3>", "a"), "<3>a");
        assert_eq!(prefix_lines("<3>", "a\nb"), "<3>a\n<3>b");
        assert_eq!(prefix_lines("", "a\nb"), "a\nb");
    }

    #[test]
    fn the_systemd_watchdog_pings_at_half_the_timeout() {
        assert!(Watchdog::systemd(None).is_none());
        assert!(Watchdog::systemd(Some(Duration::ZERO)).is_none());
        let watchdog = Watchdog::systemd(Some(Duration::from_secs(60))).unwrap();
        assert_eq!(watchdog.every(), Duration::from_secs(30));

        let count = Arc::new(AtomicUsize::new(0));
        let watchdog = Watchdog::new(Duration::from_millis(10), {
            let count = Arc::clone(&count);
            move || {
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        watchdog.ping();
        watchdog.clone().ping();
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }
}
