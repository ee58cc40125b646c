#!/usr/bin/env bash
# Instructions per message of the per_message bench's setups, counted by valgrind
# (callgrind), all threads (the export thread's work counts): a figure that does not move
# with the machine's load, unlike the bench's times. Each setup runs beside `off`, at M and
# 2M messages per round: the difference is M messages' worth, without start-up costs;
# the figure is the setup's cost over `off`, as the bench's "+ µs over off".
#   scripts/per-message-instructions.sh [setup ...]   (default: unsampled spans spans+otlp)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)"; exit 2; }
MESSAGES=${PER_MESSAGE_MESSAGES:-8192}
ROUNDS=8 # the bench's warm-up round and its 7 rounds
bench=$(cargo bench -q -p telemetry --bench per_message --no-run --message-format=json 2>/dev/null \
  | sed -n 's/.*"executable":"\([^"]*per_message[^"]*\)".*/\1/p' | tail -1)
[ -x "$bench" ] || { echo "bench binary not found"; exit 1; }
count() { # instructions of one run with PER_MESSAGE_ONLY=$1
  PER_MESSAGE_ONLY=$1 PER_MESSAGE_MESSAGES=${MESSAGES} valgrind --tool=callgrind --callgrind-out-file=/dev/null \
    "$bench" 2>&1 >/dev/null | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
per_message() { # instructions per message of `off` plus setup $1 (or off alone)
  local small big
  small=$(count "$1")
  big=$(MESSAGES=$((2 * MESSAGES)) count "$1")
  echo $(( (big - small) / (MESSAGES * ROUNDS) ))
}
off=$(per_message off)
echo "instructions per message, callgrind, over off ($off per message off):"
for setup in ${@:-unsampled spans spans+otlp}; do
  echo "  $setup: +$(( $(per_message "$setup") - 2 * off ))"
done
