//! Drawing the [`App`]: a title line, the messages or traces list (or an open trace's
//! waterfall with its details and related panes), a status line saying what is wrong
//! with Tempo or NATS, and the keys. Usable from 80x24; side panes go below the
//! waterfall when the screen is narrower than 120 columns.

use ratatui::Frame;
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span as Piece};
use ratatui::widgets::{Block, Borders, List, ListState, Paragraph, Wrap};

use super::app::{App, Prompt, View, Waterfall};
use super::fate::{self, Fate};
use super::waterfall::{self, fit};
use crate::output::printable;

const KEYS: &str = "q quit · T messages/traces · j/k move · Enter waterfall · s span · r related · t copy id · o open · / TraceQL · ^T trace id · e/f/d filters · c clear";

/// Draws everything.
pub(crate) fn draw(frame: &mut Frame<'_>, app: &App) {
    let [title, body, status, keys] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(3), Constraint::Length(1), Constraint::Length(1)])
            .areas(frame.area());
    frame.render_widget(Paragraph::new(title_line(app)), title);
    match &app.waterfall {
        Some(w) => draw_waterfall(frame, app, w, body),
        None if app.view == View::Messages => draw_messages(frame, app, body),
        None => draw_traces(frame, app, body),
    }
    frame.render_widget(Paragraph::new(status_line(app)), status);
    frame.render_widget(Paragraph::new(KEYS).style(Style::default().fg(Color::DarkGray)), keys);
}

fn title_line(app: &App) -> Line<'static> {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut pieces = vec![Piece::styled(format!("chat-cli tui #{} ", app.room), bold)];
    for (view, name) in [(View::Messages, "messages"), (View::Traces, "traces")] {
        let style = if app.view == view { bold.add_modifier(Modifier::REVERSED) } else { Style::default() };
        pieces.push(Piece::styled(format!(" {name} "), style));
    }
    if let Some(id) = &app.trace_filter {
        pieces.push(Piece::styled(format!(" trace {id}"), Style::default().fg(Color::Yellow)));
    }
    if app.view == View::Traces && app.trace_filter.is_none() {
        pieces.push(Piece::raw(format!(" {}", printable(&app.query()))));
    }
    Line::from(pieces)
}

fn status_line(app: &App) -> Line<'static> {
    if let Some(prompt) = &app.prompt {
        let (label, text) = match prompt {
            Prompt::Search(text) => ("TraceQL", text),
            Prompt::TraceId(text) => ("trace id", text),
        };
        return Line::from(format!("{label}> {}█", printable(text)));
    }
    let red = Style::default().fg(Color::Red);
    let mut pieces = Vec::new();
    if let Some(problem) = &app.nats_problem {
        pieces.push(Piece::styled(format!("NATS: {} ", printable(problem)), red));
    }
    if let Some(problem) = &app.tempo_problem {
        pieces.push(Piece::styled(format!("Tempo: {} ", printable(problem)), red));
    }
    pieces.push(Piece::raw(printable(&app.notice).into_owned()));
    Line::from(pieces)
}

fn draw_messages(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let messages = app.visible_messages();
    let width = usize::from(area.width.saturating_sub(2));
    let id_width = if width >= 120 { 32 } else { 8 };
    let fate_width = 34;
    let text_width = width.saturating_sub(9 + 11 + fate_width + id_width + 3).max(8);
    let items: Vec<Line<'static>> = messages
        .iter()
        .map(|m| {
            Line::from(vec![
                Piece::styled(format!("{} ", m.time), Style::default().fg(Color::DarkGray)),
                Piece::styled(format!("{} ", fit(&printable(&m.user), 10)), Style::default().fg(Color::Cyan)),
                Piece::raw(format!("{} ", fit(&printable(&m.text), text_width))),
                Piece::styled(format!("{} ", fit(&m.fate.to_string(), fate_width)), fate_style(m.fate)),
                Piece::styled(
                    m.trace_id.get(..id_width).unwrap_or(&m.trace_id).to_owned(),
                    Style::default().fg(Color::DarkGray),
                ),
            ])
        })
        .collect();
    let empty = app.nats_problem.as_ref().map_or("waiting for messages…", |_| "not connected to NATS");
    let title = format!("messages ({}) · time (UTC), user, text, fate, trace id", messages.len());
    list(frame, area, title, items, app.message_selected, empty);
}

fn fate_style(fate: Fate) -> Style {
    Style::default().fg(match fate {
        Fate::Pending => Color::DarkGray,
        Fate::Stored { retries: 0, .. } => Color::Green,
        Fate::Stored { .. } | Fate::Retrying { .. } => Color::Yellow,
        Fate::TimedOut { .. } | Fate::DeadLettered { .. } => Color::Red,
    })
}

fn draw_traces(frame: &mut Frame<'_>, app: &App, area: Rect) {
    let width = usize::from(area.width.saturating_sub(2));
    let name_width = width.saturating_sub(9 + 17 + 10 + 33 + 2).max(8);
    let items: Vec<Line<'static>> = app
        .traces
        .iter()
        .map(|t| {
            Line::from(vec![
                Piece::styled(format!("{} ", utc_time(t.start_unix_ns)), Style::default().fg(Color::DarkGray)),
                Piece::styled(format!("{} ", fit(&printable(&t.root_service), 16)), Style::default().fg(Color::Cyan)),
                Piece::raw(format!("{} ", fit(&printable(&t.root_name), name_width))),
                Piece::raw(format!("{:>7}ms ", t.duration_ms)),
                Piece::styled(t.trace_id.clone(), Style::default().fg(Color::DarkGray)),
            ])
        })
        .collect();
    let title = format!("traces ({}) · start (UTC), root service, root span, duration, trace id", app.traces.len());
    list(frame, area, title, items, app.trace_selected, "no trace matches (yet)");
}

fn draw_waterfall(frame: &mut Frame<'_>, app: &App, w: &Waterfall, area: Rect) {
    let side = w.details || w.related;
    let direction = if area.width >= 120 { Direction::Horizontal } else { Direction::Vertical };
    let [main, pane] = if side {
        Layout::default()
            .direction(direction)
            .constraints([Constraint::Percentage(60), Constraint::Percentage(40)])
            .areas(area)
    } else {
        [area, Rect::default()]
    };
    let total = w.spans.iter().map(|s| s.end_ns).max().unwrap_or_default()
        - w.spans.iter().map(|s| s.start_ns).min().unwrap_or_default();
    let title = format!("trace {} · {} spans · {} · live", w.trace_id, w.spans.len(), crate::trace::millis(total));
    let rows = waterfall::lines(&w.spans, &w.order, main.width.saturating_sub(2));
    list(frame, main, title, rows, w.selected, "waiting for the trace in Tempo…");
    if !side {
        return;
    }
    let (title, lines) = match (w.details, w.selected_span()) {
        (true, Some(span)) => ("span details", waterfall::details(&w.spans, span)),
        (true, None) => ("span details", Vec::new()),
        (false, _) => ("related: this trace's messages and attempts", related(app, w)),
    };
    let block = Block::default().borders(Borders::ALL).title(title);
    frame.render_widget(Paragraph::new(lines).block(block).wrap(Wrap { trim: false }), pane);
}

/// The other messages and attempts in the open trace: the messages the pane saw with its
/// id, each consumer attempt (delivery, outcome, settlement) and the dead letter.
pub(crate) fn related(app: &App, w: &Waterfall) -> Vec<Line<'static>> {
    let mut lines: Vec<Line<'static>> = app
        .messages
        .iter()
        .filter(|m| m.trace_id == w.trace_id)
        .map(|m| Line::from(format!("message {} {}: {} — {}", m.time, printable(&m.user), printable(&m.text), m.fate)))
        .collect();
    let mut attempts: Vec<_> = w.spans.iter().filter(|s| fate::is_attempt(s)).collect();
    attempts.sort_by_key(|s| s.start_ns);
    for (n, attempt) in attempts.iter().enumerate() {
        let delivery = attempt.attribute("messaging.nats.delivery_count").unwrap_or("?");
        let outcome = attempt.error.as_deref().map_or("ok".to_owned(), |e| format!("ERROR {}", printable(e)));
        let settled: Vec<&str> = attempt.events.iter().map(|e| e.name.as_str()).filter(|n| *n != "exception").collect();
        let style = if attempt.error.is_some() { Style::default().fg(Color::Red) } else { Style::default() };
        let text = format!("attempt {} (delivery {delivery}): {outcome} · {}", n + 1, settled.join(", "));
        lines.push(Line::styled(text, style));
    }
    for dead in w.spans.iter().filter(|s| s.name.starts_with("publish chat.dlq.")) {
        let subject = dead.attribute("messaging.destination.name").unwrap_or(&dead.name);
        lines.push(Line::styled(format!("dead letter → {}", printable(subject)), Style::default().fg(Color::Red)));
    }
    if lines.is_empty() {
        lines.push(Line::from("no message or consumer attempt in this trace"));
    }
    lines
}

/// A bordered list with `selected` highlighted and kept in view.
fn list(frame: &mut Frame<'_>, area: Rect, title: String, items: Vec<Line<'static>>, selected: usize, empty: &str) {
    let block = Block::default().borders(Borders::ALL).title(title);
    if items.is_empty() {
        frame.render_widget(Paragraph::new(empty.to_owned()).block(block), area);
        return;
    }
    let list = List::new(items).block(block).highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut state = ListState::default().with_selected(Some(selected));
    frame.render_stateful_widget(list, area, &mut state);
}

/// `HH:MM:SS` (UTC) of a Unix time in nanoseconds.
pub(crate) fn utc_time(unix_ns: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(unix_ns);
    humantime::format_rfc3339_seconds(time).to_string()[11..19].to_owned()
}
