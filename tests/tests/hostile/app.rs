//! `spawn_app` for the hostile suite: the secured stack, a test OIDC issuer, the auth
//! callout and the worker (history on request), plus clients for chat users (through
//! the callout), service users (their passwords) and the test admin, and a probe that
//! tells whether the server allowed a publish or a subscription.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use test_harness::oidc::TestIssuer;
use test_harness::{ChatStack, Service};

/// Bound of every wait.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// Quick retries so that redeliveries happen within a test; no demo faults.
const WORKER_ENV: &[(&str, &str)] = &[("NAK_DELAY", "100ms"), ("NAK_DELAY_MAX", "500ms"), ("ACK_WAIT", "5s")];

pub(crate) struct App {
    pub(crate) stack: ChatStack,
    pub(crate) issuer: TestIssuer,
    pub(crate) _auth: Service,
    pub(crate) worker: Service,
    pub(crate) _history: Option<Service>,
}

/// What to start besides NATS, PostgreSQL, the issuer and the callout.
#[derive(Default)]
pub(crate) struct Options<'a> {
    pub(crate) history: bool,
    pub(crate) worker_env: &'a [(&'a str, &'a str)],
    pub(crate) auth_env: &'a [(&'a str, &'a str)],
}

impl App {
    pub(crate) async fn spawn(options: Options<'_>) -> Self {
        let stack = ChatStack::start_secured().await.expect("secured stack");
        let issuer = TestIssuer::start().await.expect("issuer");
        let auth_env: Vec<(&str, &str)> =
            [("OIDC_ISSUER", issuer.issuer())].into_iter().chain(options.auth_env.iter().copied()).collect();
        let auth = stack.spawn_service("auth-service", &auth_env).await.expect("auth-service");
        let worker_env: Vec<(&str, &str)> = WORKER_ENV.iter().chain(options.worker_env).copied().collect();
        let worker = stack.spawn_service("persist-worker", &worker_env).await.expect("persist-worker");
        let history = if options.history {
            Some(stack.spawn_service("history-service", &[]).await.expect("history-service"))
        } else {
            None
        };
        Self { stack, issuer, _auth: auth, worker, _history: history }
    }

    /// The setup step again (as `make up` runs it), with the worker's settings.
    pub(crate) async fn set_up_streams(&self) {
        self.stack.set_up_streams(WORKER_ENV).await.expect("setup step");
    }

    /// A token for a chat user with `roles`.
    pub(crate) fn token(&self, user: &str, roles: &[&str]) -> String {
        self.issuer.token(&self.issuer.claims(user, roles))
    }

    /// A chat user's connection through the callout, with its own inbox prefix.
    pub(crate) async fn chat_user(&self, user: &str, roles: &[&str]) -> Probe {
        let options = async_nats::ConnectOptions::with_token(self.token(user, roles))
            .custom_inbox_prefix(chat_protocol::chat_inbox_prefix(user));
        Probe::connect(options, &self.stack.nats.url()).await
    }

    /// A service user's connection with its password from the generated `.env`.
    pub(crate) async fn service_user(&self, user: &str, password_key: &str) -> Probe {
        let password = self.stack.secrets[password_key].clone();
        Probe::connect(
            async_nats::ConnectOptions::with_user_and_password(user.to_owned(), password),
            &self.stack.nats.url(),
        )
        .await
    }

    /// `chat-cli --json <args>` as `user` (a token of role chat-user).
    pub(crate) async fn cli_as(&self, user: &str, args: &[&str]) -> test_harness::CliRun {
        let token = self.token(user, &["chat-user"]);
        let base = ["--json", "--token", token.as_str(), "--user", user, "--timeout", "3s"];
        self.stack.cli(&[&base[..], args].concat()).await.expect("chat-cli")
    }

    /// Rows as (room, username, text).
    pub(crate) async fn rows(&self) -> Vec<(String, String, String)> {
        let pool = PgPoolOptions::new().max_connections(1).connect(&self.stack.db.url).await.expect("db");
        let rows = sqlx::query_as("SELECT room, username, text FROM chat.messages ORDER BY stream_created, stream_seq")
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
        pool.close().await;
        rows
    }

    /// Waits until `pred` holds for the stored rows.
    pub(crate) async fn wait_rows(
        &self,
        what: &str,
        pred: impl Fn(&[(String, String, String)]) -> bool,
    ) -> Vec<(String, String, String)> {
        let deadline = Instant::now() + WAIT;
        loop {
            let rows = self.rows().await;
            if pred(&rows) {
                return rows;
            }
            assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}; rows: {rows:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The dead letters in `CHAT_DLQ` (headers and payload), read as the test admin.
    pub(crate) async fn dead_letters(&self) -> Vec<async_nats::jetstream::message::StreamMessage> {
        let admin = self.stack.admin().await.expect("admin");
        let js = async_nats::jetstream::new(admin);
        let Ok(mut stream) = js.get_stream("CHAT_DLQ").await else { return Vec::new() };
        let last = stream.info().await.map(|i| i.state.last_sequence).unwrap_or(0);
        let mut letters = Vec::new();
        for seq in 1..=last {
            if let Ok(message) = stream.get_raw_message(seq).await {
                letters.push(message);
            }
        }
        letters
    }

    /// Waits for a dead letter whose `Chat-Dlq-Subject` is `subject`.
    pub(crate) async fn wait_dead_letter(&self, subject: &str) -> async_nats::jetstream::message::StreamMessage {
        let deadline = Instant::now() + WAIT;
        loop {
            let letters = self.dead_letters().await;
            if let Some(letter) =
                letters.into_iter().find(|l| l.headers.get("Chat-Dlq-Subject").is_some_and(|v| v.as_str() == subject))
            {
                return letter;
            }
            assert!(Instant::now() < deadline, "no dead letter of {subject} within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A connection that records the errors the server sends it.
pub(crate) struct Probe {
    pub(crate) client: async_nats::Client,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Probe {
    async fn connect(options: async_nats::ConnectOptions, url: &str) -> Self {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&errors);
        let client = options
            .event_callback(move |event| {
                let sink = Arc::clone(&sink);
                async move {
                    if let async_nats::Event::ServerError(error) = event
                        && let Ok(mut errors) = sink.lock()
                    {
                        errors.push(error.to_string());
                    }
                }
            })
            .connect(url)
            .await
            .expect("connect");
        Self { client, errors }
    }

    /// Whether the server refused something on `subject` since the last call.
    async fn refused(&self, subject: &str) -> bool {
        self.client.flush().await.expect("flush");
        // The server answers -ERR before the PONG of the flush; the event arrives async.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut errors = self.errors.lock().expect("errors");
        let refused = errors
            .iter()
            .any(|e| e.to_lowercase().contains("permissions violation") && e.contains(&format!("\"{subject}\"")));
        errors.clear();
        refused
    }

    /// Whether the server lets this user publish to `subject`.
    pub(crate) async fn may_publish(&self, subject: &str) -> bool {
        self.client.publish(subject.to_owned(), "probe".into()).await.expect("publish");
        !self.refused(subject).await
    }

    /// Whether the server lets this user subscribe to `subject`.
    pub(crate) async fn may_subscribe(&self, subject: &str) -> bool {
        let subscriber = self.client.subscribe(subject.to_owned()).await.expect("subscribe");
        let allowed = !self.refused(subject).await;
        drop(subscriber);
        allowed
    }
}
