#!/usr/bin/env bash
# `make keys`: write a git-ignored .env with fresh keys and passwords. Never overwrites an
# existing .env and never leaves a partial one: the keys go to a temp file that becomes
# .env only when it holds every expected line. Uses the local Rust toolchain when it is
# recent enough (rust-version in Cargo.toml), else builds the auth-service image with
# Docker and runs its `keygen` (a user with Docker and no Rust can start the stack).
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
DOCKER=${DOCKER:-docker}

if [ -f .env ]; then
  echo ".env exists; to start over: make clean && rm .env && make keys"
  exit 0
fi
required=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
tmp=$(mktemp .env.tmp.XXXXXX)
trap 'rm -f "$tmp"' EXIT

toolchain_ok() {
  local version
  version=$("$CARGO" --version 2>/dev/null | awk '{print $2}') || return 1
  [ -n "$version" ] && [ "$(printf '%s\n%s\n' "$required" "$version" | sort -V | head -n 1)" = "$required" ]
}

# Each long step says what it does and how long it may take, and shows its own progress
# (on stderr: stdout carries only the keys).
if toolchain_ok; then
  CARGO="$CARGO" bash scripts/patch-crates.sh
  echo "make keys: building auth-service's keygen with cargo (a debug build: 1-3 minutes the first time)" >&2
  "$CARGO" run -p auth-service -- keygen > "$tmp"
else
  echo "make keys: no Rust toolchain >= $required here: building the auth-service image with Docker" >&2
  echo "make keys: (the release build of the workspace: 10-25 minutes the first time; its progress follows)" >&2
  "$DOCKER" build --build-arg SERVICE=auth-service -t nats-otel-reference/auth-service:0.1.0 . >&2
  "$DOCKER" run --rm nats-otel-reference/auth-service:0.1.0 keygen > "$tmp"
fi

for key in AUTH_ACCOUNT_SEED AUTH_ACCOUNT_PUBLIC_KEY AUTH_XKEY_SEED AUTH_XKEY_PUBLIC_KEY NATS_AUTH_PASSWORD \
           NATS_PERSIST_PASSWORD NATS_SETUP_PASSWORD NATS_HISTORY_PASSWORD NATS_TRACER_PASSWORD NATS_OTLP_BRIDGE_PASSWORD NATS_ROUTE_PASSWORD POSTGRES_PASSWORD \
           GRAFANA_ADMIN_PASSWORD KEYCLOAK_ADMIN_PASSWORD CHAT_DEMO_PASSWORD; do
  if ! grep -q "^$key=." "$tmp"; then
    echo "make keys: the generated keys lack $key; .env not written" >&2
    exit 1
  fi
done
chmod 600 "$tmp"
mv "$tmp" .env
echo "wrote .env (secrets: keep it out of git)"
