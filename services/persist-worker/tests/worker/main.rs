//! persist-worker against a real nats-server 2.12 and PostgreSQL, driven by the real
//! chat-cli, with every span, log and metric read back from the OTLP receiver.

mod durability;
mod helpers;
mod pipeline_health;
mod scenarios;
