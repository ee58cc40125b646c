//! The hostile-user suite: chat users (through the real auth callout) and the service
//! users, against a real nats-server running the project's `nats/nats.conf`, the real
//! services and PostgreSQL. Each test is an attack that once worked (issue 15) or a
//! failure the services must survive without losing a message:
//!
//! - `grants`: every user and role held to its grant, inbox snooping, reply-subject
//!   attacks on everything that answers requests;
//! - `poison`: oversize and header-laden poison, wildcard tokens, a key taken by another
//!   message, a dead letter that cannot be written;
//! - `lifetimes`: a stream recreated under the worker, a consumer deleted under load;
//! - `dedup`: message ids nobody can predict, a taken id reported and not sent;
//! - `headers`: header blocks and subjects the NATS client cannot read (raw protocol);
//! - `tokens`: a large token, a token that never expires;
//! - `hygiene`: terminal control sequences, credentials in a URL, demo faults off by
//!   default.

mod app;
mod dedup;
mod grants;
mod headers;
mod hygiene;
mod lifetimes;
mod poison;
mod raw;
mod tokens;
