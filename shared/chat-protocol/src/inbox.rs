//! Reply inboxes. Every NATS user gets its own inbox prefix, so a user may subscribe to
//! its own replies and nobody else's: chat users `_INBOX.chat.<user>` (granted by the
//! auth callout), services `_INBOX.svc.<service>` (granted in `nats/nats.conf`, set by `service-kit`).
//!
//! A reply subject is chosen by the requester, so a service answers only reply subjects
//! of the chat-inbox shape ([`is_chat_inbox`]): a request that names a JetStream API
//! subject or someone's chat subject as its reply gets no answer (the confused-deputy
//! attack: the service would publish there with its own permissions).

use crate::names::validate_name;

/// Inbox prefix of a chat user (the callout grants `_INBOX.chat.<user>.>`).
pub fn chat_inbox_prefix(user: &str) -> String {
    format!("_INBOX.chat.{user}")
}

/// Whether `subject` is a chat user's inbox: `_INBOX.chat.<user>.<token>[.<token>]`,
/// user a valid name, tokens of letters and digits (what NATS clients generate).
pub fn is_chat_inbox(subject: &str) -> bool {
    let Some(rest) = subject.strip_prefix("_INBOX.chat.") else { return false };
    let mut tokens = rest.split('.');
    let user_ok = tokens.next().is_some_and(|user| validate_name("user", user).is_ok());
    let ids: Vec<&str> = tokens.collect();
    user_ok
        && (1..=2).contains(&ids.len())
        && ids.iter().all(|t| (1..=64).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_chat_inboxes_are_answered() {
        for ok in
            ["_INBOX.chat.alice.AbC123", "_INBOX.chat.bob-2.Xy9.42", &format!("{}.n1", chat_inbox_prefix("carol"))]
        {
            assert!(is_chat_inbox(ok), "{ok}");
        }
        for bad in [
            "$JS.API.STREAM.DELETE.CHAT",
            "$JS.API.CONSUMER.DELETE.CHAT.persist-worker",
            "chat.msg.general.bob",
            "_INBOX.x",
            "_INBOX.chat.alice",
            "_INBOX.chat.alice.",
            "_INBOX.chat.Alice.x",
            "_INBOX.chat.alice.*",
            "_INBOX.chat.alice.>",
            "_INBOX.chat.alice.a.b.c",
            "_INBOX.svc.persist-worker.x",
            "_INBOX.chat.alice.a b",
            "",
        ] {
            assert!(!is_chat_inbox(bad), "{bad}");
        }
    }
}
