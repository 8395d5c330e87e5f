//! The `pollbus` binary: parses the command line, loads the configuration (exit 64 when it is
//! invalid), sets up logging and the allocator, and dispatches to the subcommand in
//! `commands/`.

mod commands;

use std::process::ExitCode;

use clap::Parser;

use commands::EXIT_CONFIG;
use pollbus::cli::{Cli, Command};
use pollbus::config::{Config, LogFormat};

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

fn main() -> ExitCode {
    purge_freed_memory_promptly();
    let cli = Cli::parse();
    pollbus::sink::servicebus::ensure_crypto_provider();
    let path = match &cli.command {
        Command::Run { config }
        | Command::PollOnce { config, .. }
        | Command::Replay { config, .. }
        | Command::Check { config, .. }
        | Command::State { config, .. }
        | Command::Resync { config, .. }
        | Command::Dlq { config, .. } => config.clone(),
        Command::Import { from } => return commands::import::import(from),
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
    let telemetry = init_logging(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pollbus: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(execute(cli.command, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pollbus: error: {e:#}");
            ExitCode::FAILURE
        }
    };
    if let Some(provider) = telemetry {
        // Sends the spans still in the batch (bounded by the exporter's timeout).
        if let Err(e) = provider.shutdown() {
            eprintln!("pollbus: exporting the last spans failed: {e}");
        }
    }
    code
}

/// Logs to stderr as configured and, with `telemetry.otlp_endpoint`, exports spans; the
/// tracer provider to flush before exiting.
fn init_logging(config: &Config) -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt = match config.log.format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(fmt);
    let (otel, provider) = match pollbus::telemetry::layer(&config.telemetry) {
        Ok(Some((layer, provider))) => (Some(layer), Some(provider)),
        Ok(None) => (None, None),
        Err(e) => {
            eprintln!("pollbus: {e}; spans are not exported");
            (None, None)
        }
    };
    registry.with(otel).init();
    if let Some(endpoint) = &config.telemetry.otlp_endpoint {
        tracing::info!(endpoint, "exporting spans over OTLP/HTTP");
    }
    provider
}

/// Runs the subcommand; its exit code.
async fn execute(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { probe, fields, .. } => commands::check::check(config, probe, fields).await,
        Command::Run { .. } => commands::run::run(config).await,
        Command::PollOnce {
            resource, dry_run, ..
        } => {
            if dry_run {
                commands::poll_once::dry_run(config, resource.as_deref()).await
            } else {
                commands::poll_once::poll_once(config, resource.as_deref()).await
            }
        }
        Command::Replay {
            resource,
            since,
            until,
            for_subscription,
            dry_run,
            ..
        } => {
            let args = commands::replay::ReplayArgs {
                resource,
                since,
                until,
                for_subscription,
                dry_run,
            };
            commands::replay::replay(config, args).await
        }
        Command::Dlq { action, .. } => {
            commands::dlq::dlq(&config, action, &mut std::io::stdout()).await
        }
        Command::Import { from } => Ok(commands::import::import(&from)),
        Command::State { action, .. } => commands::state::run(&config, action).await,
        Command::Resync { resource, .. } => commands::resync::resync(&config, &resource).await,
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
