#!/usr/bin/env bash
# Scale figures: intake throughput and latency with 10k, 100k and 1M messages already queued,
# and the time the daemon takes to start (ready on /healthz) on such a store. Runs
# bench/intake.sh's "queued" scenario once per size and writes a summary to
# bench/results/scale-<date>.md (each size's full report: bench/results/scale-<date>-<N>.md).
#
#   bash bench/scale.sh
#
# Environment (optional): SIZES="10000 100000 1000000", MESSAGES=100000 (measured per size).
# Run it on an otherwise idle machine: every figure is CPU-bound.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SIZES=${SIZES:-"10000 100000 1000000"}
MESSAGES=${MESSAGES:-100000}
DAY=$(date -u +%Y-%m-%d)
SUMMARY=bench/results/scale-$DAY.md
mkdir -p bench/results

rows=()
for n in $SIZES; do
    echo "== $n queued" >&2
    PREFILL=$n SCENARIOS=queued MESSAGES=$MESSAGES bash bench/intake.sh >&2 || true
    report=bench/results/scale-$DAY-$n.md
    mv "bench/results/intake-$DAY.md" "$report"
    # The measured row ("N already queued"), and the restart line of the details.
    row=$(grep -F "| $n already queued" "$report" | head -n 1 || true)
    ready=$(sed -nE 's/.*ready again in ([0-9.]+) s with RSS ([0-9.]+) MiB.*/\1 \2/p' "$report" | head -n 1)
    stop=$(sed -nE 's/.*stopped in ([0-9.]+) s, ready again.*/\1/p' "$report" | head -n 1)
    if [[ -z $row ]]; then
        rows+=("| $n | (failed: see $report) | | | | | |")
        continue
    fi
    # | label | clients | accepted of M | msgs/s | p50 | p99 | rss |
    IFS='|' read -r _ _ _ _ rate p50 p99 rss _ <<<"$row"
    rows+=("| $n | ${rate// /} | ${p50// /} | ${p99// /} | ${rss// /} | ${ready%% *} | ${ready##* } | ${stop} |")
done

{
    echo "# parla at scale, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Command: \`SIZES=\"$SIZES\" MESSAGES=$MESSAGES bash bench/scale.sh\` at commit $(git rev-parse --short HEAD)"
    echo "($(nproc) CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo))."
    echo
    echo "Per size: N messages submitted at 256 clients with no channel (so they stay queued), the"
    echo "daemon stopped and started again on that store (start = until /healthz answers), then"
    echo "$MESSAGES more at 256 clients. Full reports: bench/results/scale-$DAY-<N>.md."
    echo
    echo "| queued | msgs/s | p50 ms | p99 ms | peak RSS MiB | start s | RSS at ready MiB | stop s |"
    echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    printf '%s\n' "${rows[@]}"
} | tee "$SUMMARY"
