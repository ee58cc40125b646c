#!/usr/bin/env bash
# `make up`: build our images once (chat-cli too), start the stack, wait until every
# service with a healthcheck is healthy, then probe the collector and each cluster gateway
# (their image has no shell, so compose cannot) and watch that nothing without a healthcheck crash-loops. A crash loop fails within WAIT_TIMEOUT instead of hanging, and the
# failure shows `docker compose ps` and the last log lines of every service that is not
# running and healthy.
set -euo pipefail
cd "$(dirname "$0")/.."
read -r -a compose <<< "${COMPOSE:-docker compose}"
WAIT_TIMEOUT=${WAIT_TIMEOUT:-600}
if [ -f .env ]; then set -a; . ./.env; set +a; fi
# COMPOSE_PROFILES=demo (in the environment or .env) would make `up --wait` start the
# demo's one-shot chat-cli without arguments, which exits 2 and fails `make up`: the
# stack starts without profiles (`make demo` asks for its own).
unset COMPOSE_PROFILES

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

echo "make up: building the images (the first time: a release build of every service, 10-25 minutes; then seconds)"
"${compose[@]}" --profile demo build
echo "make up: starting the stack and waiting until every service is healthy (at most ${WAIT_TIMEOUT}s; Keycloak alone takes 10-60 s)"
"${compose[@]}" up -d --wait --wait-timeout "$WAIT_TIMEOUT" ||
  show_failures "the stack did not become healthy within ${WAIT_TIMEOUT}s"

health="http://127.0.0.1:${COLLECTOR_HEALTH_PORT:-13133}/ready"
ready=0
for _ in $(seq 1 60); do
  if curl -fsS -o /dev/null "$health" 2>/dev/null; then ready=1; break; fi
  sleep 1
done
[ "$ready" = 1 ] || show_failures "the collector's health endpoint ($health) did not answer within 60s"

# The cluster's collector gateways: their image has no shell (no healthcheck) and their
# replicas publish no host port, so each replica's health endpoint is probed from a
# throwaway container on its network (the nats image's busybox wget; that image is here
# already). The single profile has no gateway: nothing to probe.
read -r -a docker <<< "${DOCKER:-docker}"
probe_image=nats:2.12.8-alpine3.22
for id in $("${compose[@]}" ps -q otel-gateway 2>/dev/null); do
  # (A replica gone since `ps` leaves both empty: its probe fails below, with the logs.)
  read -r network ip < <("${docker[@]}" inspect -f '{{range $name, $net := .NetworkSettings.Networks}}{{$name}} {{$net.IPAddress}}{{end}}' "$id") || true
  ready=0
  for _ in $(seq 1 "${GATEWAY_PROBES:-30}"); do
    if "${docker[@]}" run --rm --network "$network" --entrypoint wget "$probe_image" -q -T 2 --spider \
      "http://$ip:13133/ready" >/dev/null 2>&1; then ready=1; break; fi
    sleep 2
  done
  if [ "$ready" != 1 ]; then
    "${compose[@]}" logs --no-color --tail 30 otel-gateway >&2 || true
    show_failures "a collector gateway ($ip) did not answer its health endpoint (:13133/ready)"
  fi
done

# A container without a healthcheck (the cluster's collector gateways: their image has no
# shell) counts for `up --wait` as soon as it runs once; a crash loop then shows as
# "restarting", or "exited" with a non-zero code. Watch for that a few seconds; one-shot
# steps that exited 0 are fine.
for _ in $(seq 1 "${RUNNING_CHECKS:-10}"); do
  broken=$("${compose[@]}" ps -a --format '{{.Service}} {{.State}} {{.ExitCode}}' 2>/dev/null |
    awk '$2 == "restarting" || $2 == "dead" || ($2 == "exited" && $3 != "0") {print $1}' | sort -u | tr '\n' ' ')
  [ -z "$broken" ] || show_failures "not running: $broken"
  sleep 1
done
