//! A Docker-free Azure Service Bus emulator: an AMQP 1.0 server that speaks Service Bus's
//! dialect (CBS, management node, lock tokens, dead-letter queues, sessions) well enough for
//! Microsoft's SDKs. Messages live in memory; a restart loses them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use servicebus_emulator::{Config, Emulator};
//! let config = Config::from_json_str(r#"{"UserConfig":{"Namespaces":[{"Name":"ns","Queues":[{"Name":"q"}]}]}}"#)?;
//! let emulator = Emulator::start(config).await?;
//! println!("{}", emulator.connection_string());
//! assert_eq!(emulator.counts("q").unwrap().active, 0);
//! # Ok(()) }
//! ```

pub mod address;
pub mod broker;
pub mod codec;
pub mod config;
pub mod connection;
pub mod entra;
pub mod management;
pub mod message;
pub mod normalize;
pub mod rules;
pub mod sas;
pub mod server;
pub mod sql;

pub use broker::{Broker, EntityCounts, EntityRef, ReceiveMode, Settlement};
pub use config::Config;
pub use entra::{EntraAuth, Role};
pub use message::AmqpMessage;
pub use server::{CbsCounts, CbsSnapshot, Emulator, ServerSettings, StartError};
