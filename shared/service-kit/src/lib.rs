//! What the service binaries share besides telemetry: their `main` ([`main`],
//! [`main_with`]: command line, `healthcheck`, telemetry, exit code), their health
//! endpoints ([`health`]), the order they start and stop in ([`serve`]), how they connect
//! to NATS ([`NatsArgs`]) and, with feature `postgres`, to PostgreSQL (`DbArgs`, `Db`).
//! The argument groups are flattened into each service's `Config`.

#[cfg(feature = "postgres")]
mod db;
mod entry;
pub mod health;
mod serve;

pub use entry::{Binary, NoCommand, ServiceConfig, Shutdown, main, main_with, one_shot, parse_config, with_telemetry};
pub use serve::{ServeError, serve};

#[cfg(feature = "postgres")]
pub use db::{Db, DbArgs, DbUrlError, sqlstate};

use telemetry::messaging::Peer;
use telemetry::policy::Secret;

/// NATS connection settings.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma separated: in a cluster, list every node; the client
    /// connects to one, reconnects to any other, and also learns nodes the servers announce.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// NATS user (service users bypass the auth callout).
    #[arg(long, env = "NATS_USER")]
    pub nats_user: Option<String>,
    /// NATS password of that user.
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<Secret>,
}

/// NATS could not be reached (credentials in the URL are shown as `REDACTED`).
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to NATS at {url}: {source}")]
pub struct ConnectFailed {
    url: String,
    source: async_nats::ConnectError,
}

impl NatsArgs {
    /// Connects as `name` (shown in the server's connection list), with the inbox prefix
    /// `_INBOX.svc.<name>` that `nats/nats.conf` lets that service user subscribe to (and
    /// no chat user). The first connection is retried in the background, so a service
    /// starts before NATS and reports not ready. Connection events are logged and
    /// counted (`nats.client.events`; the `NatsConnectionUnstable` alert). Telemetry
    /// exported with `OTEL_<SIGNAL>S_EXPORTER=nats` is published on this connection.
    pub async fn connect(&self, name: &str) -> Result<async_nats::Client, ConnectFailed> {
        let events = telemetry::nats::ConnectionEvents::new();
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .custom_inbox_prefix(format!("_INBOX.svc.{name}"))
            .event_callback(move |event| {
                events.record(&event);
                async {}
            })
            .retry_on_initial_connect();
        if let (Some(user), Some(password)) = (&self.nats_user, &self.nats_password) {
            options = options.user_and_password(user.clone(), password.expose().to_owned());
        }
        let client = options
            .connect(server_list(&self.nats_url))
            .await
            .map_err(|source| ConnectFailed { url: telemetry::policy::redact_url(&self.nats_url), source })?;
        telemetry::nats::export_over(&client);
        Ok(client)
    }

    /// `server.address` / `server.port` for spans (the first server listed).
    pub fn peer(&self) -> Peer {
        Peer::from_url(&self.nats_url)
    }
}

/// `nats://a:4222, nats://b:4222` as the list of servers async-nats connects to (it parses
/// a single string as one address).
pub fn server_list(urls: &str) -> Vec<&str> {
    urls.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use async_nats::ToServerAddrs as _;

    #[test]
    fn a_comma_separated_url_is_every_server_of_the_cluster() {
        let servers = super::server_list("nats://n1:4222, nats://user:pw@n2:4223,nats://n3:4224");
        let addrs: Vec<_> = servers.to_server_addrs().expect("valid").collect();
        assert_eq!(addrs.len(), 3);
        assert_eq!((addrs[1].host(), addrs[1].port(), addrs[1].username()), ("n2", 4223, Some("user")));
    }
}
