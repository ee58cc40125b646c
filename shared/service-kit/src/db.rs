//! PostgreSQL pool settings and what database spans say about the server.

use std::str::FromStr as _;
use std::time::Duration;

use opentelemetry::trace::SpanContext;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use telemetry::db::{DbSpans, Statement};
use telemetry::messaging::Traced;
use telemetry::policy::Secret;

/// PostgreSQL settings.
#[derive(Debug, Clone, clap::Args)]
pub struct DbArgs {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value = "postgres://chat@127.0.0.1:5432/chat")]
    pub database_url: Secret,
    /// Database connections.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 4)]
    pub db_pool_size: u32,
}

/// `DATABASE_URL` is unusable (the URL is not repeated: it may hold a password).
#[derive(Debug, thiserror::Error)]
#[error("DATABASE_URL is not a valid PostgreSQL URL")]
pub struct DbUrlError;

/// A lazily connecting pool and the spans of its statements.
#[derive(Debug, Clone)]
pub struct Db {
    /// The pool.
    pub pool: PgPool,
    spans: DbSpans,
}

impl DbArgs {
    /// A pool that connects on first use: the service starts (not ready) before the
    /// database. Call after `telemetry::init` (the spans use the global tracer).
    pub fn pool(&self) -> Result<Db, DbUrlError> {
        let options = PgConnectOptions::from_str(self.database_url.expose()).map_err(|_| DbUrlError)?;
        let spans = DbSpans::new(options.get_database().unwrap_or("postgres"), options.get_host(), options.get_port());
        let pool = PgPoolOptions::new()
            .max_connections(self.db_pool_size)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options);
        Ok(Db { pool, spans })
    }
}

impl Db {
    /// `SELECT 1`, for `/readyz`.
    pub async fn ping(&self) -> Result<(), String> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ()).map_err(|e| format!("database: {e}"))
    }

    /// A CLIENT span for `statement`, child of the current context.
    pub fn span(&self, statement: &Statement) -> Traced {
        self.spans.span(statement)
    }

    /// The same, on behalf of several operations: linked to the span of each of the
    /// others (`telemetry::db::DbSpans::span_linked`).
    pub fn span_linked(&self, statement: &Statement, links: Vec<SpanContext>) -> Traced {
        self.spans.span_linked(statement, links)
    }
}

/// The SQLSTATE the server answered a failed statement with (`db.response.status_code`
/// on its span); none for a failure without an answer (connection lost, pool timeout).
pub fn sqlstate(error: &sqlx::Error) -> Option<std::borrow::Cow<'_, str>> {
    error.as_database_error().and_then(|e| e.code())
}
