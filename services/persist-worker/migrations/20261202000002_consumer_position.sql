-- Where the durable consumer stood: its ack floor (every stream sequence at or below it
-- is settled: stored, dead-lettered or terminated) per stream identity. The worker
-- records it every lag read; a consumer created again after it vanished starts just
-- after it, instead of at the start of the stream (which replayed every stored message
-- and dead-lettered every poison message a second time).
CREATE TABLE chat.consumer_position (
    stream_created TIMESTAMPTZ PRIMARY KEY,
    ack_floor      BIGINT      NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
