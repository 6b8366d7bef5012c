#!/usr/bin/env bash
# Shows that every 202 is written only after the store's journal was fdatasync'ed: runs the release
# daemon (simulated channel on) under strace, has one client POST messages one at a time, and
# checks that between any two 202 answers (and before the first) an fdatasync of the journal
# returned. One client, so each answer waits for its own sync.
#
#   bash bench/durability.sh            # MESSAGES=300 by default
#
# Needs: strace, python3, cargo. Only 127.0.0.1 is used.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MESSAGES=${MESSAGES:-300}
cargo build --release --bin parla --example intake_load >/dev/null 2>&1
WORK=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/parla.toml" <<TOML
[http]
listen = "127.0.0.1:$PORT"
[store]
path = "$WORK/store"
[sim]
enabled = true
TOML
strace -f -tt -y -e trace=fdatasync,fsync,writev,write -o "$WORK/strace.log" \
    target/release/parla serve --config "$WORK/parla.toml" >"$WORK/parla.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
target/release/examples/intake_load --url "http://127.0.0.1:$PORT" --clients 1 --messages "$MESSAGES"
# SIGTERM to the daemon itself (strace would only detach), then strace ends with it.
pkill -TERM -f "parla serve --config $WORK/parla.toml" || true
wait "$PID" || true
python3 - "$WORK/strace.log" <<'PY'
import bisect, sys

def at(line):
    h, m, s = line.split()[1].split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)

syncs, answers, pending = [], [], set()
for line in open(sys.argv[1]):
    pid = line.split()[0]
    done = line.rstrip().endswith("= 0")
    if "fdatasync(" in line and ".jnl>" in line:
        if done:
            syncs.append(at(line))
        elif "<unfinished" in line:
            pending.add(pid)
    elif "fdatasync resumed" in line and pid in pending:
        pending.discard(pid)
        if done:
            syncs.append(at(line))
    elif "HTTP/1.1 202" in line:
        answers.append(at(line))
syncs.sort()
answers.sort()
unsynced, previous = 0, 0.0
for a in answers:
    i = bisect.bisect_left(syncs, a)
    if i == 0 or syncs[i - 1] <= previous:
        unsynced += 1
    previous = a
print(f"{len(answers)} answers 202; {len(syncs)} fdatasync of the journal returned; "
      f"202 answers with no journal fdatasync returned since the previous 202: {unsynced}")
sys.exit(1 if unsynced or not answers else 0)
PY
