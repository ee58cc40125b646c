//! The `chat.messages` table: embedded migrations, the batched idempotent insert and a
//! reachability check. Every statement runs inside a database CLIENT span.

use opentelemetry::trace::SpanContext;
use service_kit::Db;
use telemetry::{db_span, record_db_failure};
use time::OffsetDateTime;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A statement failed.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// A statement did not finish within the processing deadline.
    #[error("database statement timed out")]
    Timeout,
}

impl StoreError {
    /// `error.type` for spans and metrics.
    pub(crate) fn error_type(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            _ if self.is_unavailable() => "db_unavailable",
            _ => "db_error",
        }
    }

    /// The database is down, restarting or overloaded: retrying later can succeed.
    /// Anything else (a row the database rejects) will fail again the same way.
    pub(crate) fn is_unavailable(&self) -> bool {
        match self {
            Self::Sql(sqlx::Error::Database(db)) => {
                // 08: connection exception, 53: insufficient resources, 57P: operator
                // intervention (shutdown, restart), 40: transaction rollback (deadlock).
                db.code().is_some_and(|c| ["08", "53", "57P", "40"].iter().any(|class| c.starts_with(class)))
            }
            Self::Timeout
            | Self::Sql(
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed,
            ) => true,
            _ => false,
        }
    }
}

/// One row to insert.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) stream_seq: i64,
    pub(crate) room: String,
    pub(crate) user: String,
    pub(crate) text: String,
    pub(crate) sent_at: OffsetDateTime,
    pub(crate) trace_id: Option<String>,
    pub(crate) msg_id: Option<String>,
}

const INSERT_SQL: &str = "INSERT INTO chat.messages (stream_seq, room, username, text, sent_at, trace_id, msg_id) \
     SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::text[]) \
     ON CONFLICT (stream_seq) DO NOTHING";

/// The table's owner: migrations and the batched insert.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    db: Db,
}

impl Store {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }

    /// Applies the embedded migrations, waiting for the database for up to a minute.
    pub(crate) async fn migrate(&self) -> Result<(), StoreError> {
        let mut attempt = 0;
        loop {
            match sqlx::migrate!("./migrations").run(&self.db.pool).await {
                Ok(()) => return Ok(()),
                Err(sqlx::migrate::MigrateError::Execute(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)))
                    if attempt < 20 =>
                {
                    attempt += 1;
                    tracing::warn!(attempt, "database not reachable yet; retrying migrations");
                    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// `SELECT 1`, for `/readyz`.
    pub(crate) async fn ping(&self) -> Result<(), String> {
        self.db.ping().await
    }

    /// Inserts all rows in one statement (one transaction); rows whose stream sequence is
    /// already stored are skipped. Returns the rows actually inserted.
    /// The span links `links` (the other deliveries of the batch).
    pub(crate) async fn insert_batch(&self, rows: &[Row], links: Vec<SpanContext>) -> Result<u64, StoreError> {
        let span = db_span(&self.db.operation("INSERT", "chat.messages", INSERT_SQL));
        span.record("db.operation.batch.size", rows.len() as i64);
        for link in links {
            span.add_link(link);
        }
        let query = sqlx::query(INSERT_SQL)
            .bind(rows.iter().map(|r| r.stream_seq).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.room.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.user.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.text.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.sent_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.trace_id.as_deref()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.msg_id.as_deref()).collect::<Vec<_>>());
        let result = query.execute(&self.db.pool).instrument(span.clone()).await;
        match result {
            Ok(done) => Ok(done.rows_affected()),
            Err(error) => {
                let error = StoreError::from(error);
                let sqlstate = match &error {
                    StoreError::Sql(sqlx::Error::Database(db)) => db.code().map(|c| c.into_owned()),
                    _ => None,
                };
                record_db_failure(&span, sqlstate.as_deref(), error.error_type(), &error.to_string());
                Err(error)
            }
        }
    }
}
