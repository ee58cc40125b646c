//! `chat-cli tui`: seed 001's terminal trace explorer. A room's live messages with the
//! fate their traces tell, recent traces from Tempo (TraceQL), a live waterfall, and the
//! trace actions — all without leaving the terminal.
//!
//! Layout: `app` (state and keys, no I/O), `view` (drawing), `waterfall` (a trace as
//! rows of bars), `fate` (a message's fate from its trace), `tempo` (search and trace
//! reads). This module runs them: the terminal, a thread reading keys, the NATS
//! subscription, and Tempo reads spawned at a bounded rate so the screen never waits:
//! at most [`FATE_READS`] fate reads at a time, each message's trace every
//! [`FATE_EVERY`] for [`FATE_FOR`]; the traces list every [`SEARCH_EVERY`] while shown;
//! an open waterfall every [`WATERFALL_EVERY`] (late spans join it).
//!
//! Tempo or NATS away: the status line says so and the rest works; Tempo is asked again
//! at the same rates. The terminal is restored on exit and on panic (`ratatui::init`).

mod app;
pub(crate) mod bench;
mod fate;
mod tempo;
mod view;
mod waterfall;

use std::io::Write as _;
use std::time::{Duration, Instant};

use chat_protocol::validate_name;
use data_encoding::BASE64;
use futures::StreamExt as _;
use ratatui::crossterm::event::{self, Event, KeyEventKind};
use telemetry::messaging::{Messaging, Peer};
use tokio::sync::mpsc;

use self::app::{App, Effect, MessageRow, View};
use self::fate::Fate;
use self::tempo::{Tempo, TraceSummary};
use crate::links::trace_url;
use crate::tail::{Received, receive};
use crate::trace::Span;
use crate::{Cli, CliError};

/// Fate reads in flight at most.
pub(crate) const FATE_READS: usize = 3;
/// How often a message's trace is read again until its fate is final.
pub(crate) const FATE_EVERY: Duration = Duration::from_secs(2);
/// How long after arrival a message's fate is still looked for.
pub(crate) const FATE_FOR: Duration = Duration::from_secs(120);
/// How often the traces list is searched again while shown.
pub(crate) const SEARCH_EVERY: Duration = Duration::from_secs(5);
/// How often an open waterfall is read again.
pub(crate) const WATERFALL_EVERY: Duration = Duration::from_secs(2);

/// Arguments of `tui`.
#[derive(Debug, clap::Args)]
pub struct TuiArgs {
    /// The room whose live messages are shown.
    pub room: String,
    /// Tempo's HTTP API (search and traces).
    #[arg(long, env = "TEMPO_URL", default_value = "http://localhost:3200")]
    pub tempo_url: String,
    /// How far back the traces view searches.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub search_window: Duration,
}

/// What came back from Tempo.
enum Reply {
    Fate(String, Result<Vec<Span>, String>),
    Traces(Result<Vec<TraceSummary>, String>),
    Trace(String, Result<Vec<Span>, String>),
}

/// Runs the TUI until `q`. `nats` is the connection, or why there is none.
pub(crate) async fn tui(nats: Result<async_nats::Client, CliError>, cli: &Cli, args: &TuiArgs) -> Result<(), CliError> {
    let room = validate_name("room", &args.room).map_err(|e| CliError::Invalid(e.to_string()))?.to_owned();
    let mut app = App::new(&room);
    let (client, subscription) = match nats {
        Ok(client) => {
            let subject = format!("chat.msg.{room}.*");
            match client.subscribe(subject.clone()).await {
                Ok(subscription) => (Some(client), Some(subscription)),
                Err(e) => {
                    app.nats_problem = Some(format!("cannot subscribe to {subject}: {e}"));
                    (Some(client), None)
                }
            }
        }
        Err(e) => {
            app.nats_problem = Some(e.to_string());
            (None, None)
        }
    };
    let mut terminal =
        ratatui::try_init().map_err(|e| CliError::Invalid(format!("chat-cli tui needs a terminal: {e}")))?;
    let runtime = Runtime {
        tempo: Tempo::new(&args.tempo_url),
        window: args.search_window,
        grafana: cli.grafana_url.clone(),
        spans: Messaging::new("chat-cli", &Peer::from_url(&cli.nats_url)),
    };
    let result = runtime.run(&mut terminal, app, client, subscription).await;
    ratatui::restore();
    result
}

struct Runtime {
    tempo: Tempo,
    window: Duration,
    grafana: String,
    spans: Messaging,
}

/// Reads in flight and when each list was last asked for.
#[derive(Default)]
struct InFlight {
    fates: usize,
    search: bool,
    trace: bool,
    searched: Option<Instant>,
}

impl Runtime {
    async fn run(
        &self,
        terminal: &mut ratatui::DefaultTerminal,
        mut app: App,
        client: Option<async_nats::Client>,
        mut subscription: Option<async_nats::Subscriber>,
    ) -> Result<(), CliError> {
        let (keys_sender, mut keys) = mpsc::channel(64);
        // crossterm's read blocks: its own thread, ended with the process.
        std::thread::spawn(move || {
            while let Ok(event) = event::read() {
                if keys_sender.blocking_send(event).is_err() {
                    break;
                }
            }
        });
        let (reply_sender, mut replies) = mpsc::channel(64);
        let mut flight = InFlight::default();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let draw = |terminal: &mut ratatui::DefaultTerminal, app: &App| {
            terminal
                .draw(|frame| view::draw(frame, app))
                .map(drop)
                .map_err(|e| CliError::Invalid(format!("terminal: {e}")))
        };
        draw(terminal, &app)?;
        loop {
            let mut dirty = true;
            tokio::select! {
                Some(input) = keys.recv() => match input {
                    Event::Key(key) if key.kind != KeyEventKind::Release => {
                        match app.on_key(key) {
                            Some(Effect::Quit) => return Ok(()),
                            Some(effect) => self.apply(effect, &mut app, &mut flight),
                            None => {}
                        }
                    }
                    Event::Resize(..) => {}
                    _ => dirty = false,
                },
                Some(message) = next_message(&mut subscription) => {
                    if let Some(Received { user, text, trace_id, span }) = receive(&self.spans, &message) {
                        span.end();
                        let now = Instant::now();
                        let time = view::utc_time(unix_now_ns());
                        app.message_arrived(MessageRow { user, time, text, trace_id, fate: Fate::Pending, arrived: now, checked: None });
                    }
                }
                Some(reply) = replies.recv() => self.take(reply, &mut app, &mut flight),
                _ = tick.tick() => {
                    // Reads started here redraw when they answer; only a NATS change shows now.
                    self.poll(&mut app, &mut flight, &reply_sender);
                    dirty = false;
                    let problem = client.as_ref().and_then(|c| nats_problem(c.connection_state()));
                    if client.is_some() && problem != app.nats_problem {
                        (app.nats_problem, dirty) = (problem, true);
                    }
                }
            }
            if dirty {
                draw(terminal, &app)?;
            }
        }
    }

    /// Starts the Tempo reads that are due.
    fn poll(&self, app: &mut App, flight: &mut InFlight, replies: &mpsc::Sender<Reply>) {
        let now = Instant::now();
        let mut due: Vec<String> = Vec::new();
        for row in &mut app.messages {
            let waited = now.duration_since(row.arrived);
            let stale = row.checked.is_none_or(|at| now.duration_since(at) >= FATE_EVERY);
            if !row.fate.is_final() && waited < FATE_FOR && stale && flight.fates + due.len() < FATE_READS {
                row.checked = Some(now);
                if !due.contains(&row.trace_id) {
                    due.push(row.trace_id.clone());
                }
            }
        }
        for trace_id in due {
            flight.fates += 1;
            let (tempo, replies) = (self.tempo.clone(), replies.clone());
            tokio::spawn(async move {
                let spans = tempo.trace(&trace_id).await;
                let _ = replies.send(Reply::Fate(trace_id, spans)).await;
            });
        }
        let search_due = flight.searched.is_none_or(|at| now.duration_since(at) >= SEARCH_EVERY);
        if app.view == View::Traces && app.waterfall.is_none() && !flight.search && search_due {
            (flight.search, flight.searched) = (true, Some(now));
            let (tempo, replies, window) = (self.tempo.clone(), replies.clone(), self.window);
            let (query, only) = (app.query(), app.trace_filter.clone());
            tokio::spawn(async move {
                let found = match only {
                    Some(id) => {
                        tempo.trace(&id).await.map(|spans| tempo::summary_of(&id, &spans).into_iter().collect())
                    }
                    None => tempo.search(&query, window, 50).await,
                };
                let _ = replies.send(Reply::Traces(found)).await;
            });
        }
        if let Some(w) = app.waterfall.as_mut()
            && !flight.trace
            && w.fetched.is_none_or(|at| now.duration_since(at) >= WATERFALL_EVERY)
        {
            flight.trace = true;
            w.fetched = Some(now);
            let (tempo, replies, trace_id) = (self.tempo.clone(), replies.clone(), w.trace_id.clone());
            tokio::spawn(async move {
                let spans = tempo.trace(&trace_id).await;
                let _ = replies.send(Reply::Trace(trace_id, spans)).await;
            });
        }
    }

    fn take(&self, reply: Reply, app: &mut App, flight: &mut InFlight) {
        let now = Instant::now();
        match reply {
            Reply::Fate(trace_id, Ok(spans)) => {
                flight.fates -= 1;
                app.fate_read(&trace_id, Fate::of(&spans), now);
            }
            Reply::Fate(_, Err(problem)) => {
                flight.fates -= 1;
                app.tempo_problem = Some(problem);
            }
            Reply::Traces(found) => {
                flight.search = false;
                app.traces_found(found);
            }
            Reply::Trace(trace_id, spans) => {
                flight.trace = false;
                app.trace_read(&trace_id, spans, now);
            }
        }
    }

    fn apply(&self, effect: Effect, app: &mut App, flight: &mut InFlight) {
        match effect {
            Effect::Search => flight.searched = None,
            // Quit is the caller's; a new waterfall (never fetched) is read at the next tick.
            Effect::Quit | Effect::LoadTrace(_) => {}
            Effect::Copy(trace_id) => {
                app.notice = match copy(&trace_id) {
                    Ok(()) => format!("copied {trace_id} (OSC 52)"),
                    Err(e) => format!("could not copy {trace_id}: {e}"),
                };
            }
            Effect::Open(trace_id) => {
                let url = trace_url(&self.grafana, &trace_id);
                app.notice = if open(&url) { format!("opened {url}") } else { format!("open in a browser: {url}") };
            }
        }
    }
}

async fn next_message(subscription: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    match subscription {
        Some(subscription) => subscription.next().await,
        None => std::future::pending().await,
    }
}

fn nats_problem(state: async_nats::connection::State) -> Option<String> {
    match state {
        async_nats::connection::State::Connected => None,
        other => Some(format!("{other} (reconnecting)")),
    }
}

/// Puts `text` on the clipboard of the terminal the user sits at (OSC 52: works over SSH
/// and through tmux with `set-clipboard on`).
fn copy(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "\x1b]52;c;{}\x07", BASE64.encode(text.as_bytes()))?;
    stdout.flush()
}

/// Opens `url` with the desktop's opener (`xdg-open`, macOS `open`); false if none runs.
fn open(url: &str) -> bool {
    use std::process::{Command, Stdio};
    ["xdg-open", "open"].iter().any(|opener| {
        Command::new(opener).arg(url).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().is_ok()
    })
}

fn unix_now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests;
