//! A chat message as the worker decodes it, and the subjects it is published on.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = chat_protocol::ChatMessage::decode(data) {
        let chars = message.text.chars().count();
        assert!((1..=chat_protocol::MAX_TEXT_CHARS).contains(&chars) && !message.text.contains('\0'));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok((room, user)) = chat_protocol::parse_message_subject(text) {
            assert_eq!(chat_protocol::message_subject(room, user).as_deref(), Ok(text));
        }
        if let Ok((room, user)) = chat_protocol::parse_history_subject(text) {
            assert_eq!(chat_protocol::history_subject(room, user).as_deref(), Ok(text));
            assert_eq!(chat_protocol::history_requester(text), Some(user));
        }
        if let Some(user) = chat_protocol::chat_inbox_user(text) {
            assert!(text.starts_with(&chat_protocol::chat_inbox_prefix(user)));
        }
    }
});
