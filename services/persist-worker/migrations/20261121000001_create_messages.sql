-- Chat messages, one row per JetStream stream sequence (the idempotency key: a
-- redelivered message hits ON CONFLICT and is not stored twice).
CREATE SCHEMA IF NOT EXISTS chat;

CREATE TABLE IF NOT EXISTS chat.messages (
    stream_seq   BIGINT      PRIMARY KEY,
    room         TEXT        NOT NULL,
    username     TEXT        NOT NULL,   -- from the subject, never from the payload
    text         TEXT        NOT NULL,
    sent_at      TIMESTAMPTZ NOT NULL,
    persisted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    trace_id     TEXT,                   -- 32 hex chars: the trace the message was published in
    msg_id       TEXT                    -- Nats-Msg-Id, when the publisher set one
);

-- History reads the newest messages of a room.
CREATE INDEX IF NOT EXISTS messages_room_seq ON chat.messages (room, stream_seq DESC);
