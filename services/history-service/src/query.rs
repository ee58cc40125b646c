//! The history query: newest messages of a room, optionally before a stream sequence,
//! inside a `SELECT chat.messages` CLIENT span.

use std::str::FromStr as _;

use chat_protocol::StoredMessage;
use sqlx::Row as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use telemetry::{DbOperation, Secret, db_span, record_db_failure};
use time::format_description::well_known::Rfc3339;
use tracing::Instrument as _;

/// The database could not answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// `DATABASE_URL` is not a PostgreSQL URL (the URL itself is not repeated).
    #[error("DATABASE_URL is not a valid PostgreSQL URL")]
    Url,
    /// The query failed.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
}

const SELECT_SQL: &str = "SELECT stream_seq, username, text, sent_at, trace_id FROM chat.messages \
     WHERE room = $1 AND ($2::bigint IS NULL OR stream_seq < $2) ORDER BY stream_seq DESC LIMIT $3";

/// Read access to `chat.messages`.
#[derive(Debug, Clone)]
pub(crate) struct History {
    pool: PgPool,
    database: String,
    host: String,
    port: u16,
}

impl History {
    /// A lazily connecting pool (the service starts before the database is up).
    pub(crate) fn connect(url: &Secret, size: u32) -> Result<Self, QueryError> {
        let options = PgConnectOptions::from_str(url.expose()).map_err(|_| QueryError::Url)?;
        let database = options.get_database().unwrap_or("postgres").to_owned();
        let (host, port) = (options.get_host().to_owned(), options.get_port());
        let pool = PgPoolOptions::new()
            .max_connections(size)
            .acquire_timeout(std::time::Duration::from_secs(3))
            .connect_lazy_with(options);
        Ok(Self { pool, database, host, port })
    }

    /// `SELECT 1`, for `/readyz`.
    pub(crate) async fn ping(&self) -> Result<(), String> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ()).map_err(|e| format!("database: {e}"))
    }

    /// Newest first.
    pub(crate) async fn newest(
        &self,
        room: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, QueryError> {
        let span = db_span(&DbOperation {
            operation: "SELECT",
            collection: "chat.messages",
            query: SELECT_SQL,
            namespace: &self.database,
            address: &self.host,
            port: self.port,
        });
        let rows = sqlx::query(SELECT_SQL)
            .bind(room)
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .instrument(span.clone())
            .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(error) => {
                let sqlstate = error.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned());
                record_db_failure(&span, sqlstate.as_deref(), "db_error", &error.to_string());
                return Err(error.into());
            }
        };
        span.record("db.response.returned_rows", rows.len() as i64);
        rows.iter()
            .map(|row| {
                let sent_at: time::OffsetDateTime = row.try_get("sent_at")?;
                Ok(StoredMessage {
                    seq: row.try_get("stream_seq")?,
                    user: row.try_get("username")?,
                    text: row.try_get("text")?,
                    sent_at: sent_at.format(&Rfc3339).unwrap_or_default(),
                    trace_id: row.try_get("trace_id")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(QueryError::from)
    }
}
