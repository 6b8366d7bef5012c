#!/usr/bin/env python3
"""Send throughput through simulated GSM modems on real ptys.

    python3 bench/modem.py                 # 1 and 4 modems, modem latency 0 and 20 ms
    MESSAGES=4000 python3 bench/modem.py

For each case: start the release daemon with K [[modem]] channels whose ports do not exist yet,
queue MESSAGES messages over HTTP (they wait: no modem is up), then start K `parla sim modem`
processes on those ports and time from the moment every modem is up until every message is
accepted by a modem (sum of the channels' "sent" counters). Status reports are off, so the serial
lines carry only sends: AT+CMGS=<n> / prompt / PDU / +CMGS: <mr> and OK, two modem answers per
message, each delayed by the modem's latency.

Per message and modem, time = the modem's own answer time (2 x latency) + what parla adds
(dispatch, claim, PDU encoding, reading and parsing the answers, the pty round trips). With
latency 0 the time per message is what parla adds; with latency L, parla's share of the line
time is (time - 2L) / time. "machine CPU busy" is the share of all CPUs busy during the timed part (daemon, simulators
and anything else running): near 100% means the machine, not the serial lines, is the limit.
Prints a Markdown table.
"""

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
MESSAGES = int(os.environ.get("MESSAGES", "2000"))
CASES = [(1, 0), (4, 0), (1, 20), (4, 20)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def channels(api):
    return get(api + "/v1/channels")["items"]


def wait(what, check, timeout=120):
    start = time.time()
    while True:
        value = check()
        if value:
            return value
        if time.time() - start > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)


def run_case(work, modems, latency_ms):
    case = os.path.join(work, f"{modems}x{latency_ms}")
    os.makedirs(case)
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    config = [f'[http]\nlisten = "127.0.0.1:{port}"\n', f'[store]\npath = "{case}/store"\n']
    for i in range(modems):
        config.append(
            f'[[modem]]\nname = "m{i}"\nport = "{case}/m{i}"\nstatus_reports = false\n'
            'health_interval = "1h"\nsweep_interval = "1h"\nreopen_max_backoff = "100ms"\n'
        )
    with open(os.path.join(case, "parla.toml"), "w") as f:
        f.write("".join(config))
    log = open(os.path.join(case, "daemon.log"), "w")
    daemon = subprocess.Popen(
        [PARLA, "serve", "--config", os.path.join(case, "parla.toml")],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"},
    )
    sims = []
    try:
        wait("the API", lambda: _reachable(api))
        load = subprocess.run(
            ["cargo", "run", "--quiet", "--release", "--example", "intake_load", "--",
             "--url", api, "--clients", "16", "--messages", str(MESSAGES)],
            cwd=ROOT, check=True, capture_output=True, text=True,
        )
        queued = json.loads(load.stdout.strip().splitlines()[-1])
        assert queued["accepted"] == MESSAGES, queued
        for i in range(modems):
            sims.append(subprocess.Popen(
                [PARLA, "sim", "modem", "--link", f"{case}/m{i}", "--latency-ms", str(latency_ms)],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        wait("every modem up", lambda: all(c["state"] == "up" for c in channels(api)))
        cpu_before = _cpu_times()
        start = time.time()
        wait("every message sent",
             lambda: sum(c["sent"] for c in channels(api)) >= MESSAGES, timeout=600)
        seconds = time.time() - start
        busy, total = (a - b for a, b in zip(_cpu_times(), cpu_before))
        per_modem = [c["sent"] for c in channels(api)]
        rss_kb = _rss_kb(daemon.pid)
        return seconds, per_modem, rss_kb, busy / total if total else 0.0
    finally:
        for sim in sims:
            sim.kill()
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)


def _reachable(api):
    try:
        get(api + "/healthz")
        return True
    except OSError:
        return False


def _cpu_times():
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main():
    subprocess.run(["cargo", "build", "--quiet", "--release", "--bin", "parla", "--example",
                    "intake_load"], cwd=ROOT, check=True)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for modems, latency in CASES:
            seconds, per_modem, rss, cpu = run_case(work, modems, latency)
            rate = MESSAGES / seconds
            per_message_ms = 1000 * seconds * modems / MESSAGES
            own_ms = 2 * latency
            share = (per_message_ms - own_ms) / per_message_ms
            rows.append((modems, latency, rate, per_message_ms, own_ms, share, per_modem, rss, cpu))
            print(f"{modems} modem(s), latency {latency} ms: {rate:.0f} msg/s", file=sys.stderr)
    print(f"{MESSAGES} messages, status reports off, commit "
          f"{subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True).stdout.strip()}\n")
    print("| modems | modem latency | msgs/s | ms per message per modem | modem's own ms | parla's share of line time | sent per modem | peak RSS MiB | machine CPU busy |")
    print("|---|---|---|---|---|---|---|---|---|")
    for modems, latency, rate, per_msg, own, share, per_modem, rss, cpu in rows:
        print(f"| {modems} | {latency} ms | {rate:,.0f} | {per_msg:.2f} | {own} | {share:.0%} | "
              f"{'/'.join(map(str, per_modem))} | {rss / 1024:.0f} | {cpu:.0%} |")


if __name__ == "__main__":
    main()
