#!/usr/bin/env bash
# The long form of the reliability suite (tests/reliability.rs, kill9_rounds_under_mixed_load)
# with the release binary: ROUNDS rounds of mixed load (HTTP and SMPP submits, sends through an
# SMPP link and a simulated modem on a pty, replies through both, receipts, webhooks), each
# ended by kill -9 at a seeded random moment and checked after the restart (nothing accepted
# lost, no reply lost or stored twice, duplicates marked and bounded, every final status
# announced). Writes a Markdown report to bench/results/reliability-<date>.md.
#
#   bash bench/reliability.sh
#
# Environment (all optional):
#   ROUNDS=20            rounds (PARLA_RELIABILITY_ROUNDS)
#   CLIENTS=8            concurrent HTTP clients (PARLA_RELIABILITY_HTTP_CLIENTS)
#   PAUSE_MS=2           pause of each HTTP client between requests
#   KILL_WITHIN_MS=3000  the kill comes 300 ms to this long into each round's load
#   SEED=<now>           replays the kill moments of an earlier run
#   FAULTS=1             also run the fault tests of the same file once (0: skip)
#
# Needs cargo, node and `npm ci --prefix tests/interop` (the ESME); only 127.0.0.1 is used.
# Run it on a quiet machine (load under 2): every check waits for conditions, so a busy one
# only makes it slower, but the figures are less telling.

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS=${ROUNDS:-20}
CLIENTS=${CLIENTS:-8}
PAUSE_MS=${PAUSE_MS:-2}
KILL_WITHIN_MS=${KILL_WITHIN_MS:-3000}
SEED=${SEED:-$(date +%s)}
FAULTS=${FAULTS:-1}
RESULTS_DIR=bench/results
REPORT=$RESULTS_DIR/reliability-$(date -u +%Y-%m-%d).md
mkdir -p "$RESULTS_DIR"

echo "building the release binary and the test..." >&2
cargo test --release --locked --test reliability --no-run 2>&1 | tail -n 2 >&2

table=$(mktemp)
log=$(mktemp)
trap 'rm -f "$table" "$log"' EXIT

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
t0=$(date +%s)
status=0
PARLA_RELIABILITY_ROUNDS=$ROUNDS \
PARLA_RELIABILITY_HTTP_CLIENTS=$CLIENTS \
PARLA_RELIABILITY_PAUSE_MS=$PAUSE_MS \
PARLA_RELIABILITY_KILL_WITHIN_MS=$KILL_WITHIN_MS \
PARLA_RELIABILITY_SEED=$SEED \
PARLA_RELIABILITY_REPORT=$table \
    cargo test --release --locked --test reliability kill9_rounds_under_mixed_load \
    -- --exact --nocapture >"$log" 2>&1 || status=$?
seconds=$(($(date +%s) - t0))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

faults=""
if [ "$FAULTS" = 1 ]; then
    flog=$(mktemp)
    fstatus=0
    cargo test --release --locked --test reliability -- --skip kill9_rounds --nocapture \
        >"$flog" 2>&1 || fstatus=$?
    faults=$(grep -E '^(SMSC faults|modem faults):|^test .* \.\.\. |^test result' "$flog" || true)
    [ "$fstatus" = 0 ] || faults="$faults
FAILED (exit $fstatus): $(grep -m1 -A3 panicked "$flog" || true)"
    rm -f "$flog"
fi

{
    echo "# Reliability: kill -9 under mixed load, $(date -u +%Y-%m-%d)"
    echo
    echo "Commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src tests || echo ' (with local changes)'),"
    echo "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')),"
    echo "load average $load_before before and $load_after after; started $started, $seconds s in all."
    echo
    echo '```sh'
    echo "ROUNDS=$ROUNDS CLIENTS=$CLIENTS PAUSE_MS=$PAUSE_MS KILL_WITHIN_MS=$KILL_WITHIN_MS SEED=$SEED bash bench/reliability.sh"
    echo '```'
    echo
    if [ "$status" = 0 ]; then
        echo "**Passed**: every check held in every round."
    else
        echo "**FAILED** (exit $status):"
        echo
        echo '```'
        # The whole panic message (it names what did not drain, and why), up to its backtrace.
        grep -v '^20[0-9][0-9]-' "$log" | sed -n '/panicked/,/stack backtrace:/p' | head -n 80 |
            grep . || tail -n 20 "$log"
        echo '```'
    fi
    echo
    if [ -s "$table" ]; then
        cat "$table"
    else
        echo "Rounds finished before the failure:"
        echo
        grep -E '^\| ' "$log" || true
    fi
    echo
    echo "Columns: messages accepted by HTTP (202) and by the SMPP server (ESME_ROK) in the round,"
    echo "stored after the restart, lost; customer replies injected (SMSC \`mo\` and modem"
    echo "\`receive\`), handed over by the simulators (the SMSC's deliver_sm answered OK, the modem's"
    echo "SIM), stored, lost, stored more than once; messages the restart requeued, marked"
    echo "\`possible_duplicate\`, and SMS the SMSC or modem really accepted twice (every one of them"
    echo "marked); distinct webhook events and repeated deliveries of an event id (same body); ESME"
    echo "submits of the round that got their receipt; time from the restart to everything drained."
    if [ -n "$faults" ]; then
        echo
        echo "Fault tests (same file, release binary):"
        echo
        echo '```'
        echo "$faults"
        echo '```'
    fi
} >"$REPORT"

cat "$REPORT"
exit "$status"
