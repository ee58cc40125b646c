#!/usr/bin/env python3
"""Writes the named seed inputs of each fuzz target into tests/fuzz/seeds/<target>/.

The seeds are what a reader can name: one valid input per shape and the hostile variants
around it. `make fuzz` starts each target from its seeds and grows a local, git-ignored
corpus in tests/fuzz/corpus/<target>/ (kept between runs on one machine).
Run again after changing a seed here: python3 tests/fuzz/seeds/make_seeds.py
"""
import base64
import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def jwt(header: dict, claims: dict, sig: str = "c2lnbmF0dXJl") -> str:
    return f"{b64(header)}.{b64(claims)}.{sig}"


SEEDS = {
    "chat_message": {
        "valid": b'{"text":"hello"}',
        "valid-with-sent-at": b'{"text":"hi","sent_at_ms":1764633600000}',
        "demo-fault-fail-once": b'{"text":"x","demo_fault":"fail_once"}',
        "demo-fault-unknown": b'{"text":"x","demo_fault":"explode"}',
        "empty-text": b'{"text":""}',
        "nul-in-text": b'{"text":"a\\u0000b"}',
        "unicode-text": '{"text":"h\u00e9llo \U0001f600 \u202e"}'.encode(),
        "text-not-string": b'{"text":42}',
        "missing-text": b'{"sent_at_ms":1}',
        "unknown-field": b'{"text":"x","admin":true}',
        "negative-sent-at": b'{"text":"x","sent_at_ms":-1}',
        "huge-sent-at": b'{"text":"x","sent_at_ms":18446744073709551615}',
        "deep-nesting": b'{"text":' + b"[" * 200 + b"]" * 200 + b"}",
        "not-json": b"hello",
        "not-utf8": b'{"text":"\xff\xfe"}',
        "message-subject": b"chat.msg.general.alice",
        "subject-wildcards": b"chat.msg.*.>",
        "history-subject": b"chat.history.general.alice",
        "chat-inbox": b"_INBOX.chat.alice.abc",
        "subject-empty-tokens": b"chat.msg..alice",
    },
    "trace_context": {
        "valid": f"traceparent: {TP}".encode(),
        "valid-with-state": f"traceparent: {TP}\ntracestate: vendor=a,other=b".encode(),
        "nats-renamed": f"Xraceparent: {TP}".encode(),
        "both-names": f"traceparent: {TP}\nXraceparent: 00-{'1' * 32}-{'2' * 16}-01".encode(),
        "unsampled": f"traceparent: {TP[:-2]}00".encode(),
        "uppercase-hex": f"traceparent: {TP.upper()}".encode(),
        "zero-trace-id": f"traceparent: 00-{'0' * 32}-00f067aa0ba902b7-01".encode(),
        "zero-span-id": f"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-{'0' * 16}-01".encode(),
        "version-ff": f"traceparent: ff{TP[2:]}".encode(),
        "future-version-suffix": f"traceparent: 01{TP[2:]}-extra".encode(),
        "short": b"traceparent: 00-4bf92f35-00f067aa-01",
        "too-long": f"traceparent: {TP}{'0' * 300}".encode(),
        "two-traceparents": f"traceparent: {TP}\ntraceparent: 00-{'a' * 32}-{'b' * 16}-01".encode(),
        "huge-tracestate": f"traceparent: {TP}\ntracestate: {'k=v,' * 200}".encode(),
        "baggage": f"traceparent: {TP}\nbaggage: user=alice,token=secret".encode(),
        "spaces": f"traceparent:    {TP}   ".encode(),
        "no-colon": b"traceparent",
        "empty": b"",
    },
    "header_block": {  # and the hand-written files of the folder, kept as they are
        "many-headers": b"NATS/1.0\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(100)) + b"\r\n",
        "duplicate-names": b"NATS/1.0\r\nA: 1\r\nA: 2\r\na: 3\r\n\r\n",
        "no-responders": b"NATS/1.0 503\r\n\r\n",
        "nul-in-value": b"NATS/1.0\r\nA: x\x00y\r\n\r\n",
        "long-value": b"NATS/1.0\r\ntracestate: " + b"k=v," * 1000 + b"\r\n\r\n",
        "lf-only": b"NATS/1.0\nA: 1\n\n",
        "no-final-crlf": b"NATS/1.0\r\nA: 1\r\n",
    },
    "callout_request": {
        "jwt-shaped": jwt({"typ": "JWT", "alg": "ed25519-nkey"}, {"nats": {"type": "authorization_request"}}).encode(),
        "jwt-none-alg": jwt({"typ": "JWT", "alg": "none"}, {"sub": "x"}, "").encode(),
        "jwt-hs256": jwt({"typ": "JWT", "alg": "HS256"}, {"sub": "x"}).encode(),
        "jwt-rs256-with-kid": jwt({"typ": "JWT", "alg": "RS256", "kid": "x"}, {"iss": "http://k/realms/chat"}).encode(),
        "jwt-jku": jwt({"alg": "RS256", "jku": "http://evil/jwks"}, {"sub": "x"}).encode(),
        "jwt-two-parts": b"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0",
        "jwt-four-parts": b"a.b.c.d",
        "jwt-not-base64": b"!!!.???.***",
        "jwt-claims-not-json": (b64({"alg": "RS256"}) + ".bm90IGpzb24.c2ln").encode(),
        "jwt-huge-claims": jwt({"alg": "RS256"}, {"sub": "x" * 3000}).encode(),
        "empty": b"",
        "nul": b"\x00",
        "sealed-prefix-garbage": b"xkv1" + bytes(range(64)),
        "binary": bytes(range(256)),
        "json-not-jwt": b'{"nats":{"connect_opts":{"auth_token":"t"}}}',
    },
}

for target, seeds in SEEDS.items():
    folder = HERE / target
    folder.mkdir(exist_ok=True)
    for name, data in seeds.items():
        (folder / name).write_bytes(data)
