#!/usr/bin/env bash
# Runs every case in its own process; waits for load < 1.0 before each (max 3 min).
# usage: ./run.sh [N]   -> appends result lines to results.txt
set -euo pipefail
cd "$(dirname "$0")"
N=${1:-200000}
BIN=./target/release/storebench
cargo build --release -q
df /tmp | tail -1 | grep -q '^/dev/' || { echo "/tmp is not a disk filesystem" >&2; exit 1; }
for variant in intake full; do
  for G in 16 64; do
    for engine in sled redb fjall; do
      waited=0
      while :; do
        load=$(cut -d' ' -f1 /proc/loadavg)
        awk -v l="$load" 'BEGIN{exit !(l < 1.0)}' && break
        if [ "$waited" -ge 180 ]; then break; fi
        sleep 10; waited=$((waited + 10))
      done
      start_load=$(cut -d' ' -f1 /proc/loadavg)
      line=$("$BIN" "$engine" "$G" "$variant" "$N")
      echo "$line load_at_start=$start_load waited_s=$waited $(date -u +%H:%M:%S)" | tee -a results.txt
    done
  done
done
