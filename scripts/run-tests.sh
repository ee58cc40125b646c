#!/usr/bin/env bash
# make test's unit, integration and tier tests (every test of the workspace), output as
# it comes and copied to target/test-run.log.
#
# With cargo-nextest installed: `cargo nextest run --workspace`. Without it (CI), `cargo
# test`, which runs test binaries one after another, in two lanes: the full-stack tier
# (~11.5 min, mostly waiting for alerts to fire) beside every other test (~11.5 min in a
# row, 4 of them the 2-minute collector outage at 1,000 msg/s). The full-stack tier's
# output is printed when it ends. Both lanes passed so on this 2-core machine, with
# benchmarks running beside them.
#
# When a test fails, the end of the output is a digest of each failure (its captured
# output and panic message, the last lines of each), after everything else: CI shows
# the tail of a run, and a failure told only in the middle of 60 test binaries' output
# was once invisible there.
set -uo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
log=target/test-run.log
full_stack_log=target/test-run-full-stack.log
mkdir -p target

FULL_STACK=the_whole_pipeline_keeps_every_trace_it_should_and_fires_every_alert_in_its_scenario_only

if $CARGO nextest --version >/dev/null 2>&1; then
  $CARGO nextest run --workspace --no-fail-fast 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
else
  $CARGO test --workspace --no-run -q 2>&1 | tee "$log" || exit 1
  $CARGO test -p stack-checks --test full_stack -- --exact "$FULL_STACK" >"$full_stack_log" 2>&1 &
  full_stack=$!
  $CARGO test --workspace --no-fail-fast -- --skip "$FULL_STACK" 2>&1 | tee -a "$log"
  status=${PIPESTATUS[0]}
  echo "---- waiting for the full-stack tier (started beside the other tests) ----" | tee -a "$log"
  wait "$full_stack"
  full_stack_status=$?
  tee -a "$log" <"$full_stack_log"
  [ "$full_stack_status" -ne 0 ] && status=$full_stack_status
fi
[ "$status" -eq 0 ] && exit 0

# libtest prints each failure as "---- <name> stdout ----" followed by its output, up
# to the next such header or the "failures:" list; nextest as "--- STDOUT: ..." and
# "--- STDERR: ..." blocks. Keep the last 40 lines of each, backtraces left out.
echo
echo "==================== digest of the failures (full output: $log) ===================="
awk '
  function flush() { if (name != "") { print "---- " name; s = (n > 40) ? n - 40 : 0; if (s) print "  [" s " earlier lines]"; for (i = s + 1; i <= n; i++) print buf[i]; print "" } name = ""; n = 0 }
  /^---- .* stdout ----$/ { flush(); name = $2; next }
  /^--- (STDOUT|STDERR): / { flush(); name = $0; next }
  /^failures:$/ || /^test result:/ || /^        (PASS|FAIL|SIGSEGV|TIMEOUT) / { flush(); next }
  /^stack backtrace:$/ || /^ +[0-9]+: / || /^ +at / || /^note: Some details/ { next }
  name != "" { buf[++n] = $0 }
  END { flush() }
' "$log"
grep -E '^(error: [0-9]+ targets? failed|    `-p |test result: FAILED|error: test failed)' "$log"
exit "$status"
