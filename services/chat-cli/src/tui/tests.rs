//! The TUI on ratatui's `TestBackend`: layouts, every key, a waterfall snapshot, hostile text.

use std::time::Instant;

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::app::{App, Effect, MessageRow, Prompt, View};
use super::fate::Fate;
use super::{view, waterfall};
use crate::trace::{Event, Span, tree_order};

const ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const OTHER: &str = "00f067aa0ba902b7a3ce929d0e0e4736";

fn message(user: &str, text: &str, trace_id: &str, fate: Fate) -> MessageRow {
    let now = Instant::now();
    MessageRow {
        user: user.into(),
        time: "12:00:01".into(),
        text: text.into(),
        trace_id: trace_id.into(),
        fate,
        arrived: now,
        checked: None,
    }
}

fn screen(app: &App, width: u16, height: u16) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
    terminal.draw(|frame| view::draw(frame, app)).expect("draw");
    let buffer = terminal.backend().buffer();
    (0..height).map(|y| (0..width).map(|x| buffer[(x, y)].symbol()).collect::<String>()).collect()
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn span(id: &str, parent: Option<&str>, name: &str, service: &str, start_ms: u64, end_ms: u64) -> Span {
    Span {
        span_id: id.into(),
        parent_id: parent.map(Into::into),
        name: name.into(),
        service: service.into(),
        kind: "internal".into(),
        start_ns: start_ms * 1_000_000,
        end_ns: end_ms * 1_000_000,
        error: None,
        redelivered: false,
        attributes: Vec::new(),
        events: Vec::new(),
    }
}

/// The retried message of seed 000: publish, the NATS hop, a failed attempt, the
/// redelivery with its INSERT.
fn retried_trace() -> Vec<Span> {
    let group = ("messaging.consumer.group.name".to_owned(), "persist-worker".to_owned());
    let mut first = span("a1", Some("p"), "process chat.msg.*.*", "persist-worker", 2, 6);
    first.error = Some("demo fault".into());
    first.attributes = vec![group.clone(), ("messaging.nats.delivery_count".into(), "1".into())];
    first.events = vec![Event {
        name: "nak".into(),
        at_ns: 5_000_000,
        attributes: vec![("messaging.nats.nak_delay".into(), "0.2".into())],
    }];
    let mut second = span("a2", Some("p"), "process chat.msg.*.*", "persist-worker", 10, 19);
    second.redelivered = true;
    second.attributes = vec![group, ("messaging.nats.delivery_count".into(), "2".into())];
    second.events = vec![Event { name: "ack".into(), at_ns: 18_000_000, attributes: vec![] }];
    let mut insert = span("i", Some("a2"), "INSERT chat.messages", "persist-worker", 12, 17);
    insert.attributes = vec![("db.system.name".into(), "postgresql".into())];
    vec![
        second,
        span("p", None, "publish chat.msg.*.*", "chat-cli", 0, 20),
        insert,
        span("n", Some("p"), "nats ingress chat.msg.*.*", "nats-server", 1, 2),
        first,
    ]
}

fn app_with_messages() -> App {
    let mut app = App::new("general");
    app.message_arrived(message("alice", "hello", ID, Fate::Stored { retries: 1, timeouts: 0 }));
    app.message_arrived(message("bob", "evil\u{1b}[2J\nmallory: hi", OTHER, Fate::DeadLettered { attempts: 1 }));
    app
}

#[test]
fn the_messages_view_fits_80x24_and_shows_whole_ids_at_160x48() {
    let app = app_with_messages();
    let small = screen(&app, 80, 24);
    assert!(small[0].starts_with("chat-cli tui #general  messages  traces"), "{small:#?}");
    let alice = small.iter().find(|l| l.contains("alice")).expect("alice's row");
    assert!(alice.contains("hello") && alice.contains("stored after 1 retry") && alice.contains(&ID[..8]), "{alice}");
    assert!(small[23].starts_with("q quit · T messages/traces"), "{small:#?}");
    assert!(small.iter().all(|l| l.chars().count() == 80));
    let large = screen(&app, 160, 48);
    let bob = large.iter().find(|l| l.contains("bob")).expect("bob's row");
    assert!(bob.contains(OTHER) && bob.contains("dead-lettered after 1 attempt"), "{bob}");
}

#[test]
fn another_users_control_characters_are_shown_escaped() {
    let lines = screen(&app_with_messages(), 160, 48);
    let bob = lines.iter().find(|l| l.contains("bob")).expect("bob's row");
    assert!(bob.contains(r"evil\u{1b}[2J\u{a}mallory: hi"), "{bob}");
    let mut trace = retried_trace();
    trace[0].attributes.push(("error.message".into(), "\u{1b}]0;pwned\u{7}".into()));
    let mut app = App::new("general");
    app.waterfall = Some(open(&trace));
    // publish, the NATS hop, the first attempt, then the redelivery (trace[0]).
    (0..3).for_each(|_| drop(app.on_key(key(KeyCode::Char('j')))));
    app.on_key(key(KeyCode::Char('s')));
    let details = screen(&app, 160, 48).join("\n");
    assert!(details.contains(r"error.message = \u{1b}]0;pwned\u{7}"), "{details}");
}

fn open(spans: &[Span]) -> super::app::Waterfall {
    let mut app = App::new("general");
    app.message_arrived(message("alice", "hello", ID, Fate::Pending));
    app.on_key(key(KeyCode::Enter));
    app.trace_read(ID, Ok(spans.to_vec()), Instant::now());
    app.waterfall.expect("open")
}

#[test]
fn the_waterfall_of_a_retried_message_renders_as_this_snapshot() {
    let spans = retried_trace();
    let lines: Vec<String> = waterfall::lines(&spans, &tree_order(&spans), 80)
        .iter()
        .map(|l| l.spans.iter().map(|p| p.content.as_ref()).collect())
        .collect();
    let expected = [
        "publish chat.msg.*.*             ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━    20.0ms",
        "  [nats] nats ingress chat.msg.…  ━━                                       1.0ms",
        "  ✗ process chat.msg.*.*            ━━━━━━↺━                               4.0ms",
        "  ↻ process chat.msg.*.*                           ━━━━━━━━━━━━━━━✓━       9.0ms",
        "    [db] INSERT chat.messages                          ━━━━━━━━━           5.0ms",
    ];
    assert_eq!(lines, expected);
}

#[test]
fn each_key_does_what_the_help_says() {
    let mut app = app_with_messages();
    assert_eq!(app.message_selected, 1, "the cursor follows new messages");
    assert_eq!(app.on_key(key(KeyCode::Char('k'))), None);
    assert_eq!(app.current_trace().as_deref(), Some(ID));
    assert_eq!(app.on_key(key(KeyCode::Char('t'))), Some(Effect::Copy(ID.into())));
    assert_eq!(app.on_key(key(KeyCode::Char('o'))), Some(Effect::Open(ID.into())));
    // Enter opens the waterfall; j/k move in it; s and r toggle their panes; Esc closes it.
    assert_eq!(app.on_key(key(KeyCode::Enter)), Some(Effect::LoadTrace(ID.into())));
    app.trace_read(ID, Ok(retried_trace()), Instant::now());
    app.on_key(key(KeyCode::Down));
    app.on_key(key(KeyCode::Char('j')));
    let w = app.waterfall.as_ref().expect("open");
    assert_eq!(w.selected_span().map(|s| s.span_id.as_str()), Some("a1"));
    app.on_key(key(KeyCode::Char('s')));
    let shown = screen(&app, 160, 48).join("\n");
    assert!(shown.contains("span details") && shown.contains("messaging.nats.delivery_count = 1"), "{shown}");
    assert!(shown.contains("nak messaging.nats.nak_delay=0.2"), "{shown}");
    app.on_key(key(KeyCode::Char('s')));
    app.on_key(key(KeyCode::Char('r')));
    let related = screen(&app, 80, 24).join("\n");
    assert!(related.contains("attempt 1 (delivery 1): ERROR demo fault · nak"), "{related}");
    assert!(related.contains("attempt 2 (delivery 2): ok · ack"), "{related}");
    // Late spans join the open waterfall and the cursor stays on its span.
    let mut later = retried_trace();
    later.push(span("late", Some("p"), "late", "chat-cli", 0, 1));
    app.trace_read(ID, Ok(later), Instant::now());
    let w = app.waterfall.as_ref().expect("open");
    assert_eq!((w.spans.len(), w.selected_span().map(|s| s.span_id.as_str())), (6, Some("a1")));
    assert_eq!(app.on_key(key(KeyCode::Esc)), None);
    assert!(app.waterfall.is_none());
    // T: the traces view, searched at once; the quick filters make TraceQL.
    assert_eq!(app.on_key(key(KeyCode::Char('T'))), Some(Effect::Search));
    assert_eq!(app.view, View::Traces);
    assert_eq!(app.query(), "{ }");
    app.on_key(key(KeyCode::Char('e')));
    app.on_key(key(KeyCode::Char('f')));
    app.on_key(key(KeyCode::Char('f')));
    assert_eq!(app.on_key(key(KeyCode::Char('d'))), Some(Effect::Search));
    assert_eq!(app.query(), r#"{ status = error && resource.service.name = "persist-worker" && duration > 10ms }"#);
    // `/`: the query to edit, Enter searches it.
    app.on_key(key(KeyCode::Char('/')));
    for _ in 0..200 {
        app.on_key(key(KeyCode::Backspace));
    }
    for c in "{ span.messaging.nats.delivery_count > 1 }".chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
    assert_eq!(app.on_key(key(KeyCode::Enter)), Some(Effect::Search));
    assert_eq!(app.query(), "{ span.messaging.nats.delivery_count > 1 }");
    // Ctrl+T: a bad id is refused, a good one filters both views.
    let ctrl_t = KeyEvent::new(KeyCode::Char('t'), KeyModifiers::CONTROL);
    app.on_key(ctrl_t);
    assert_eq!(app.prompt, Some(Prompt::TraceId(String::new())));
    "nope".chars().for_each(|c| drop(app.on_key(key(KeyCode::Char(c)))));
    assert_eq!(app.on_key(key(KeyCode::Enter)), None);
    assert!(app.notice.contains("not a trace id"));
    app.on_key(ctrl_t);
    OTHER.chars().for_each(|c| drop(app.on_key(key(KeyCode::Char(c)))));
    assert_eq!(app.on_key(key(KeyCode::Enter)), Some(Effect::Search));
    app.on_key(key(KeyCode::Char('T')));
    assert_eq!(app.visible_messages().iter().map(|m| m.user.as_str()).collect::<Vec<_>>(), ["bob"]);
    assert!(screen(&app, 80, 24)[0].contains(OTHER));
    // c clears every filter; q quits, and Esc with nothing open quits too.
    assert_eq!(app.on_key(key(KeyCode::Char('c'))), Some(Effect::Search));
    assert_eq!((app.visible_messages().len(), app.query().as_str()), (2, "{ }"));
    assert_eq!(app.on_key(key(KeyCode::Char('q'))), Some(Effect::Quit));
    assert_eq!(app.on_key(key(KeyCode::Esc)), Some(Effect::Quit));
}

#[test]
fn tempo_and_nats_problems_show_on_the_status_line_and_the_rest_still_draws() {
    let mut app = app_with_messages();
    app.nats_problem = Some("disconnected (reconnecting)".into());
    app.traces_found(Err("Tempo at http://127.0.0.1:9 unreachable".into()));
    let lines = screen(&app, 80, 24);
    assert!(
        lines[22].starts_with("NATS: disconnected (reconnecting) Tempo: Tempo at http://127.0.0.1:9"),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l.contains("alice")), "{lines:#?}");
}
