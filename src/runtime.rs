//! Process plumbing for `serve`: signals and systemd notifications.
//!
//! SIGTERM and SIGINT cancel the shared token (graceful shutdown); SIGHUP asks the
//! caller to reload. Notifications go to `$NOTIFY_SOCKET` when systemd set it and
//! are a no-op otherwise, so the daemon runs unchanged outside systemd.

use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
                let _ = reload.try_send(());
            }
            () = shutdown.cancelled() => return Ok(()),
        }
    }
    tracing::info!("shutting down");
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

/// Tells systemd the daemon is stopping.
pub fn notify_stopping() {
    notify(&[NotifyState::Stopping]);
}
