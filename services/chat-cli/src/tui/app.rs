//! The TUI's state and what each key does to it. Nothing here waits or draws: a key
//! changes the state and may ask the runtime for an [`Effect`] (a Tempo query, a copy,
//! a browser); what comes back from NATS and Tempo is applied with the `*_arrived`,
//! `*_read` and `*_found` methods. So every key is tested without a terminal.

use std::time::Instant;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::fate::Fate;
use super::tempo::TraceSummary;
use crate::trace::{Span, tree_order};

/// How many live messages the pane keeps (the oldest go first).
pub(crate) const MESSAGES_KEPT: usize = 500;

/// Services the `f` filter cycles through.
pub(crate) const SERVICES: [&str; 5] = ["chat-cli", "persist-worker", "history-service", "auth-service", "nats-server"];
/// Durations the `d` filter cycles through (TraceQL durations).
pub(crate) const SLOWER_THAN: [&str; 3] = ["10ms", "100ms", "1s"];

/// Which list fills the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    Messages,
    Traces,
}

/// A live message of the room.
#[derive(Debug, Clone)]
pub(crate) struct MessageRow {
    pub(crate) user: String,
    /// Local time it arrived, `HH:MM:SS`.
    pub(crate) time: String,
    pub(crate) text: String,
    pub(crate) trace_id: String,
    pub(crate) fate: Fate,
    pub(crate) arrived: Instant,
    /// When its trace was last read from Tempo.
    pub(crate) checked: Option<Instant>,
}

/// A line being typed at the bottom of the screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Prompt {
    /// `/`: a TraceQL query.
    Search(String),
    /// `Ctrl+T`: a trace id to filter by.
    TraceId(String),
}

/// An open trace.
#[derive(Debug, Clone)]
pub(crate) struct Waterfall {
    pub(crate) trace_id: String,
    pub(crate) spans: Vec<Span>,
    /// (index into `spans`, depth) in the order shown.
    pub(crate) order: Vec<(usize, usize)>,
    /// Position in `order`.
    pub(crate) selected: usize,
    /// `s`: the selected span's attributes and events.
    pub(crate) details: bool,
    /// `r`: the messages and attempts of this trace.
    pub(crate) related: bool,
    pub(crate) fetched: Option<Instant>,
}

impl Waterfall {
    fn new(trace_id: String) -> Self {
        Self {
            trace_id,
            spans: Vec::new(),
            order: Vec::new(),
            selected: 0,
            details: false,
            related: false,
            fetched: None,
        }
    }

    /// The selected span, once the trace has arrived.
    pub(crate) fn selected_span(&self) -> Option<&Span> {
        self.order.get(self.selected).map(|&(i, _)| &self.spans[i])
    }
}

/// The quick filters of the traces view (keys `e`, `f`, `d`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct QuickFilters {
    pub(crate) errors: bool,
    pub(crate) service: Option<usize>,
    pub(crate) slower: Option<usize>,
}

impl QuickFilters {
    /// The TraceQL query these filters make (`{ }` for none).
    pub(crate) fn traceql(&self) -> String {
        let mut terms = Vec::new();
        if self.errors {
            terms.push("status = error".to_owned());
        }
        if let Some(i) = self.service {
            terms.push(format!("resource.service.name = \"{}\"", SERVICES[i]));
        }
        if let Some(i) = self.slower {
            terms.push(format!("duration > {}", SLOWER_THAN[i]));
        }
        if terms.is_empty() { "{ }".to_owned() } else { format!("{{ {} }}", terms.join(" && ")) }
    }
}

/// What a key asks the runtime to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    Quit,
    /// Search Tempo again (the query or a filter changed).
    Search,
    /// Read this trace (a waterfall was opened).
    LoadTrace(String),
    /// Copy this trace id to the clipboard (OSC 52).
    Copy(String),
    /// Open this trace in Grafana.
    Open(String),
}

/// Everything on screen.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) room: String,
    pub(crate) view: View,
    pub(crate) messages: Vec<MessageRow>,
    pub(crate) message_selected: usize,
    pub(crate) traces: Vec<TraceSummary>,
    pub(crate) trace_selected: usize,
    pub(crate) filters: QuickFilters,
    /// A query typed with `/` (replaces the quick filters until cleared with `c`).
    pub(crate) typed_query: Option<String>,
    /// `Ctrl+T`: only this trace, in both views.
    pub(crate) trace_filter: Option<String>,
    pub(crate) prompt: Option<Prompt>,
    pub(crate) waterfall: Option<Waterfall>,
    /// The last action's result (copied, opened, a bad id).
    pub(crate) notice: String,
    /// `None` while Tempo answers; why not otherwise.
    pub(crate) tempo_problem: Option<String>,
    /// `None` while NATS is connected; why not otherwise.
    pub(crate) nats_problem: Option<String>,
}

impl App {
    pub(crate) fn new(room: &str) -> Self {
        Self {
            room: room.to_owned(),
            view: View::Messages,
            messages: Vec::new(),
            message_selected: 0,
            traces: Vec::new(),
            trace_selected: 0,
            filters: QuickFilters::default(),
            typed_query: None,
            trace_filter: None,
            prompt: None,
            waterfall: None,
            notice: String::new(),
            tempo_problem: None,
            nats_problem: None,
        }
    }

    /// The TraceQL query of the traces view.
    pub(crate) fn query(&self) -> String {
        self.typed_query.clone().unwrap_or_else(|| self.filters.traceql())
    }

    /// The messages shown (all, or those of the `Ctrl+T` trace).
    pub(crate) fn visible_messages(&self) -> Vec<&MessageRow> {
        let wanted = |m: &&MessageRow| self.trace_filter.as_ref().is_none_or(|id| &m.trace_id == id);
        self.messages.iter().filter(wanted).collect()
    }

    /// The trace id under the cursor: the open waterfall's, else the selected row's.
    pub(crate) fn current_trace(&self) -> Option<String> {
        if let Some(w) = &self.waterfall {
            return Some(w.trace_id.clone());
        }
        match self.view {
            View::Messages => self.visible_messages().get(self.message_selected).map(|m| m.trace_id.clone()),
            View::Traces => self.traces.get(self.trace_selected).map(|t| t.trace_id.clone()),
        }
    }

    /// A live message arrived (the newest at the bottom; the cursor follows it when it
    /// was on the last row).
    pub(crate) fn message_arrived(&mut self, row: MessageRow) {
        let following = self.message_selected + 1 >= self.visible_messages().len();
        self.messages.push(row);
        if self.messages.len() > MESSAGES_KEPT {
            self.messages.remove(0);
        }
        let shown = self.visible_messages().len();
        if following || self.message_selected >= shown {
            self.message_selected = shown.saturating_sub(1);
        }
    }

    /// A message's trace was read: its fate.
    pub(crate) fn fate_read(&mut self, trace_id: &str, fate: Fate, at: Instant) {
        for row in self.messages.iter_mut().filter(|m| m.trace_id == trace_id) {
            row.fate = fate;
            row.checked = Some(at);
        }
        self.tempo_problem = None;
    }

    /// The traces view's search answered.
    pub(crate) fn traces_found(&mut self, result: Result<Vec<TraceSummary>, String>) {
        match result {
            Ok(traces) => {
                let selected = self.traces.get(self.trace_selected).map(|t| t.trace_id.clone());
                self.traces = traces;
                self.trace_selected =
                    selected.and_then(|id| self.traces.iter().position(|t| t.trace_id == id)).unwrap_or(0);
                self.tempo_problem = None;
            }
            Err(problem) => self.tempo_problem = Some(problem),
        }
    }

    /// The open trace was read (again: late spans join it, the cursor stays on its span).
    pub(crate) fn trace_read(&mut self, trace_id: &str, result: Result<Vec<Span>, String>, at: Instant) {
        let Some(w) = self.waterfall.as_mut().filter(|w| w.trace_id == trace_id) else { return };
        w.fetched = Some(at);
        match result {
            Ok(spans) => {
                let selected = w.selected_span().map(|s| s.span_id.clone());
                w.order = tree_order(&spans);
                w.spans = spans;
                w.selected =
                    selected.and_then(|id| w.order.iter().position(|&(i, _)| w.spans[i].span_id == id)).unwrap_or(0);
                self.tempo_problem = None;
            }
            Err(problem) => self.tempo_problem = Some(problem),
        }
    }

    /// Applies one key.
    pub(crate) fn on_key(&mut self, key: KeyEvent) -> Option<Effect> {
        if let Some(prompt) = self.prompt.take() {
            return self.on_prompt_key(prompt, key);
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('c') if ctrl => Some(Effect::Quit),
            KeyCode::Char('t') if ctrl => {
                self.prompt = Some(Prompt::TraceId(String::new()));
                None
            }
            KeyCode::Char('q') => Some(Effect::Quit),
            KeyCode::Esc => {
                if self.waterfall.take().is_some() {
                    None
                } else {
                    Some(Effect::Quit)
                }
            }
            KeyCode::Char('T') => {
                self.waterfall = None;
                self.view = if self.view == View::Messages { View::Traces } else { View::Messages };
                (self.view == View::Traces).then_some(Effect::Search)
            }
            KeyCode::Char('j') | KeyCode::Down => {
                self.move_cursor(1);
                None
            }
            KeyCode::Char('k') | KeyCode::Up => {
                self.move_cursor(-1);
                None
            }
            KeyCode::Enter => {
                let id = self.current_trace()?;
                self.waterfall = Some(Waterfall::new(id.clone()));
                Some(Effect::LoadTrace(id))
            }
            KeyCode::Char('s') => {
                let w = self.waterfall.as_mut()?;
                w.details = !w.details;
                None
            }
            KeyCode::Char('r') => {
                if let Some(w) = self.waterfall.as_mut() {
                    w.related = !w.related;
                    return None;
                }
                let id = self.current_trace()?;
                self.waterfall = Some(Waterfall { related: true, ..Waterfall::new(id.clone()) });
                Some(Effect::LoadTrace(id))
            }
            KeyCode::Char('t') => self.current_trace().map(Effect::Copy),
            KeyCode::Char('o') => self.current_trace().map(Effect::Open),
            KeyCode::Char('/') => {
                self.prompt = Some(Prompt::Search(self.query()));
                None
            }
            KeyCode::Char('e') => self.refilter(|f| f.errors = !f.errors),
            KeyCode::Char('f') => self.refilter(|f| f.service = cycle(f.service, SERVICES.len())),
            KeyCode::Char('d') => self.refilter(|f| f.slower = cycle(f.slower, SLOWER_THAN.len())),
            KeyCode::Char('c') => {
                (self.typed_query, self.trace_filter, self.filters) = (None, None, QuickFilters::default());
                self.message_selected = self.visible_messages().len().saturating_sub(1);
                self.notice = "filters cleared".to_owned();
                Some(Effect::Search)
            }
            _ => None,
        }
    }

    fn on_prompt_key(&mut self, mut prompt: Prompt, key: KeyEvent) -> Option<Effect> {
        let text = match &mut prompt {
            Prompt::Search(text) | Prompt::TraceId(text) => text,
        };
        match key.code {
            KeyCode::Esc => None,
            KeyCode::Backspace => {
                text.pop();
                self.prompt = Some(prompt);
                None
            }
            KeyCode::Char(c) if !c.is_control() && text.len() < 512 => {
                text.push(c);
                self.prompt = Some(prompt);
                None
            }
            KeyCode::Enter => match prompt {
                Prompt::Search(query) => {
                    self.typed_query = Some(query.trim().to_owned()).filter(|q| !q.is_empty());
                    self.view = View::Traces;
                    self.waterfall = None;
                    Some(Effect::Search)
                }
                Prompt::TraceId(id) => {
                    let id = id.trim().to_ascii_lowercase();
                    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                        self.notice = "not a trace id (32 hex characters)".to_owned();
                        return None;
                    }
                    self.trace_filter = Some(id);
                    self.message_selected = 0;
                    self.trace_selected = 0;
                    self.waterfall = None;
                    Some(Effect::Search)
                }
            },
            _ => {
                self.prompt = Some(prompt);
                None
            }
        }
    }

    fn refilter(&mut self, change: impl FnOnce(&mut QuickFilters)) -> Option<Effect> {
        change(&mut self.filters);
        self.typed_query = None;
        self.view = View::Traces;
        self.waterfall = None;
        Some(Effect::Search)
    }

    fn move_cursor(&mut self, by: isize) {
        let step = |at: usize, len: usize| at.saturating_add_signed(by).min(len.saturating_sub(1));
        if let Some(w) = self.waterfall.as_mut() {
            w.selected = step(w.selected, w.order.len());
            return;
        }
        match self.view {
            View::Messages => self.message_selected = step(self.message_selected, self.visible_messages().len()),
            View::Traces => self.trace_selected = step(self.trace_selected, self.traces.len()),
        }
    }
}

/// None -> 0 -> 1 -> ... -> len-1 -> None.
fn cycle(at: Option<usize>, len: usize) -> Option<usize> {
    match at {
        None => Some(0),
        Some(i) if i + 1 < len => Some(i + 1),
        Some(_) => None,
    }
}
