#!/usr/bin/env python3
"""End-to-end SMPP benchmark: HTTP POST -> store -> SMPP link -> SMSC -> receipt -> delivered.

    python3 bench/smpp.py
    MESSAGES=50000 CLIENTS=64 WINDOWS="10 100" SINKS="sim node" python3 bench/smpp.py

For each sink and window: a fresh release daemon with one [[smpp.client]] transceiver link
(registered_delivery on, no rate limit) to a fresh SMSC on loopback, then the intake load
generator (examples/intake_load.rs) POSTs MESSAGES messages with CLIENTS clients while the link
sends them. The run ends when no message is queued, sending or sent (each got its receipt).

Sinks: "sim" is `parla sim smsc --quiet` (this project's simulated SMSC), "node" is
tests/interop/smsc.js on the npm package smpp (not written here; needs `npm ci --prefix
tests/interop`). Both answer each submit_sm and send a receipt shortly after.

Reported, from the messages' own histories (GET /v1/messages, paged) after the run:
- end to end msgs/s: MESSAGES / (last "delivered" - first acceptance);
- submitted msgs/s: MESSAGES / (last "sent" - first acceptance);
- receipts correlated/s: MESSAGES / (last "delivered" - first "delivered");
- POST -> submit_sm p50/p99: acceptance (the 202) to the hand-over to the link ("sending");
  POST -> submit_sm_resp p50/p99: acceptance to "sent" (the SMSC answered the submit_sm);
- intake msgs/s and p99 as the generator saw them; the daemon's CPU time per message (user +
  system, from the first POST until every receipt is in) and its peak RSS (VmHWM).
Prints a Markdown report. Only 127.0.0.1 is used.
"""

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARLA = os.path.join(ROOT, "target", "release", "parla")
GEN = os.path.join(ROOT, "target", "release", "examples", "intake_load")
NODE_SMSC = os.path.join(ROOT, "tests", "interop", "smsc.js")
MESSAGES = int(os.environ.get("MESSAGES", "50000"))
CLIENTS = int(os.environ.get("CLIENTS", "64"))
WINDOWS = [int(w) for w in os.environ.get("WINDOWS", "10 100").split()]
SINKS = os.environ.get("SINKS", "sim node").split()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def wait(what, check, timeout=600, every=0.05):
    start = time.time()
    while True:
        value = check()
        if value:
            return value
        if time.time() - start > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(every)


def start_sink(kind, log):
    if kind == "sim":
        cmd = [PARLA, "sim", "smsc", "--listen", "127.0.0.1:0", "--quiet",
               "--receipt-delay-ms", "50"]
    else:
        cmd = ["node", NODE_SMSC, "0", "--quiet", "--receipt-delay-ms", "50"]
    sink = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                            text=True)
    line = sink.stdout.readline()
    ready = json.loads(line)
    port = ready.get("port") or int(ready["addr"].rsplit(":", 1)[1])
    return sink, port


def ms(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000.0


def pct(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * p / 100.0))]


def all_messages(api):
    out, cursor = [], None
    while True:
        url = api + "/v1/messages?limit=500" + (f"&cursor={cursor}" if cursor else "")
        page = get(url)
        out.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return out


def count(api, status):
    return len(get(f"{api}/v1/messages?status={status}&limit=500")["items"])


def cpu_s(pid):
    """User + system CPU seconds the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_peak_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def run_case(work, sink_kind, window):
    case = os.path.join(work, f"{sink_kind}-{window}")
    os.makedirs(case)
    log = open(os.path.join(case, "sink.log"), "w")
    sink, smsc_port = start_sink(sink_kind, log)
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    with open(os.path.join(case, "parla.toml"), "w") as f:
        f.write(
            f'[http]\nlisten = "127.0.0.1:{port}"\n'
            f'[store]\npath = "{case}/store"\n'
            f'[[smpp.client]]\nname = "smsc"\nhost = "127.0.0.1"\nport = {smsc_port}\n'
            f'system_id = "bench"\npassword = "bench"\nwindow = {window}\n'
        )
    daemon_log = open(os.path.join(case, "daemon.log"), "w")
    daemon = subprocess.Popen(
        [PARLA, "serve", "--config", os.path.join(case, "parla.toml")],
        stdout=daemon_log, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"},
    )
    try:
        wait("the link to be up",
             lambda: _reachable(api) and get(api + "/v1/channels")["items"][0]["state"] == "up",
             timeout=60)
        cpu0 = cpu_s(daemon.pid)
        gen = subprocess.run(
            [GEN, "--url", api, "--clients", str(CLIENTS), "--messages", str(MESSAGES)],
            capture_output=True, text=True, check=True,
        )
        intake = json.loads(gen.stdout.strip().splitlines()[-1])
        wait("every message to be settled",
             lambda: all(count(api, s) == 0 for s in ("queued", "sending", "sent")),
             every=0.5)
        cpu = cpu_s(daemon.pid) - cpu0
        peak = rss_peak_mib(daemon.pid)
        messages = all_messages(api)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        sink.stdin.write("quit\n")
        sink.stdin.flush()
        try:
            sink.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sink.kill()
    created, sending, sent, delivered, failed = [], [], [], [], 0
    for m in messages:
        at = {}
        for t in m["history"]:
            at.setdefault(t["status"], ms(t["at"]))
        if m["status"] != "delivered":
            failed += 1
            continue
        created.append(at["queued"])
        sending.append(at["sending"] - at["queued"])
        sent.append(at["sent"])
        delivered.append(at["delivered"])
    first = min(created)
    sent_lat = [s - c for s, c in zip(sent, created)]
    return {
        "sink": sink_kind,
        "window": window,
        "messages": len(messages),
        "not_delivered": failed,
        "e2e": len(delivered) / ((max(delivered) - first) / 1000.0),
        "submitted": len(sent) / ((max(sent) - first) / 1000.0),
        "receipts": len(delivered) / max((max(delivered) - min(delivered)) / 1000.0, 1e-3),
        "post_to_submit_p50": pct(sending, 50),
        "post_to_submit_p99": pct(sending, 99),
        "post_to_resp_p50": pct(sent_lat, 50),
        "post_to_resp_p99": pct(sent_lat, 99),
        "intake": intake["msgs_per_s"],
        "intake_p99": intake["p99_ms"],
        "rss": peak,
        "cpu_us": cpu / max(len(messages), 1) * 1e6,
    }


def _reachable(api):
    try:
        get(api + "/healthz")
        return True
    except Exception:
        return False


def main():
    subprocess.run(["cargo", "build", "--release", "--bin", "parla", "--example", "intake_load"],
                   cwd=ROOT, check=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="parla-smpp-bench.") as work:
        for sink in SINKS:
            for window in WINDOWS:
                print(f"== {sink} sink, window {window}", file=sys.stderr)
                rows.append(run_case(work, sink, window))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    print(f"# parla SMPP end-to-end benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print()
    print(f"Command: `MESSAGES={MESSAGES} CLIENTS={CLIENTS} WINDOWS=\"{' '.join(map(str, WINDOWS))}\" "
          f"SINKS=\"{' '.join(SINKS)}\" python3 bench/smpp.py` at {commit}, "
          f"{os.cpu_count()} CPUs (daemon, sink and load generator share them).")
    print()
    print("| sink | window | messages | not delivered | end to end msgs/s | submitted msgs/s "
          "| receipts correlated/s | POST->submit p50/p99 ms | POST->submit_resp p50/p99 ms "
          "| intake msgs/s (p99 ms) | daemon CPU us/msg | peak RSS MiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['sink']} | {r['window']} | {r['messages']} | {r['not_delivered']} "
              f"| {r['e2e']:.0f} | {r['submitted']:.0f} | {r['receipts']:.0f} "
              f"| {r['post_to_submit_p50']:.0f} / {r['post_to_submit_p99']:.0f} "
              f"| {r['post_to_resp_p50']:.0f} / {r['post_to_resp_p99']:.0f} "
              f"| {r['intake']:.0f} ({r['intake_p99']:.0f}) | {r['cpu_us']:.0f} | {r['rss']:.0f} |")


if __name__ == "__main__":
    main()
