//! The `pollbus` binary: parses the command line, loads the configuration (exit 64 when it is
//! invalid) and hands over to the library.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use pollbus::cli::{Cli, Command, ImportFrom};
use pollbus::clock::SystemClock;
use pollbus::config::{Config, LogFormat};
use pollbus::daemon::App;

/// mimalloc instead of glibc malloc: the poll loop allocates and frees whole pages of JSON;
/// with glibc, freeing them (`malloc_consolidate`, `_int_free`) took a third of pollbus's CPU in
/// the end-to-end benchmark and per-thread arenas inflated the resident set.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay`: its position in `mi_option_t` (the same in the v2 and v3 headers
/// libmimalloc-sys vendors; the crate exports no constant for it). A test checks it still
/// names the option whose default is mimalloc v3's 1000 ms.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Returns freed pages to the OS at once instead of up to a second later. Each poll frees a whole page
/// of parsed JSON; with the delay, mimalloc kept ~30 MB of it resident between pages (peak RSS
/// 107 → 75 MB for a 100k baseline in the end-to-end benchmark, CPU within its noise).
fn purge_freed_memory_promptly() {
    // SAFETY: called once at the start of main, before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
}

/// EX_USAGE: the configuration is invalid.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    purge_freed_memory_promptly();
    let cli = Cli::parse();
    pollbus::sink::servicebus::ensure_crypto_provider();
    let path = match &cli.command {
        Command::Run { config }
        | Command::PollOnce { config, .. }
        | Command::Check { config, .. }
        | Command::State { config, .. }
        | Command::Dlq { config, .. } => config.clone(),
        Command::Import { from } => return import(from),
    };
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(e) => {
            for problem in &e.problems {
                eprintln!("pollbus: config error: {problem}");
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pollbus: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli.command, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pollbus: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

async fn execute(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { probe, .. } => {
            print!("{}", pollbus::plan::describe(&config));
            if !probe {
                return Ok(ExitCode::SUCCESS);
            }
            let app = App::start(config, Arc::new(SystemClock))
                .await
                .context("cannot start")?;
            let mut ok = true;
            for (topic, result) in app.probe_sink().await {
                match result {
                    Ok(()) => println!("probe topic {topic}: ok, a sender attached"),
                    Err(e) => {
                        ok = false;
                        println!("probe topic {topic}: failed: {e}");
                    }
                }
            }
            for (resource, result) in app.probe().await {
                match result {
                    Ok(Some(missing)) if missing.is_empty() => {
                        println!("probe {resource}: ok, every configured field is present")
                    }
                    Ok(Some(missing)) => {
                        ok = false;
                        println!("probe {resource}: missing {}", missing.join(", "));
                    }
                    Ok(None) => println!(
                        "probe {resource}: reachable, but no record to check fields against"
                    ),
                    Err(e) => {
                        ok = false;
                        println!("probe {resource}: failed: {e}");
                    }
                }
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Run { .. } => {
            let app = App::start(config, Arc::new(SystemClock))
                .await
                .context("cannot start")?;
            let stop = CancellationToken::new();
            tokio::spawn(watch_signals(stop.clone()));
            let left = app.run(stop).await?;
            if left > 0 {
                eprintln!("pollbus: stopped with {left} messages still in the outbox; they are sent on the next start");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::PollOnce { resource, .. } => {
            let app = App::start(config, Arc::new(SystemClock))
                .await
                .context("cannot start")?;
            let (report, errors, left) = app.poll_once(resource.as_deref()).await?;
            eprintln!(
                "pollbus: polled {} pages, {} records: {} created, {} updated, {} deleted, {} no-op, {} skipped; outbox left {}",
                report.pages, report.records, report.created, report.updated, report.deleted,
                report.noop, report.skipped, left
            );
            for e in &errors {
                eprintln!("pollbus: poll failed: {e}");
            }
            Ok(if errors.is_empty() && left == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Dlq { action, .. } => {
            pollbus::plan::dlq(&config, action, &mut std::io::stdout()).await
        }
        Command::Import { from } => Ok(import(&from)),
        Command::State { action, .. } => {
            let store = pollbus::store::open(config.state.url.expose()).await?;
            pollbus::plan::state(store.as_ref(), action, &mut std::io::stdout()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `pollbus import`: the configuration on stdout (or `--out`), warnings on stderr.
fn import(from: &ImportFrom) -> ExitCode {
    let ImportFrom::CloudElements { file, out } = from;
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("pollbus: cannot read {}: {e}", file.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let imported = match pollbus::import::cloud_elements(&text, &file.display().to_string()) {
        Ok(imported) => imported,
        Err(e) => {
            eprintln!("pollbus: import failed: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for warning in &imported.warnings {
        eprintln!("pollbus: warning: {warning}");
    }
    match out {
        None => print!("{}", imported.toml),
        Some(path) => {
            if let Err(e) = std::fs::write(path, &imported.toml) {
                eprintln!("pollbus: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            eprintln!("pollbus: wrote {}", path.display());
        }
    }
    ExitCode::SUCCESS
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_where_we_set_it() {
        // SAFETY: reads an option; no other test in this binary sets options.
        let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(
            default, 1000,
            "option {MI_OPTION_PURGE_DELAY} is not mi_option_purge_delay (default 1000 ms in mimalloc v3)"
        );
    }
}
