//! `servicebus-emulator --config Config.json --listen 127.0.0.1:PORT [--shared-access-key KEY]`

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::Parser;
use servicebus_emulator::{server, Config, Emulator, ServerSettings};

/// A Docker-free Azure Service Bus emulator (AMQP 1.0, plain TCP, in memory).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Microsoft emulator `Config.json`.
    #[arg(long)]
    config: PathBuf,
    /// Address to listen on (port 0 picks a free port; it is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:5672")]
    listen: SocketAddr,
    /// SAS key that tokens must be signed with.
    #[arg(long, default_value = server::DEFAULT_KEY)]
    shared_access_key: String,
    /// SAS key name (`skn`) tokens must carry.
    #[arg(long, default_value = server::DEFAULT_KEY_NAME)]
    shared_access_key_name: String,
    /// Largest message or batch accepted, in bytes.
    #[arg(long, default_value_t = server::DEFAULT_MAX_MESSAGE_SIZE)]
    max_message_size: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = Config::from_file(&args.config).context("loading configuration")?;
    let settings = ServerSettings {
        key_name: args.shared_access_key_name,
        key: args.shared_access_key,
        rotation: Default::default(),
        max_message_size: args.max_message_size,
        ..Default::default()
    };
    let mut emulator = Emulator::start_on(config, settings, args.listen).await?;
    println!("listening on {}", emulator.addr());
    println!("{}", emulator.connection_string());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    emulator.stop().await;
    Ok(())
}
