#!/usr/bin/env bash
# `make up`: build our images once (chat-cli too), start the stack, wait until every
# service with a healthcheck is healthy, then probe the collector (its image has no shell,
# so compose cannot). A crash loop fails within WAIT_TIMEOUT instead of hanging, and the
# failure shows `docker compose ps` and the last log lines of every service that is not
# running and healthy.
set -euo pipefail
cd "$(dirname "$0")/.."
read -r -a compose <<< "${COMPOSE:-docker compose}"
WAIT_TIMEOUT=${WAIT_TIMEOUT:-600}
if [ -f .env ]; then set -a; . ./.env; set +a; fi

show_failures() {
  echo "make up: $1" >&2
  "${compose[@]}" ps -a >&2 || true
  "${compose[@]}" ps -a --format '{{.Service}} {{.State}} {{.Health}}' 2>/dev/null |
    while read -r service state health; do
      if [ "$state" != "running" ] || { [ -n "${health:-}" ] && [ "$health" != "healthy" ]; }; then
        echo "--- $service ($state${health:+, $health}): last log lines ---" >&2
        "${compose[@]}" logs --no-color --tail 30 "$service" >&2 || true
      fi
    done
  exit 1
}

"${compose[@]}" --profile demo build
"${compose[@]}" up -d --wait --wait-timeout "$WAIT_TIMEOUT" ||
  show_failures "the stack did not become healthy within ${WAIT_TIMEOUT}s"

health="http://127.0.0.1:${COLLECTOR_HEALTH_PORT:-13133}/ready"
for _ in $(seq 1 60); do
  if curl -fsS -o /dev/null "$health" 2>/dev/null; then exit 0; fi
  sleep 1
done
show_failures "the collector's health endpoint ($health) did not answer within 60s"
