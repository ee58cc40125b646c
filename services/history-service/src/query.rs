//! The history query: newest messages of a room, optionally before a stream sequence,
//! inside a `SELECT chat.messages` CLIENT span.
//!
//! Order: the stream's creation time, then its sequence (a recreated stream restarts at
//! sequence 1). `before` pages within the newest stream that holds the room's messages;
//! messages of older streams come after all of them.

use chat_protocol::StoredMessage;
use opentelemetry::KeyValue;
use service_kit::Db;
use sqlx::Row as _;
use telemetry::db::{Statement, record_db_failure};
use time::format_description::well_known::Rfc3339;

/// The query failed.
#[derive(Debug, thiserror::Error)]
#[error("database error: {0}")]
pub(crate) struct QueryError(#[from] sqlx::Error);

const SELECT_SQL: &str = "SELECT stream_seq, username, text, sent_at, trace_id FROM chat.messages \
     WHERE room = $1 AND ($2::bigint IS NULL OR (stream_created, stream_seq) < \
     ((SELECT max(stream_created) FROM chat.messages WHERE room = $1), $2)) \
     ORDER BY stream_created DESC, stream_seq DESC LIMIT $3";
const SELECT: Statement =
    Statement { operation: "SELECT", collection: "chat.messages", name: "SELECT chat.messages", query: SELECT_SQL };

/// Read access to `chat.messages`.
#[derive(Debug, Clone)]
pub(crate) struct History {
    db: Db,
}

impl History {
    pub(crate) fn new(db: Db) -> Self {
        Self { db }
    }

    /// `SELECT 1`, for `/readyz`.
    pub(crate) async fn ping(&self) -> Result<(), String> {
        self.db.ping().await
    }

    /// Newest first.
    pub(crate) async fn newest(
        &self,
        room: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, QueryError> {
        let span = self.db.span(&SELECT);
        let rows = span
            .scope(sqlx::query(SELECT_SQL).bind(room).bind(before).bind(i64::from(limit)).fetch_all(&self.db.pool))
            .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(error) => {
                record_db_failure(&span, service_kit::sqlstate(&error).as_deref(), "db_error", &error.to_string());
                span.end();
                return Err(error.into());
            }
        };
        span.set_attribute(KeyValue::new("db.response.returned_rows", rows.len() as i64));
        span.end();
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
