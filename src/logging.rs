//! Where log lines go and how they look: tracing to stderr, filtered by
//! `JWKD_LOG`; one JSON object per line with `JWKD_LOG_FORMAT=json`; and under
//! journald no timestamps (the journal has its own) and the level as a `<N>`
//! syslog prefix on every line, so `journalctl -p` filters by it.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::Environment;

/// Installs the global subscriber: lines on stderr at `JWKD_LOG`, else at
/// `default_level`. Returns whether stderr is the journal, so that `main`
/// prefixes the lines it prints itself the same way ([`syslog_prefix`]).
pub fn init(env: &Environment, default_level: &str) -> bool {
    let filter = env
        .log_filter
        .clone()
        .unwrap_or_else(|| default_level.to_owned());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        );
    // Under journald: no timestamps (the journal has its own), levels as `<N>` prefixes.
    let journal = stderr_is_journal(env.journal_stream.as_deref());
    if env.log_json {
        logs.json().with_current_span(false).init();
    } else if journal {
        logs.event_format(JournalFormat::new()).init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
    journal
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

/// Log lines captured in memory, for tests that check what was logged.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl LogBuffer {
    /// Everything written so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[cfg(test)]
impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> LogBuffer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_lines_carry_the_level_and_no_timestamp() {
        let buffer = LogBuffer::default();
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
        let text = buffer.text();
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
}
