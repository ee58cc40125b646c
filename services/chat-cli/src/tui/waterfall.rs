//! A trace as a waterfall: one row per span in tree order ([`crate::trace::tree_order`]), indented by
//! parent, a bar to scale by start and duration, coloured by service, and the span's
//! events as ticks on its bar (`✓` ack, `↺` nak, `✗` term, `!` exception, `·` others).
//! The NATS hop (the `nats-server` service) is tagged `[nats]`, database spans (a
//! `db.system.name`) `[db]`; failed spans are red with `✗`, redeliveries marked `↻`.
//! Every text from the trace goes through [`printable`]: span names, attributes and
//! error messages can carry another user's input.

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span as Piece};

use crate::output::printable;
use crate::trace::{Span, millis};

/// Colours given to services in order of first appearance.
const PALETTE: [Color; 6] = [Color::Cyan, Color::Green, Color::Yellow, Color::Magenta, Color::Blue, Color::LightRed];

/// The rows of the waterfall `width` columns wide, in `order` ([`crate::trace::tree_order`]'s).
pub(crate) fn lines(spans: &[Span], order: &[(usize, usize)], width: u16) -> Vec<Line<'static>> {
    let width = usize::from(width).max(40);
    let label_width = (width * 2 / 5).min(48);
    let duration_width = 9;
    let bar_width = width - label_width - duration_width - 2;
    let origin = spans.iter().map(|s| s.start_ns).min().unwrap_or_default();
    let end = spans.iter().map(|s| s.end_ns).max().unwrap_or_default();
    let total = end.saturating_sub(origin).max(1);
    let column = |ns: u64| (ns.saturating_sub(origin) as u128 * bar_width as u128 / total as u128) as usize;
    let mut services: Vec<&str> = Vec::new();
    for &(i, _) in order {
        if !services.contains(&spans[i].service.as_str()) {
            services.push(&spans[i].service);
        }
    }
    let colour = |service: &str| PALETTE[services.iter().position(|s| *s == service).unwrap_or(0) % PALETTE.len()];

    order
        .iter()
        .map(|&(i, depth)| {
            let span = &spans[i];
            let mut label = "  ".repeat(depth.min(8));
            label.push_str(if span.error.is_some() {
                "✗ "
            } else if span.redelivered {
                "↻ "
            } else {
                ""
            });
            label.push_str(tag(span));
            label.push_str(&printable(&span.name));
            let label = fit(&label, label_width);
            let (from, to) = (column(span.start_ns), column(span.end_ns).max(column(span.start_ns) + 1));
            let mut bar: Vec<char> = (0..bar_width).map(|c| if (from..to).contains(&c) { '━' } else { ' ' }).collect();
            for event in &span.events {
                let at = column(event.at_ns).min(bar_width - 1);
                bar[at] = tick(&event.name);
            }
            let bar: String = bar.into_iter().collect();
            let bar_style = if span.error.is_some() { Color::Red } else { colour(&span.service) };
            Line::from(vec![
                Piece::styled(label, Style::default().fg(colour(&span.service))),
                Piece::raw(" "),
                Piece::styled(bar, Style::default().fg(bar_style)),
                Piece::raw(format!(" {:>duration_width$}", millis(span.end_ns.saturating_sub(span.start_ns)))),
            ])
        })
        .collect()
}

/// `[nats] ` for the NATS hop, `[db] ` for a database span.
fn tag(span: &Span) -> &'static str {
    if span.service == "nats-server" {
        "[nats] "
    } else if span.attribute("db.system.name").is_some() {
        "[db] "
    } else {
        ""
    }
}

fn tick(event: &str) -> char {
    match event {
        "ack" => '✓',
        "nak" => '↺',
        "term" => '✗',
        "exception" => '!',
        _ => '·',
    }
}

/// `text` cut or padded to exactly `width` characters (`…` where cut).
pub(crate) fn fit(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        format!("{text}{}", " ".repeat(width - count))
    } else {
        let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// The selected span's details: identity, timing, status, every attribute and event.
pub(crate) fn details(spans: &[Span], span: &Span) -> Vec<Line<'static>> {
    let origin = spans.iter().map(|s| s.start_ns).min().unwrap_or_default();
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut lines = vec![
        Line::styled(printable(&span.name).into_owned(), bold),
        Line::raw(format!("service {}  kind {}", printable(&span.service), span.kind)),
        Line::raw(format!("span {}  parent {}", span.span_id, span.parent_id.as_deref().unwrap_or("-"))),
        Line::raw(format!(
            "start +{}  duration {}",
            millis(span.start_ns.saturating_sub(origin)),
            millis(span.end_ns.saturating_sub(span.start_ns))
        )),
    ];
    match &span.error {
        Some(message) => {
            lines.push(Line::styled(format!("status ERROR {}", printable(message)), Style::default().fg(Color::Red)))
        }
        None => lines.push(Line::raw("status ok")),
    }
    lines.push(Line::styled("attributes", bold));
    for (key, value) in &span.attributes {
        lines.push(Line::raw(format!("  {} = {}", printable(key), printable(value))));
    }
    lines.push(Line::styled("events", bold));
    for event in &span.events {
        let attributes: Vec<String> =
            event.attributes.iter().map(|(k, v)| format!("{}={}", printable(k), printable(v))).collect();
        let at = millis(event.at_ns.saturating_sub(origin));
        lines.push(Line::raw(format!("  +{at} {} {}", printable(&event.name), attributes.join(" "))));
    }
    lines
}
