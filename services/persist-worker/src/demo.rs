//! The demo faults (`DEMO_FAULTS=true`, as `make demo` runs the worker): a chat message
//! may ask to fail once, to outlast the processing deadline, to be poison, or to crash
//! the worker after its commit, so that each fate of the [table](crate::fate) shows in
//! Grafana. Off by default: then a message's `demo_fault` is ignored, and no chat user
//! can make the worker misbehave.

use std::time::Duration;

use chat_protocol::DemoFault;

use crate::fate::Found;

/// Acts out `fault` before the message is stored: poison and fail-once (first delivery)
/// stop it with what they stand for; slow (first delivery) works past `deadline`.
pub(crate) async fn before_store(
    fault: Option<DemoFault>,
    first_delivery: bool,
    deadline: Duration,
) -> Result<(), Found> {
    match fault {
        Some(DemoFault::Poison) => Err(Found::Poison("demo_poison")),
        Some(DemoFault::FailOnce) if first_delivery => Err(Found::Transient("injected_failure")),
        Some(DemoFault::Slow) if first_delivery => {
            tracing::info!("demo fault: working past the processing deadline");
            tokio::time::sleep(deadline * 2).await;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Whether the worker aborts after committing this message, before acking it (first
/// delivery only): the redelivery must not store it twice.
pub(crate) fn crashes_after_commit(fault: Option<DemoFault>, first_delivery: bool) -> bool {
    first_delivery && fault == Some(DemoFault::CrashAfterCommit)
}

/// The crash: the process ends at once, acks unsent.
pub(crate) fn crash() -> ! {
    tracing::warn!("demo fault: aborting after commit, before ack");
    std::process::abort()
}
