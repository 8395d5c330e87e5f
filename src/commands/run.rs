//! `pollbus run`: the daemon, until SIGINT/SIGTERM.

use std::process::ExitCode;

use pollbus::config::Config;
use tokio_util::sync::CancellationToken;

/// Polls and publishes until a signal; says how many messages stayed in the outbox.
pub async fn run(config: Config) -> anyhow::Result<ExitCode> {
    let app = super::start(config).await?;
    let stop = CancellationToken::new();
    tokio::spawn(watch_signals(stop.clone()));
    let left = app.run(stop).await?;
    if left > 0 {
        eprintln!(
            "pollbus: stopped with {left} messages still in the outbox; they are sent on the next start"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// First SIGINT/SIGTERM: graceful stop. Second: exit at once (state stays consistent: every
/// page is one transaction).
async fn watch_signals(stop: CancellationToken) {
    wait_for_signal().await;
    tracing::info!("signal received; stopping gracefully (send again to exit at once)");
    stop.cancel();
    wait_for_signal().await;
    eprintln!("pollbus: second signal; exiting at once");
    std::process::exit(130);
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
