//! One authorization request from the server, as a traced SERVER span with the steps
//! `xkey.decrypt`, `jwt.validate`, `permissions.map` and `respond`.
//!
//! Every request that names a server and a user key gets a signed answer: a user JWT, or
//! an error whose short reason the server logs. A request too broken to answer (not
//! decryptable, not signed by a server) is counted as `result=error` and dropped; the
//! server then refuses the client when its callout timeout passes. Nothing here logs or
//! records a token, seed or JWT.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use nkeys::{KeyPair, XKey};
use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::{Context, KeyValue, global};
use serde_json::{Value, json};
use telemetry::messaging::{MessageRef, Messaging, Traced, record_failure};

use crate::denial::Denial;
use crate::nats_jwt::{decode_server_signed, encode, now};
use crate::oidc::Validator;
use crate::permissions::{Grant, Permissions};

/// Longest session a user JWT grants, whatever the token's `exp` says.
const MAX_SESSION_SECS: u64 = 24 * 3600;
/// The subject the server sends authorization requests to.
pub(crate) const AUTH_SUBJECT: &str = "$SYS.REQ.USER.AUTH";
/// Queue group of every auth-service instance (any one answers a request).
pub(crate) const QUEUE_GROUP: &str = "auth-service";
const SERVER_XKEY_HEADER: &str = "Nats-Server-Xkey";
/// The server's reply inbox for callout requests (`nats/nats.conf` lets `auth` publish there only).
const SERVER_INBOX_PREFIX: &str = "$SYS._INBOX.";

/// What is needed to answer requests; shared by all of them.
pub(crate) struct Callout {
    pub(crate) client: async_nats::Client,
    pub(crate) account: KeyPair,
    pub(crate) xkey: Option<XKey>,
    pub(crate) validator: Arc<Validator>,
    pub(crate) permissions: Permissions,
    pub(crate) target_account: String,
    spans: Messaging,
    requests: Counter<u64>,
    duration: Histogram<f64>,
}

/// A decoded, verified request: who to answer and with what.
pub(crate) struct Request {
    server_id: String,
    server_xkey: Option<String>,
    user_nkey: String,
    token: String,
}

impl Callout {
    pub(crate) fn new(
        client: async_nats::Client,
        account: KeyPair,
        xkey: Option<XKey>,
        validator: Arc<Validator>,
        permissions: Permissions,
        target_account: String,
        spans: Messaging,
    ) -> Self {
        let meter = global::meter("auth-service");
        Self {
            client,
            account,
            xkey,
            validator,
            permissions,
            target_account,
            spans,
            requests: denials_at_zero(
                meter
                    .u64_counter("auth.requests")
                    .with_unit("{request}")
                    .with_description("Auth callout requests, by result (allowed, denied, error) and reason")
                    .build(),
            ),
            duration: meter
                .f64_histogram("auth.request.duration")
                .with_unit("s")
                .with_description("Time to answer an auth callout request")
                .with_boundaries(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0])
                .build(),
        }
    }

    pub(crate) async fn handle(&self, message: async_nats::Message) {
        let started = Instant::now();
        let span = self.spans.server(
            &MessageRef {
                subject: AUTH_SUBJECT,
                template: AUTH_SUBJECT,
                message_id: None,
                body_size: message.payload.len(),
            },
            None, // CONNECT carries no trace context: every callout is its own trace.
            "auth-service",
        );
        let (result, reason) = span.scope(self.answer(&message)).await;
        if result != "allowed" {
            record_failure(&span, reason, &format!("{result}: {reason}"));
        }
        span.end();
        let attrs = [KeyValue::new("result", result), KeyValue::new("reason", reason)];
        self.requests.add(1, &attrs);
        self.duration.record(started.elapsed().as_secs_f64(), &attrs[..1]);
    }

    /// Returns (`result`, `reason`) for metrics.
    async fn answer(&self, message: &async_nats::Message) -> (&'static str, &'static str) {
        // Only the server asks, with a reply subject in its own inbox; anything else would
        // make this service publish a signed answer where someone else chose.
        let Some(reply) = message.reply.clone().filter(|r| r.starts_with(SERVER_INBOX_PREFIX)) else {
            tracing::warn!("authorization request without a server reply subject");
            return ("error", "bad_reply_subject");
        };
        let decrypt = self.spans.internal("xkey.decrypt");
        let opened = decrypt.in_scope(|| read_request(message, &self.account.public_key(), self.xkey.as_ref()));
        decrypt.end();
        let request = match opened {
            Ok(request) => request,
            Err(reason) => return ("error", reason),
        };
        let decision = self.decide(&request);
        let (result, reason) = match &decision {
            Ok(_) => ("allowed", "ok"),
            Err(denial) => (denial.result(), denial.reason()),
        };
        let respond = self.spans.internal("respond");
        let sent = respond
            .scope(async {
                let body = self.response(&request, decision)?;
                self.client.publish(reply, body).await.map_err(|e| e.to_string())
            })
            .await;
        let outcome = match sent {
            Ok(()) => (result, reason),
            Err(error) => {
                record_failure(&respond, "respond_failed", &error);
                respond.in_scope(|| tracing::error!(%error, "authorization response not sent"));
                ("error", "respond_failed")
            }
        };
        respond.end();
        outcome
    }

    /// `jwt.validate` then `permissions.map`; the failing step's span carries the denial.
    fn decide(&self, request: &Request) -> Result<Admission, Denial> {
        let validate = self.spans.internal("jwt.validate");
        let claims = validate.in_scope(|| self.validator.validate(&request.token)).inspect_err(|denial| {
            record_failure(&validate, denial.reason(), &denial.to_string());
        });
        validate.end();
        let claims = claims?;
        let map = self.spans.internal("permissions.map");
        let user = claims.preferred_username.clone().unwrap_or_default();
        let grant = map.in_scope(|| self.permissions.grant(&user, &claims.realm_access.roles)).inspect_err(|denial| {
            record_failure(&map, denial.reason(), &denial.to_string());
        });
        if let Ok(grant) = &grant {
            // The callout span (current here) names the user it let in.
            Context::current().span().set_attribute(KeyValue::new("enduser.id", user.clone()));
            map.in_scope(|| tracing::info!(roles = ?grant.roles, "access granted"));
        }
        map.end();
        // The session ends when the token does, but within a day: NATS reads `exp` as a
        // signed 64-bit number, and an issuer's far-future `exp` (year 10^10, or past
        // i64::MAX) once gave a user JWT that expired at once.
        Ok(Admission { user, grant: grant?, expires: claims.exp.min(now() + MAX_SESSION_SECS) })
    }

    /// The signed (and, when the server sent its xkey, sealed) authorization response.
    fn response(&self, request: &Request, decision: Result<Admission, Denial>) -> Result<Bytes, String> {
        let mut nats = json!({ "type": "authorization_response", "version": 2 });
        match decision {
            Ok(Admission { user, grant, expires }) => {
                let user_claims = json!({
                    "sub": request.user_nkey,
                    "aud": self.target_account,
                    "name": user,
                    "exp": expires,
                    "nats": {
                        "pub": { "allow": grant.publish },
                        "sub": { "allow": grant.subscribe },
                        "subs": -1, "data": -1, "payload": -1,
                        "type": "user", "version": 2,
                    },
                });
                nats["jwt"] = json!(encode(user_claims, &self.account).map_err(|e| e.to_string())?);
            }
            Err(denial) => nats["error"] = json!(denial.to_string()),
        }
        let response = json!({ "sub": request.user_nkey, "aud": request.server_id, "nats": nats });
        let jwt = encode(response, &self.account).map_err(|e| e.to_string())?;
        match (&request.server_xkey, &self.xkey) {
            (Some(server), Some(ours)) => {
                let server = XKey::from_public_key(server).map_err(|e| e.to_string())?;
                ours.seal(jwt.as_bytes(), &server).map(Bytes::from).map_err(|e| e.to_string())
            }
            _ => Ok(Bytes::from(jwt)),
        }
    }
}

/// A login let in: who, with which permissions, until when (Unix seconds).
#[derive(Debug)]
struct Admission {
    user: String,
    grant: Grant,
    expires: u64,
}

/// Opens the sealed request (if sealed) and checks it comes from a server and is for us.
pub(crate) fn read_request(
    message: &async_nats::Message,
    account: &str,
    xkey: Option<&XKey>,
) -> Result<Request, &'static str> {
    let server_xkey = message.headers.as_ref().and_then(|h| h.get(SERVER_XKEY_HEADER)).map(|v| v.as_str().to_owned());
    let opened;
    let raw: &[u8] = match (&server_xkey, xkey) {
        (Some(sender), Some(ours)) => {
            let sender = XKey::from_public_key(sender).map_err(|_| fail("bad_server_xkey"))?;
            opened = ours.open(&message.payload, &sender).map_err(|_| fail("decrypt_failed"))?;
            &opened
        }
        (Some(_), None) => return Err(fail("no_xkey_configured")),
        (None, _) => &message.payload,
    };
    let text = std::str::from_utf8(raw).map_err(|_| fail("malformed_request"))?;
    let claims = decode_server_signed(text).map_err(|_| fail("request_not_server_signed"))?;
    if claims["aud"] != "nats-authorization-request" || claims["sub"] != account {
        return Err(fail("request_misaddressed"));
    }
    if claims["exp"].as_u64().is_some_and(|exp| exp < now()) {
        return Err(fail("request_expired"));
    }
    let nats = &claims["nats"];
    let text_of = |v: &Value| v.as_str().map(str::to_owned);
    Ok(Request {
        server_id: text_of(&nats["server_id"]["id"]).ok_or_else(|| fail("malformed_request"))?,
        server_xkey,
        user_nkey: text_of(&nats["user_nkey"])
            .filter(|k| k.starts_with('U'))
            .ok_or_else(|| fail("malformed_request"))?,
        token: text_of(&nats["connect_opts"]["auth_token"]).unwrap_or_default(),
    })
}

/// The counter with every denial's series at 0, so the first denial of a reason shows in
/// `rate()` / `increase()` (a series born at its first event has no earlier sample).
fn denials_at_zero(requests: Counter<u64>) -> Counter<u64> {
    for denial in Denial::ALL {
        requests.add(0, &[KeyValue::new("result", denial.result()), KeyValue::new("reason", denial.reason())]);
    }
    requests
}

/// Marks the current step failed and returns the reason (for `?` chains).
fn fail(reason: &'static str) -> &'static str {
    record_failure(&Traced::from_context(Context::current()), reason, reason);
    tracing::warn!(reason, "unusable authorization request");
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(headers: Option<async_nats::HeaderMap>, payload: Vec<u8>) -> async_nats::Message {
        async_nats::Message {
            subject: AUTH_SUBJECT.into(),
            reply: Some("$SYS._INBOX.x.y".into()),
            payload: payload.into(),
            headers,
            status: None,
            description: None,
            length: 0,
        }
    }

    struct Fixture {
        account: KeyPair,
        service_xkey: XKey,
        server: KeyPair,
        server_xkey: XKey,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                account: KeyPair::new_account(),
                service_xkey: XKey::new(),
                server: KeyPair::new_server(),
                server_xkey: XKey::new(),
            }
        }

        /// A request as nats-server sends it: signed by the server, sealed to our xkey.
        fn request(&self, claims: Value) -> async_nats::Message {
            let jwt = encode(claims, &self.server).expect("sign");
            let sealed = self.server_xkey.seal(jwt.as_bytes(), &self.service_xkey).expect("seal");
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(SERVER_XKEY_HEADER, self.server_xkey.public_key().as_str());
            message(Some(headers), sealed)
        }

        fn claims(&self) -> Value {
            json!({
                "sub": self.account.public_key(), "aud": "nats-authorization-request", "exp": now() + 2,
                "nats": { "server_id": { "id": "NSERVER" }, "user_nkey": KeyPair::new_user().public_key(),
                          "connect_opts": { "auth_token": "tok" } },
            })
        }

        fn read(&self, message: &async_nats::Message) -> Result<Request, &'static str> {
            read_request(message, &self.account.public_key(), Some(&self.service_xkey))
        }
    }

    #[test]
    fn a_sealed_server_signed_request_opens() {
        let f = Fixture::new();
        let request = f.read(&f.request(f.claims())).expect("valid request");
        assert_eq!((request.server_id.as_str(), request.token.as_str()), ("NSERVER", "tok"));
        assert!(request.server_xkey.is_some());
    }

    #[test]
    fn malformed_requests_are_refused_with_a_reason_and_never_panic() {
        let f = Fixture::new();
        let mut misaddressed = f.claims();
        misaddressed["sub"] = json!(KeyPair::new_account().public_key());
        let mut expired = f.claims();
        expired["exp"] = json!(now() - 10);
        let mut no_user = f.claims();
        no_user["nats"]["user_nkey"] = json!("not-a-user-key");
        let mut bad_xkey = async_nats::HeaderMap::new();
        bad_xkey.insert(SERVER_XKEY_HEADER, "XNOTAKEY");
        let mut stranger = async_nats::HeaderMap::new();
        stranger.insert(SERVER_XKEY_HEADER, XKey::new().public_key().as_str());
        let not_a_server = encode(f.claims(), &KeyPair::new_account()).expect("sign").into_bytes();
        let cases = [
            (message(None, b"not a jwt".to_vec()), "request_not_server_signed"),
            (message(None, vec![0xff; 64]), "malformed_request"),
            (message(None, vec![b'x'; 100_000]), "request_not_server_signed"),
            (message(None, not_a_server), "request_not_server_signed"),
            (message(Some(bad_xkey), b"xkv1garbage".to_vec()), "bad_server_xkey"),
            (message(Some(stranger), f.request(f.claims()).payload.to_vec()), "decrypt_failed"),
            (f.request(misaddressed), "request_misaddressed"),
            (f.request(expired), "request_expired"),
            (f.request(no_user), "malformed_request"),
        ];
        for (message, reason) in cases {
            assert_eq!(f.read(&message).err(), Some(reason));
        }
        let sealed = f.request(f.claims());
        assert_eq!(read_request(&sealed, &f.account.public_key(), None).err(), Some("no_xkey_configured"));
    }
}
