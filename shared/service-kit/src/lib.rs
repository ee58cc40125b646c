//! What the service binaries share besides telemetry: their command line ([`ServiceCli`]:
//! settings plus a `healthcheck` subcommand), the order they start and stop in
//! ([`serve`]), how they connect to NATS ([`NatsArgs`]) and, with feature `postgres`, to
//! PostgreSQL ([`DbArgs`], [`Db`]). The argument groups are flattened into each
//! service's `Config`.

#[cfg(feature = "postgres")]
mod db;
mod serve;

pub use serve::{ServeError, serve};

#[cfg(feature = "postgres")]
pub use db::{Db, DbArgs, DbUrlError};

use telemetry::{Peer, Secret};

/// A service's command line: its settings, and `healthcheck` for container healthchecks.
#[derive(Debug, clap::Parser)]
pub struct ServiceCli<C: clap::Args> {
    /// What to do (default: run the service).
    #[command(subcommand)]
    pub command: Option<ServiceCommand>,
    /// The service's settings.
    #[command(flatten)]
    pub config: C,
}

/// Subcommands every service has.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ServiceCommand {
    /// Probe a running instance's /readyz (exit 0 when ready); for container healthchecks.
    Healthcheck,
}

impl<C: clap::Args> ServiceCli<C> {
    /// Parses the process arguments; `--help` and `--version` show the service's own name,
    /// version and description. Bad arguments exit with clap's message and code 2.
    pub fn parse_for(name: &'static str, version: &'static str, about: &'static str) -> Self {
        use clap::{CommandFactory as _, FromArgMatches as _};
        let matches = Self::command().name(name).version(version).about(about).get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

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
    /// counted (`nats.client.events`; the `NatsConnectionUnstable` alert).
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
        options
            .connect(server_list(&self.nats_url))
            .await
            .map_err(|source| ConnectFailed { url: telemetry::redact_url(&self.nats_url), source })
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
