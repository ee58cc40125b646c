//! What `cargo bench -p chat-cli --bench tui` draws: the waterfall of a made-up trace of
//! any size (a publish, then consumer attempts with their events and INSERTs under it),
//! with the details pane open, on ratatui's `TestBackend`. Not part of the CLI's interface.

use std::time::Instant;

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::app::{App, MessageRow};
use super::fate::Fate;
use super::view;
use crate::trace::{Event, Span};

/// A closure that draws one frame of a `spans`-span waterfall at `width`x`height` (the
/// cursor moves a row each frame, so every frame differs); it returns a cell count so
/// the work cannot be optimised away.
pub fn waterfall_frame(spans: usize, width: u16, height: u16) -> impl FnMut() -> usize {
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut app = App::new("general");
    let now = Instant::now();
    let row = MessageRow {
        user: "alice".into(),
        time: "12:00:00".into(),
        text: "hello".into(),
        trace_id: trace_id.into(),
        fate: Fate::Pending,
        arrived: now,
        checked: None,
    };
    app.message_arrived(row);
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    app.trace_read(trace_id, Ok(made_up_trace(spans)), now);
    app.on_key(KeyEvent::new(KeyCode::Char('s'), KeyModifiers::NONE));
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("a test terminal never fails");
    let mut frame = 0usize;
    move || {
        frame += 1;
        app.on_key(KeyEvent::new(KeyCode::Char(if frame % 400 < 200 { 'j' } else { 'k' }), KeyModifiers::NONE));
        terminal.draw(|f| view::draw(f, &app)).expect("a test terminal never fails");
        terminal.backend().buffer().content.len()
    }
}

/// One publish and `n - 1` spans under it: attempts (every third failed, with a nak and
/// an exception) each with an INSERT child.
fn made_up_trace(n: usize) -> Vec<Span> {
    let ms = 1_000_000;
    let span = |i: usize, parent: Option<String>, name: &str, service: &str, start: u64| Span {
        span_id: format!("{i:016x}"),
        parent_id: parent,
        name: name.to_owned(),
        service: service.to_owned(),
        kind: "consumer".to_owned(),
        start_ns: start,
        end_ns: start + 3 * ms,
        error: (i % 3 == 1).then(|| "demo fault".to_owned()),
        redelivered: i % 3 == 2,
        attributes: vec![
            ("messaging.destination.name".to_owned(), "chat.msg.general.alice".to_owned()),
            ("messaging.nats.delivery_count".to_owned(), (i % 3 + 1).to_string()),
        ],
        events: vec![Event {
            name: ["ack", "nak", "term"][i % 3].to_owned(),
            at_ns: start + 2 * ms,
            attributes: vec![],
        }],
    };
    let mut spans = vec![span(0, None, "publish chat.msg.*.*", "chat-cli", 0)];
    let mut i = 1;
    while i < n {
        let start = i as u64 * ms;
        spans.push(span(i, Some(format!("{:016x}", 0)), "process chat.msg.*.*", "persist-worker", start));
        if i + 1 < n {
            spans.push(span(i + 1, Some(format!("{i:016x}")), "INSERT chat.messages", "persist-worker", start + ms));
        }
        i += 2;
    }
    spans
}
