#!/usr/bin/env bash
# Extra cases: fjall with an 8 MiB memtable. Same load rule as run.sh.
set -euo pipefail
cd "$(dirname "$0")"
N=${1:-200000}
cargo build --release -q
for rep in 1 2; do for variant in intake full; do for G in 16 64; do
  waited=0
  while :; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    awk -v l="$load" 'BEGIN{exit !(l < 1.0)}' && break
    [ "$waited" -ge 180 ] && break
    sleep 10; waited=$((waited + 10))
  done
  start_load=$(cut -d' ' -f1 /proc/loadavg)
  line=$(./target/release/storebench fjall-mt8 "$G" "$variant" "$N")
  echo "$line load_at_start=$start_load waited_s=$waited $(date -u +%H:%M:%S)" | tee -a results.txt
done; done; done
