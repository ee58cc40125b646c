-- The idempotency key becomes (stream identity, stream sequence): a recreated stream
-- restarts its sequences at 1, and keyed on the sequence alone its new messages would
-- have hit old rows and been acked without being stored. The stream's identity is its
-- creation time (stream info `created`, the same on every replica). Rows stored before
-- this migration keep 1970-01-01: no live stream was created then.
ALTER TABLE chat.messages ADD COLUMN stream_created TIMESTAMPTZ NOT NULL DEFAULT 'epoch';
ALTER TABLE chat.messages ALTER COLUMN stream_created DROP DEFAULT;
ALTER TABLE chat.messages DROP CONSTRAINT messages_pkey;
ALTER TABLE chat.messages ADD PRIMARY KEY (stream_created, stream_seq);

-- A publisher that retries after its ack timed out reuses the Nats-Msg-Id; outside
-- JetStream's duplicate window (2 min) the retry is a new stream message. Stored once.
-- Only the sender's own ids can meet here: the user comes from the subject.
CREATE UNIQUE INDEX messages_user_msg_id ON chat.messages (username, msg_id) WHERE msg_id IS NOT NULL;

-- History: newest first within a room, streams in creation order.
DROP INDEX chat.messages_room_seq;
CREATE INDEX messages_room_order ON chat.messages (room, stream_created DESC, stream_seq DESC);
