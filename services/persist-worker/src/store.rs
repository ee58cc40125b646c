//! The `chat.messages` table: embedded migrations, the batched idempotent insert and a
//! reachability check. Every statement runs inside a database CLIENT span.
//!
//! A row's key is (stream identity, stream sequence), and (user, `Nats-Msg-Id`) is
//! unique too: a redelivery, or a publisher's retry of the same message, finds its row
//! already there. A row that is already there **with different content** is a conflict,
//! never a silent success: [`Inserted::conflicts`] names it and the batch dead-letters
//! the message and counts it.

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanContext;
use service_kit::Db;
use sqlx::Row as _;
use telemetry::db::{Statement, record_db_failure};
use time::OffsetDateTime;

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
            Self::Sql(error @ sqlx::Error::Database(_)) => {
                // 08: connection exception, 53: insufficient resources, 57P: operator
                // intervention (shutdown, restart), 40: transaction rollback (deadlock).
                service_kit::sqlstate(error)
                    .is_some_and(|c| ["08", "53", "57P", "40"].iter().any(|class| c.starts_with(class)))
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    /// Creation time of the stream the message was stored in (its identity).
    pub(crate) stream_created: OffsetDateTime,
    pub(crate) stream_seq: i64,
    pub(crate) room: String,
    pub(crate) user: String,
    pub(crate) text: String,
    pub(crate) sent_at: OffsetDateTime,
    pub(crate) trace_id: Option<String>,
    pub(crate) msg_id: Option<String>,
}

impl Row {
    /// Whether `other` (a stored row with the same key) holds the same message.
    fn same_message(&self, stored: &Stored) -> bool {
        self.room == stored.room && self.user == stored.user && self.text == stored.text && self.msg_id == stored.msg_id
    }
}

/// The content of a stored row that an insert collided with.
#[derive(Debug)]
struct Stored {
    stream_created: OffsetDateTime,
    stream_seq: i64,
    room: String,
    user: String,
    text: String,
    msg_id: Option<String>,
}

/// What one batched insert did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Inserted {
    /// Rows written now.
    pub(crate) new: u64,
    /// Rows whose message was already stored, identical (redeliveries, publisher retries).
    pub(crate) duplicates: u64,
    /// Positions whose key is taken by a different message: not stored.
    pub(crate) conflicts: Vec<usize>,
}

const INSERT_SQL: &str = "INSERT INTO chat.messages \
     (stream_created, stream_seq, room, username, text, sent_at, trace_id, msg_id) \
     SELECT * FROM UNNEST($1::timestamptz[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], \
     $7::text[], $8::text[]) ON CONFLICT DO NOTHING";

const INSERT: Statement =
    Statement { operation: "INSERT", collection: "chat.messages", name: "INSERT chat.messages", query: INSERT_SQL };

const EXISTING_SQL: &str = "SELECT stream_created, stream_seq, room, username, text, msg_id FROM chat.messages \
     WHERE (stream_created, stream_seq) IN (SELECT * FROM UNNEST($1::timestamptz[], $2::bigint[])) \
     OR (username, msg_id) IN (SELECT * FROM UNNEST($3::text[], $4::text[]))";

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

    /// Records the consumer's ack floor in the stream `stream_created` (never moving it
    /// back: a late write of an older read cannot undo a newer one).
    pub(crate) async fn record_position(
        &self,
        stream_created: OffsetDateTime,
        ack_floor: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO chat.consumer_position (stream_created, ack_floor) VALUES ($1, $2) \
             ON CONFLICT (stream_created) DO UPDATE SET ack_floor = GREATEST(chat.consumer_position.ack_floor, \
             EXCLUDED.ack_floor), recorded_at = now()",
        )
        .bind(stream_created)
        .bind(i64::try_from(ack_floor).unwrap_or(i64::MAX))
        .execute(&self.db.pool)
        .await?;
        Ok(())
    }

    /// The last ack floor recorded in the stream `stream_created`, if any.
    pub(crate) async fn position(&self, stream_created: OffsetDateTime) -> Result<Option<u64>, StoreError> {
        let floor: Option<i64> =
            sqlx::query_scalar("SELECT ack_floor FROM chat.consumer_position WHERE stream_created = $1")
                .bind(stream_created)
                .fetch_optional(&self.db.pool)
                .await?;
        Ok(floor.and_then(|f| u64::try_from(f).ok()))
    }

    /// `SELECT 1`, for `/readyz`.
    pub(crate) async fn ping(&self) -> Result<(), String> {
        self.db.ping().await
    }

    /// Inserts all rows in one statement; rows whose key is taken are skipped. When any
    /// was (the statement wrote fewer rows than it was given), the batch's rows are
    /// compared with what is stored under their keys: identical ones are duplicates,
    /// different ones conflicts. The span links `links` (the other deliveries).
    pub(crate) async fn insert_batch(&self, rows: &[Row], links: Vec<SpanContext>) -> Result<Inserted, StoreError> {
        let span = self.db.span_linked(&INSERT, links);
        if span.is_recording() {
            span.set_attribute(KeyValue::new("db.operation.batch.size", rows.len() as i64));
        }
        let result = span
            .scope(async {
                let written = sqlx::query(INSERT_SQL)
                    .bind(rows.iter().map(|r| r.stream_created).collect::<Vec<_>>())
                    .bind(rows.iter().map(|r| r.stream_seq).collect::<Vec<_>>())
                    .bind(rows.iter().map(|r| r.room.as_str()).collect::<Vec<_>>())
                    .bind(rows.iter().map(|r| r.user.as_str()).collect::<Vec<_>>())
                    .bind(rows.iter().map(|r| r.text.as_str()).collect::<Vec<_>>())
                    .bind(rows.iter().map(|r| r.sent_at).collect::<Vec<_>>())
                    .bind(rows.iter().map(|r| r.trace_id.as_deref()).collect::<Vec<_>>())
                    .bind(rows.iter().map(|r| r.msg_id.as_deref()).collect::<Vec<_>>())
                    .execute(&self.db.pool)
                    .await?
                    .rows_affected();
                if written == rows.len() as u64 {
                    return Ok(Inserted { new: written, ..Inserted::default() });
                }
                let stored = self.existing(rows).await?;
                Ok(classify(rows, &stored, written))
            })
            .await;
        let result = result.inspect_err(|error: &StoreError| {
            let sqlstate = match error {
                StoreError::Sql(error) => service_kit::sqlstate(error),
                StoreError::Timeout | StoreError::Migrate(_) => None,
            };
            record_db_failure(&span, sqlstate.as_deref(), error.error_type(), &error.to_string());
        });
        span.end();
        result
    }

    /// The stored rows holding the keys of `rows`.
    async fn existing(&self, rows: &[Row]) -> Result<Vec<Stored>, StoreError> {
        let with_id: Vec<&Row> = rows.iter().filter(|r| r.msg_id.is_some()).collect();
        let found = sqlx::query(EXISTING_SQL)
            .bind(rows.iter().map(|r| r.stream_created).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.stream_seq).collect::<Vec<_>>())
            .bind(with_id.iter().map(|r| r.user.as_str()).collect::<Vec<_>>())
            .bind(with_id.iter().map(|r| r.msg_id.as_deref()).collect::<Vec<_>>())
            .fetch_all(&self.db.pool)
            .await?;
        found
            .iter()
            .map(|r| {
                Ok(Stored {
                    stream_created: r.try_get("stream_created")?,
                    stream_seq: r.try_get("stream_seq")?,
                    room: r.try_get("room")?,
                    user: r.try_get("username")?,
                    text: r.try_get("text")?,
                    msg_id: r.try_get("msg_id")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}

/// Finds the conflicts of a batch of which only `new` rows were written: a row conflicts
/// when a stored row holding its key (stream identity + sequence, or sender +
/// `Nats-Msg-Id`) is a different message, or when it is stored under neither key (deleted
/// in between: not stored now, so it must not be acked silently). Every other row is
/// stored, identical: written now or before (a duplicate).
fn classify(rows: &[Row], stored: &[Stored], new: u64) -> Inserted {
    let conflicts: Vec<usize> = (0..rows.len())
        .filter(|&i| {
            let row = &rows[i];
            let holders: Vec<&Stored> = stored
                .iter()
                .filter(|s| {
                    (s.stream_created, s.stream_seq) == (row.stream_created, row.stream_seq)
                        || (row.msg_id.is_some() && s.msg_id == row.msg_id && s.user == row.user)
                })
                .collect();
            holders.is_empty() || !holders.iter().all(|s| row.same_message(s))
        })
        .collect();
    let duplicates = (rows.len() - conflicts.len()) as u64 - new.min((rows.len() - conflicts.len()) as u64);
    Inserted { new, duplicates, conflicts }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64, text: &str, msg_id: Option<&str>) -> Row {
        Row {
            stream_created: OffsetDateTime::UNIX_EPOCH,
            stream_seq: seq,
            room: "general".into(),
            user: "alice".into(),
            text: text.into(),
            sent_at: OffsetDateTime::UNIX_EPOCH,
            trace_id: None,
            msg_id: msg_id.map(str::to_owned),
        }
    }

    fn stored(row: &Row) -> Stored {
        Stored {
            stream_created: row.stream_created,
            stream_seq: row.stream_seq,
            room: row.room.clone(),
            user: row.user.clone(),
            text: row.text.clone(),
            msg_id: row.msg_id.clone(),
        }
    }

    #[test]
    fn identical_rows_are_duplicates_and_different_ones_conflicts() {
        let rows =
            [row(1, "hi", Some("m1")), row(2, "new text", Some("m2")), row(3, "retry", Some("m3")), row(4, "x", None)];
        let existing = [
            stored(&rows[0]),                        // redelivery: same key, same message
            stored(&row(2, "old text", Some("m2"))), // same key, another message
            stored(&row(99, "retry", Some("m3"))),   // publisher retry stored under another sequence
        ];
        let result = classify(&rows, &existing, 0);
        assert_eq!(result.duplicates, 2, "rows 0 and 2");
        assert_eq!(result.conflicts, [1, 3], "row 3 is stored nowhere: not a silent success");
    }

    #[test]
    fn a_reused_message_id_with_other_text_is_a_conflict() {
        let rows = [row(7, "second message", Some("m1"))];
        let existing = [stored(&row(3, "first message", Some("m1")))];
        assert_eq!(classify(&rows, &existing, 0).conflicts, [0]);
    }

    #[test]
    fn rows_written_now_are_neither_duplicates_nor_conflicts() {
        let rows = [row(1, "new", Some("m1")), row(2, "again", Some("m2"))];
        let existing = [stored(&rows[0]), stored(&rows[1])];
        assert_eq!(classify(&rows, &existing, 1), Inserted { new: 1, duplicates: 1, conflicts: vec![] });
    }
}
