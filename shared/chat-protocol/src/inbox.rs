//! Reply inboxes. Every NATS user gets its own inbox prefix, so a user may subscribe to
//! its own replies and nobody else's: chat users `_INBOX.chat.<user>` (granted by the
//! auth callout), services `_INBOX.svc.<service>` (granted in `nats/nats.conf`, set by `service-kit`).
//!
//! A reply subject is chosen by the requester, so a service answers only reply subjects
//! of the chat-inbox shape ([`chat_inbox_user`]), and only the requester's own: a request
//! that names a JetStream API subject, someone's chat subject or another user's inbox as
//! its reply gets no answer (the confused-deputy attack: the service would publish there
//! with its own permissions, or flood another user's connection).

use crate::names::validate_name;

/// Inbox prefix of a chat user (the callout grants `_INBOX.chat.<user>.>`).
pub fn chat_inbox_prefix(user: &str) -> String {
    format!("_INBOX.chat.{user}")
}

/// The user whose inbox `subject` is, if it is a chat user's inbox:
/// `_INBOX.chat.<user>.<token>[.<token>]`, user a valid name, tokens of letters and digits
/// (what NATS clients generate).
pub fn chat_inbox_user(subject: &str) -> Option<&str> {
    let rest = subject.strip_prefix("_INBOX.chat.")?;
    let mut tokens = rest.split('.');
    let user = tokens.next().and_then(|user| validate_name("user", user).ok())?;
    let ids: Vec<&str> = tokens.collect();
    let ids_ok = (1..=2).contains(&ids.len())
        && ids.iter().all(|t| (1..=64).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric()));
    ids_ok.then_some(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_chat_inboxes_are_answered() {
        for (ok, user) in [
            ("_INBOX.chat.alice.AbC123", "alice"),
            ("_INBOX.chat.bob-2.Xy9.42", "bob-2"),
            (&format!("{}.n1", chat_inbox_prefix("carol")), "carol"),
        ] {
            assert_eq!(chat_inbox_user(ok), Some(user), "{ok}");
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
            assert_eq!(chat_inbox_user(bad), None, "{bad}");
        }
    }
}
