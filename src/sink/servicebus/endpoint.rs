//! Where the namespace is: the connection URL and transport the sink configuration describes
//! (a connection string or an Entra ID namespace), and the address of each entity.

use azure_core_amqp::{AmqpConnectionOptions, AmqpTransport};
use url::Url;

use super::credentials::Credentials;
use crate::config::ConnectionString;
use crate::config::{ServiceBusConfig, Transport};
use crate::sink::SinkBuildError;

/// Where the namespace is and how to authenticate.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// The connection URL (`amqps://host`, `amqp://host:port` for the emulator).
    pub url: Url,
    /// Connection options (transport, custom endpoint).
    pub options: AmqpConnectionOptions,
    /// Credentials.
    pub credentials: Credentials,
    /// `host[:port]`, for messages.
    pub display: String,
}

impl Endpoint {
    /// The endpoint described by the sink configuration.
    pub(crate) fn from_config(config: &ServiceBusConfig) -> Result<Self, SinkBuildError> {
        let err = |message: String| SinkBuildError {
            kind: "servicebus",
            message,
        };
        let (host, port, emulator, credentials) =
            match (&config.connection_string, &config.namespace) {
                (Some(cs), _) => {
                    let cs =
                        ConnectionString::parse(cs.expose()).map_err(|e| err(e.to_string()))?;
                    let credentials = Credentials::from_connection_string(&cs).map_err(err)?;
                    (cs.host, cs.port, cs.emulator, credentials)
                }
                (None, Some(ns)) => {
                    if config.use_development_emulator {
                        crate::config::emulator_host(ns).map_err(err)?;
                    }
                    let credentials =
                        Credentials::entra(&config.credential, config.identity_ca_file.as_deref())
                            .map_err(err)?;
                    if config.use_development_emulator {
                        let (host, port) = ns.rsplit_once(':').unwrap_or((ns, ""));
                        (host.to_string(), port.parse().ok(), true, credentials)
                    } else {
                        (ns.clone(), None, false, credentials)
                    }
                }
                (None, None) => return Err(err("set connection_string or namespace".into())),
            };
        let websockets = config.transport == Transport::AmqpWebsockets;
        let url = if emulator {
            format!("amqp://{host}:{}", port.unwrap_or(5672))
        } else {
            match port {
                Some(p) if !websockets => format!("amqps://{host}:{p}"),
                _ => format!("amqps://{host}"),
            }
        };
        let url = Url::parse(&url).map_err(|e| err(format!("endpoint {url:?}: {e}")))?;
        let options = AmqpConnectionOptions {
            transport: Some(if websockets && !emulator {
                AmqpTransport::WebSocket
            } else {
                AmqpTransport::Tcp
            }),
            ..Default::default()
        };
        let display = match port {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        Ok(Endpoint {
            url,
            options,
            credentials,
            display,
        })
    }

    /// The address of an entity (`amqps://host/topic`).
    pub(crate) fn entity(&self, path: &str) -> String {
        format!("{}/{}", self.url.as_str().trim_end_matches('/'), path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulator_connection_strings_keep_the_port_and_use_plain_tcp() {
        let config: ServiceBusConfig = toml::from_str(
            r#"connection_string = "Endpoint=sb://127.0.0.1:40111;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=k;UseDevelopmentEmulator=true;""#,
        )
        .unwrap();
        let mut config = config;
        config
            .connection_string
            .as_mut()
            .unwrap()
            .resolve()
            .unwrap();
        let e = Endpoint::from_config(&config).unwrap();
        assert_eq!(e.url.as_str(), "amqp://127.0.0.1:40111");
        assert_eq!(
            e.entity("api.event.customer"),
            "amqp://127.0.0.1:40111/api.event.customer"
        );
    }
}
