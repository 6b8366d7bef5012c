#!/usr/bin/env python3
"""SMPP server benchmark: an ESME not written here submits through parla to a simulated SMSC.

    python3 bench/smpp_server.py
    MESSAGES=100000 WINDOW=100 python3 bench/smpp_server.py

tests/interop/esme.js (on the npm package smpp; needs `npm ci --prefix tests/interop`) binds
as a transceiver to a fresh release daemon's SMPP server and submits MESSAGES short GSM texts
with registered_delivery 1, at most WINDOW unanswered. parla queues each durably before its
submit_sm_resp, sends it over one [[smpp.client]] link (window 100) to `parla sim smsc
--quiet`, correlates the carrier's receipt, and delivers its own receipt back to the ESME.

Reported: submit_sm/s accepted (MESSAGES / time until the last submit_sm_resp), receipts
returned/s (MESSAGES / time until the ESME has every receipt), the daemon's CPU time per
message and its peak RSS (VmHWM). Prints a Markdown report. Only 127.0.0.1 is used.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smpp import (PARLA, ROOT, _reachable, cpu_s, free_port, get, rss_peak_mib,  # noqa: E402
                  start_sink, wait)

ESME = os.path.join(ROOT, "tests", "interop", "esme.js")
MESSAGES = int(os.environ.get("MESSAGES", "100000"))
WINDOW = int(os.environ.get("WINDOW", "100"))
PASSWORD = "bench1"


def hash_password():
    out = subprocess.run([PARLA, "hash-password"], input=PASSWORD + "\n", capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def events(proc):
    """The ESME's JSON lines, one at a time."""
    for line in proc.stdout:
        yield json.loads(line)


def run(work):
    log = open(os.path.join(work, "sink.log"), "w")
    sink, smsc_port = start_sink("sim", log)
    api_port, smpp_port = free_port(), free_port()
    config = os.path.join(work, "parla.toml")
    with open(config, "w") as f:
        f.write(f"""[http]
listen = "127.0.0.1:{api_port}"
[store]
path = "{os.path.join(work, 'store')}"
[sim]
enabled = false
[smpp.server]
enabled = true
listen = "127.0.0.1:{smpp_port}"
[[smpp.server.account]]
system_id = "bench"
password_hash = "{hash_password()}"
window = {max(WINDOW, 1)}
deliver_window = 100
[[smpp.client]]
name = "carrier"
host = "127.0.0.1"
port = {smsc_port}
system_id = "parla"
password = "secret"
window = 100
source = "Shop"
""")
    daemon_log = open(os.path.join(work, "parla.log"), "w")
    daemon = subprocess.Popen([PARLA, "serve", "--config", config], stderr=daemon_log,
                              env={**os.environ, "RUST_LOG": "warn"})
    api = f"http://127.0.0.1:{api_port}"
    wait("the daemon", lambda: _reachable(api), timeout=60)
    wait("the carrier link", lambda: get(api + "/v1/channels")["items"][0]["state"] == "up",
         timeout=60)
    esme = subprocess.Popen(["node", ESME], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, bufsize=1)
    stream = events(esme)
    next(stream)  # ready

    def send(line):
        esme.stdin.write(line + "\n")
        esme.stdin.flush()

    send(f"connect b {smpp_port} trx bench {PASSWORD}")
    bound = next(e for e in stream if e["event"] == "bind")
    if bound["status"] != 0:
        raise SystemExit(f"bind refused: {bound}")
    cpu_before = cpu_s(daemon.pid)
    send(f"bench b {MESSAGES} {WINDOW} +393471234567 Shop")
    done = next(e for e in stream if e["event"] == "bench_done")
    print(f"submits answered: {done}", file=sys.stderr)
    receipts = next(e for e in stream if e["event"] == "receipts_done")
    cpu = cpu_s(daemon.pid) - cpu_before
    peak = rss_peak_mib(daemon.pid)
    send("quit")
    esme.wait(timeout=10)
    daemon.terminate()
    daemon.wait(timeout=60)
    sink.terminate()
    return {
        "accepted": done["accepted"],
        "refused": done["refused"],
        "submit_s": done["seconds"],
        "receipts": receipts["count"],
        "receipts_s": receipts["seconds"],
        "cpu_us": cpu / max(MESSAGES, 1) * 1e6,
        "rss": peak,
    }


def main():
    subprocess.run(["cargo", "build", "--release", "--bin", "parla"], cwd=ROOT, check=True)
    with tempfile.TemporaryDirectory(prefix="parla-smpp-server-bench.") as work:
        r = run(work)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    print(f"# parla SMPP server benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print()
    print(f"Command: `MESSAGES={MESSAGES} WINDOW={WINDOW} python3 bench/smpp_server.py` at "
          f"{commit}, {os.cpu_count()} CPUs (daemon, ESME and SMSC share them).")
    print()
    print("| messages | window | accepted | refused | submit_sm/s accepted | receipts returned "
          "| receipts returned/s | daemon CPU us/msg | peak RSS MiB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {MESSAGES} | {WINDOW} | {r['accepted']} | {r['refused']} "
          f"| {r['accepted'] / r['submit_s']:.0f} | {r['receipts']} "
          f"| {r['receipts'] / r['receipts_s']:.0f} | {r['cpu_us']:.0f} | {r['rss']:.0f} |")


if __name__ == "__main__":
    main()
