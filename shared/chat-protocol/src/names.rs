//! Room and user names (`[a-z0-9_-]{1,64}`) and the subjects built from them.

/// A room or user name that breaks the rule, with a message fit for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    /// A name outside `[a-z0-9_-]{1,64}`.
    #[error("invalid {kind} name: use 1 to 64 characters from a-z, 0-9, '_' and '-'")]
    Name {
        /// `room` or `user`.
        kind: &'static str,
    },
    /// A subject that does not have the expected shape.
    #[error("subject does not match {template}")]
    Subject {
        /// The expected template.
        template: &'static str,
    },
}

/// Checks a room or user name; `kind` names it in the error.
pub fn validate_name<'a>(kind: &'static str, name: &'a str) -> Result<&'a str, InvalidName> {
    let valid =
        (1..=64).contains(&name.len()) && name.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
    valid.then_some(name).ok_or(InvalidName::Name { kind })
}

/// `chat.msg.<room>.<user>`.
pub fn message_subject(room: &str, user: &str) -> Result<String, InvalidName> {
    Ok(format!("chat.msg.{}.{}", validate_name("room", room)?, validate_name("user", user)?))
}

/// `(room, user)` of a `chat.msg.<room>.<user>` subject, both validated.
pub fn parse_message_subject(subject: &str) -> Result<(&str, &str), InvalidName> {
    room_and_user(subject, "chat.msg.", crate::MESSAGE_TEMPLATE)
}

/// `(room, user)` of `<prefix><room>.<user>`, both validated (`template` names the shape).
fn room_and_user<'a>(
    subject: &'a str,
    prefix: &str,
    template: &'static str,
) -> Result<(&'a str, &'a str), InvalidName> {
    let shape = InvalidName::Subject { template };
    let (room, user) = subject.strip_prefix(prefix).and_then(|rest| rest.split_once('.')).ok_or(shape)?;
    Ok((validate_name("room", room)?, validate_name("user", user)?))
}

/// `chat.history.<room>.<user>`: the requester's name is part of the subject (the callout
/// lets a user request only with its own), so history-service knows whom it answers.
pub fn history_subject(room: &str, user: &str) -> Result<String, InvalidName> {
    Ok(format!("chat.history.{}.{}", validate_name("room", room)?, validate_name("user", user)?))
}

/// `(room, user)` of a `chat.history.<room>.<user>` subject, both validated.
pub fn parse_history_subject(subject: &str) -> Result<(&str, &str), InvalidName> {
    room_and_user(subject, "chat.history.", crate::HISTORY_TEMPLATE)
}

/// The requester of a `chat.history.<room>.<user>` subject (its last token, validated),
/// whether or not the room is valid: a request for a bad room still gets its answer.
pub fn history_requester(subject: &str) -> Option<&str> {
    let (_, user) = subject.strip_prefix("chat.history.")?.rsplit_once('.')?;
    validate_name("user", user).ok()
}

/// `chat.dlq.<room>`; a message whose room is invalid goes to `chat.dlq.invalid`.
pub fn dlq_subject(room: Option<&str>) -> String {
    let room = room.and_then(|r| validate_name("room", r).ok()).unwrap_or("invalid");
    format!("chat.dlq.{room}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        for ok in ["general", "a", "room_1", "x-y", &"a".repeat(64)] {
            assert_eq!(validate_name("room", ok), Ok(ok));
        }
        for bad in ["", "General", "a.b", "a b", "a*", ">", "é", &"a".repeat(65), "a\r\n"] {
            assert!(validate_name("room", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn message_subjects_round_trip() {
        let subject = message_subject("general", "alice").expect("valid");
        assert_eq!(subject, "chat.msg.general.alice");
        assert_eq!(parse_message_subject(&subject), Ok(("general", "alice")));
        assert!(parse_message_subject("chat.msg.general").is_err());
        assert!(parse_message_subject("chat.msg.general.alice.extra").is_err());
        assert!(parse_message_subject("chat.msg.GENERAL.alice").is_err());
        assert!(message_subject("general", "*").is_err());
    }

    #[test]
    fn history_and_dlq_subjects() {
        assert_eq!(history_subject("general", "carol").as_deref(), Ok("chat.history.general.carol"));
        assert_eq!(parse_history_subject("chat.history.general.carol"), Ok(("general", "carol")));
        assert!(parse_history_subject("chat.history.general").is_err());
        assert!(parse_history_subject("chat.history.Bad!.carol").is_err());
        assert!(parse_history_subject("chat.history.general.carol.x").is_err());
        assert_eq!(history_requester("chat.history.Bad!.carol"), Some("carol"));
        assert_eq!(history_requester("chat.history.general"), None);
        assert_eq!(history_requester("chat.history.general.Carol"), None);
        assert_eq!(dlq_subject(Some("general")), "chat.dlq.general");
        assert_eq!(dlq_subject(Some("Bad.Room")), "chat.dlq.invalid");
    }
}
