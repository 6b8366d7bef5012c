#!/usr/bin/env bash
# End-to-end intake benchmark of parla: builds the release daemon and the load generator
# (examples/intake_load.rs), runs each scenario against a fresh daemon on loopback with its own
# temporary store, and prints a Markdown report that is also saved to
# bench/results/intake-<date>.md.
#
#   bash bench/intake.sh
#
# Scenarios (every request must be answered 202, i.e. durably accepted):
#   - empty store, simulated channel on (default delays, failure_share 0): 1, 16, 256 clients;
#     the 256-client run is repeated (REPEAT_256 times) and judged by its median, as this VM's
#     speed swings by up to 2x within an hour
#   - empty store, simulated channel off: 256 clients (like-for-like baseline for the next one)
#   - prefill: PREFILL messages at 256 clients into a store with the channel off, so they stay
#     queued; then a fresh daemon on that store, and MESSAGES more at 256 clients; then the
#     empty store with the channel off again (the queued run is compared with the mean of both
#     empty runs, as this VM's speed drifts within minutes)
#
# Environment (all optional):
#   MESSAGES=100000          messages per measured scenario
#   MESSAGES_1CLIENT=...     messages for the 1-client scenario (default: MESSAGES); each of its
#                            requests waits for its own disk sync, so it is the slow one
#   REPEAT_256=3             runs of the 256-client channel-on scenario (the targets take the median)
#   PREFILL=1000000          messages queued before the "already queued" scenario (0 skips it)
#   SCENARIOS="c1 c16 c256 c256off queued"
#                            which scenarios to run (to rerun one that was disturbed)
#   TMPDIR=/tmp              where the temporary stores go (its filesystem is reported)
#
# Each run rewrites the day's report file, so commit the one from a full run.
# Only 127.0.0.1 is ever used. Needs: cargo, curl, Linux /proc.

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

MESSAGES=${MESSAGES:-100000}
MESSAGES_1CLIENT=${MESSAGES_1CLIENT:-$MESSAGES}
REPEAT_256=${REPEAT_256:-3}
PREFILL=${PREFILL:-1000000}
SCENARIOS=${SCENARIOS:-"c1 c16 c256 c256off queued"}
BIN=target/release/parla
GEN=target/release/examples/intake_load
RESULTS_DIR=bench/results
REPORT=$RESULTS_DIR/intake-$(date -u +%Y-%m-%d).md
READY_TIMEOUT_S=120
STOP_TIMEOUT_S=120

# Settings come from the file we write, never from the caller's environment.
for var in $(compgen -e); do
    if [[ $var == PARLA_* ]]; then
        unset "$var"
    fi
done
export RUST_LOG=info

for tool in cargo curl; do
    command -v "$tool" >/dev/null || { echo "intake.sh: $tool is required" >&2; exit 2; }
done

# The terminal, for progress lines while stderr of a run is captured.
exec 3>&2

WORK=$(mktemp -d "${TMPDIR:-/tmp}/parla-intake.XXXXXX")
DAEMON_PID=""
PORT=""
FAILED=0

cleanup() {
    if [[ -n $DAEMON_PID ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -TERM "$DAEMON_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$DAEMON_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$DAEMON_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$RESULTS_DIR"
: >"$REPORT"

# Prints a line of the report and saves it.
say() {
    printf '%s\n' "$*" | tee -a "$REPORT"
}

# Prints a file of the report in a code block.
say_file() {
    say '```'
    tee -a "$REPORT" <"$1"
    say '```'
}

# A TCP port on 127.0.0.1 that nothing answers on.
free_port() {
    local port
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "intake.sh: no free port found" >&2
    return 1
}

# JSON number field of the generator's one-line output.
jfield() {
    sed -nE "s/.*\"$2\":([^,}]*).*/\1/p" "$1"
}

# CPU seconds (user + system) the daemon has used so far.
daemon_cpu_s() {
    local ticks
    ticks=$(sed -E 's/^.*\) //' "/proc/$DAEMON_PID/stat" | awk '{print $12 + $13}')
    awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t / hz}'
}

# CPU seconds of the whole machine so far: "<busy> <steal>", where busy is user + nice + system
# + irq + softirq time (interrupt time is also charged to the process it interrupted, so only
# the sum is comparable with per-process times), and steal is time the hypervisor gave to other
# guests.
machine_cpu_s() {
    awk -v hz="$(getconf CLK_TCK)" \
        '/^cpu / {printf "%.1f %.1f", ($2 + $3 + $4 + $7 + $8) / hz, $9 / hz}' /proc/stat
}

# Resident set of the daemon now, in MiB.
daemon_rss_mib() {
    awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$DAEMON_PID/status"
}

# Peak resident set of the daemon so far, in MiB.
daemon_peak_rss_mib() {
    awk '/^VmHWM:/ {printf "%.1f", $2 / 1024}' "/proc/$DAEMON_PID/status"
}

# Accept-queue overflows of the whole machine (connections the kernel dropped).
listen_overflows() {
    awk '/^TcpExt:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "ListenOverflows") c = i; h = 1 }
                      else print $c }' /proc/net/netstat
}

# start_daemon DIR SIM_ENABLED: writes DIR/parla.toml, starts the daemon and waits for /healthz.
start_daemon() {
    local dir=$1 sim=$2
    PORT=$(free_port)
    mkdir -p "$dir"
    cat >"$dir/parla.toml" <<EOF
[http]
listen = "127.0.0.1:$PORT"

[store]
path = "$dir/store"

[sim]
enabled = $sim
failure_share = 0.0
EOF
    local t0 t1
    t0=$(date +%s.%N)
    "$BIN" serve --config "$dir/parla.toml" >>"$dir/parla.log" 2>&1 &
    DAEMON_PID=$!
    for _ in $(seq 1 $((READY_TIMEOUT_S * 10))); do
        if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
            say "**The daemon exited while starting.** Its log:"
            tail -n 30 "$dir/parla.log" >"$WORK/tail"
            say_file "$WORK/tail"
            DAEMON_PID=""
            return 1
        fi
        if curl -fsS --max-time 1 "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then
            t1=$(date +%s.%N)
            STARTUP_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
            READY_RSS=$(daemon_rss_mib)
            return 0
        fi
        sleep 0.1
    done
    say "**The daemon was not ready after ${READY_TIMEOUT_S} s.**"
    return 1
}

# stop_daemon DIR: SIGTERM, wait; records STOP_S and STOP_RC.
stop_daemon() {
    local dir=$1 t0 t1
    t0=$(date +%s.%N)
    kill -TERM "$DAEMON_PID"
    for _ in $(seq 1 $((STOP_TIMEOUT_S * 10))); do
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$DAEMON_PID" 2>/dev/null; then
        say "**The daemon did not stop within ${STOP_TIMEOUT_S} s of SIGTERM; killed.**"
        kill -KILL "$DAEMON_PID" 2>/dev/null || true
        FAILED=1
    fi
    STOP_RC=0
    wait "$DAEMON_PID" || STOP_RC=$?
    t1=$(date +%s.%N)
    STOP_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
    DAEMON_PID=""
    if [[ $STOP_RC -ne 0 ]]; then
        say "**The daemon exited with status $STOP_RC after SIGTERM.** Its log ends:"
        tail -n 20 "$dir/parla.log" >"$WORK/tail"
        say_file "$WORK/tail"
        FAILED=1
    fi
}

ROWS=()
DETAILS=()

# run_load NAME LABEL CLIENTS MESSAGES DIR: one generator run against the running daemon;
# adds a table row. Returns non-zero if a request failed or the daemon died.
run_load() {
    local name=$1 label=$2 clients=$3 messages=$4 dir=$5
    local out="$WORK/$name.json" err="$WORK/$name.err" rc=0 cpu0 cpu1 ovf0 ovf1 label_long
    local mach0 mach1 gen_cpu TIMEFORMAT='%U %S'
    echo "== $label: $clients clients, $messages messages" >&2
    label_long="$label, $clients clients"
    cpu0=$(daemon_cpu_s)
    mach0=$(machine_cpu_s)
    ovf0=$(listen_overflows)
    # stdout (the JSON line) to a file; stderr (progress, failures) to the terminal and a file;
    # the generator's own CPU time (bash's `time`) to another.
    { time "$GEN" --url "http://127.0.0.1:$PORT" --clients "$clients" --messages "$messages" \
        2>&1 >"$out" | tee "$err" >&3; } 2>"$WORK/$name.time" || rc=$?
    ovf1=$(listen_overflows)
    mach1=$(machine_cpu_s)
    gen_cpu=$(awk 'END {printf "%.1f", $1 + $2}' "$WORK/$name.time")
    if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
        say "**$label_long: the daemon exited during the run.** Its log ends:"
        tail -n 30 "$dir/parla.log" >"$WORK/tail"
        say_file "$WORK/tail"
        DAEMON_PID=""
        FAILED=1
        return 1
    fi
    cpu1=$(daemon_cpu_s)
    local rss
    rss=$(daemon_peak_rss_mib)
    if [[ $rc -ne 0 || ! -s $out ]]; then
        say "**$label_long: the load generator failed (exit $rc).** Its report:"
        grep -v '^intake_load: [0-9]*/' "$err" >"$WORK/tail" || true
        say_file "$WORK/tail"
        FAILED=1
    fi
    if [[ -s $out ]]; then
        ROWS+=("| $label | $clients | $(jfield "$out" accepted) of $messages | $(jfield "$out" msgs_per_s) | $(jfield "$out" p50_ms) | $(jfield "$out" p99_ms) | $rss |")
        local daemon_cpu machine
        daemon_cpu=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN {printf "%.1f", b - a}')
        echo "$daemon_cpu" >"$WORK/$name.cpu"
        machine=$(awk -v a="$mach0" -v b="$mach1" -v d="$daemon_cpu" -v g="$gen_cpu" -v n="$(nproc)" \
            -v s="$(jfield "$out" seconds)" 'BEGIN {
                split(a, x, " "); split(b, y, " ")
                printf "everything else %.1f, stolen by the hypervisor %.1f (of %.1f available)",
                    y[1] - x[1] - d - g, y[2] - x[2], n * s }')
        DETAILS+=("- $label_long: \`$(cat "$out")\`")
        DETAILS+=("  - CPU seconds: daemon $daemon_cpu, generator $gen_cpu, $machine")
        DETAILS+=("  - daemon RSS at ready $READY_RSS MiB (startup ${STARTUP_S} s), peak $rss MiB; store $(du -sh "$dir/store" | cut -f1) on disk; listen-queue overflows (machine-wide) $((ovf1 - ovf0))")
    fi
    return "$rc"
}

# --- build -------------------------------------------------------------------------------------

echo "== building" >&2
cargo build --release --bin parla --example intake_load >&2

# --- machine facts -----------------------------------------------------------------------------

say "# parla intake benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
say ""
say "Command: \`MESSAGES=$MESSAGES MESSAGES_1CLIENT=$MESSAGES_1CLIENT REPEAT_256=$REPEAT_256 PREFILL=$PREFILL SCENARIOS=\"$SCENARIOS\" bash bench/intake.sh\`"
say ""
say "## Machine"
say ""
say "- CPUs (nproc): $(nproc)"
say "- CPU model: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
say "- memory: $(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
say "- kernel: $(uname -sr)"
if command -v findmnt >/dev/null; then
    say "- temp dir filesystem: $(findmnt -no FSTYPE,SOURCE,OPTIONS -T "$WORK" | awk '{print $1 " on " $2 " (" $3 ")"}')"
else
    say "- temp dir filesystem: $(df -PT "$WORK" | awk 'NR == 2 {print $2 " on " $1}')"
fi
say "- rustc: $(rustc --version)"
dirty=$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | wc -l || true)
say "- parla: commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$([[ ${dirty:-0} -gt 0 ]] && echo ", with uncommitted changes in src/ or Cargo files")"
say "- daemon and load generator share the machine; the generator runs on one thread (a single-threaded tokio runtime)"
say ""

# --- scenarios ---------------------------------------------------------------------------------

# scenario NAME LABEL CLIENTS MESSAGES SIM: a fresh daemon and store for one run.
scenario() {
    local name=$1 label=$2 clients=$3 messages=$4 sim=$5 dir="$WORK/$1"
    if ! start_daemon "$dir" "$sim"; then
        FAILED=1
        return 0
    fi
    run_load "$name" "$label" "$clients" "$messages" "$dir" || true
    if [[ -n $DAEMON_PID ]]; then
        stop_daemon "$dir"
    fi
    rm -rf "$dir"
}

want() {
    [[ " $SCENARIOS " == *" $1 "* ]]
}

if want c1; then
    scenario c1 "empty store, sim on" 1 "$MESSAGES_1CLIENT" true
fi
if want c16; then
    scenario c16 "empty store, sim on" 16 "$MESSAGES" true
fi
# The runs of the 256-client channel-on scenario: c256, c256r2, c256r3, ...
C256_RUNS=()
if want c256; then
    for i in $(seq 1 "$REPEAT_256"); do
        name=c256
        label="empty store, sim on"
        if [[ $i -gt 1 ]]; then
            name=c256r$i
        fi
        if [[ $REPEAT_256 -gt 1 ]]; then
            label="$label (run $i of $REPEAT_256)"
        fi
        scenario "$name" "$label" 256 "$MESSAGES" true
        C256_RUNS+=("$name")
    done
fi
if want c256off; then
    scenario c256off "empty store, sim off" 256 "$MESSAGES" false
fi

QUEUED_ROW=""
if want queued && [[ $PREFILL -gt 0 ]]; then
    dir="$WORK/queued"
    if start_daemon "$dir" false; then
        if run_load prefill "prefill (sim off)" 256 "$PREFILL" "$dir"; then
            stop_daemon "$dir"
            prefill_stop_s=$STOP_S
            if start_daemon "$dir" false; then
                DETAILS+=("- daemon restart on the store with $PREFILL queued: stopped in ${prefill_stop_s} s, ready again in ${STARTUP_S} s with RSS $READY_RSS MiB")
                label="$PREFILL already queued, sim off"
                run_load queued "$label" 256 "$MESSAGES" "$dir" || true
                QUEUED_ROW=queued
                if [[ -n $DAEMON_PID ]]; then
                    stop_daemon "$dir"
                fi
            else
                FAILED=1
            fi
        elif [[ -n $DAEMON_PID ]]; then
            stop_daemon "$dir"
        fi
    else
        FAILED=1
    fi
    rm -rf "$dir"
fi
# The empty store once more, right after: the VM's speed drifts within minutes, and the queued
# run is compared with both empty runs around it.
if want c256off && [[ -n $QUEUED_ROW ]]; then
    scenario c256off2 "empty store, sim off (again)" 256 "$MESSAGES" false
fi

# --- report ------------------------------------------------------------------------------------

say "## Results"
say ""
say "Each row is one load-generator run against a daemon started for it (the \"already queued\" row:"
say "restarted on the prefilled store). msgs/s counts 202 responses over the run's wall time;"
say "latency is per request, send to full response. Peak RSS is the daemon's VmHWM after the run."
say "In the details, CPU seconds of the daemon and the generator are their own accounting, and"
say "\"everything else\" is the machine's busy time (/proc/stat, tick-sampled) minus those two: other"
say "processes, kernel threads, sampling error. Near 0 means nothing else competed for the CPUs."
say "Listen-queue overflows are SYNs the kernel dropped at connect time; each costs that client a"
say "1 s retransmit, which shows as a max latency near 1000 ms."
say ""
say "| scenario | clients | messages | msgs/s | p50 ms | p99 ms | peak RSS MiB |"
say "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for row in "${ROWS[@]}"; do
    say "$row"
done
say ""
say "Details:"
say ""
for d in "${DETAILS[@]}"; do
    say "$d"
done
say ""

# --- targets -----------------------------------------------------------------------------------

rate() { [[ -s $WORK/$1.json ]] && jfield "$WORK/$1.json" msgs_per_s || echo ""; }
verdict() { awk "BEGIN {exit !($1)}" && echo "met" || echo "**not met**"; }
# median FIELD RUN...: the median of a field over the runs that finished (of an even count, the
# worse of the two middle ones: the lower rate, the higher latency).
median() {
    local field=$1
    shift
    for r in "$@"; do
        if [[ -s $WORK/$r.json ]]; then
            jfield "$WORK/$r.json" "$field"
        fi
    done | sort -g | awk -v high="$([[ $field == msgs_per_s ]] && echo 0 || echo 1)" \
        '{v[NR] = $1} END {if (NR) print v[high ? int(NR / 2) + 1 : int((NR + 1) / 2)]}'
}

# Daemon CPU microseconds per message of a run.
cpu_per_msg() {
    [[ -s $WORK/$1.cpu && -s $WORK/$1.json ]] || return 0
    awk -v c="$(cat "$WORK/$1.cpu")" -v n="$(jfield "$WORK/$1.json" accepted)" \
        'BEGIN {if (n > 0) printf "%.1f", c * 1e6 / n}'
}

say "## Targets"
say ""
C256_RATE=""
if [[ ${#C256_RUNS[@]} -gt 0 ]]; then
    C256_RATE=$(median msgs_per_s "${C256_RUNS[@]}")
    p99=$(median p99_ms "${C256_RUNS[@]}")
fi
if [[ -n $C256_RATE ]]; then
    all=$(for r in "${C256_RUNS[@]}"; do rate "$r"; done | paste -sd, - | sed 's/,/, /g')
    all_p99=$(for r in "${C256_RUNS[@]}"; do if [[ -s $WORK/$r.json ]]; then jfield "$WORK/$r.json" p99_ms; fi; done | paste -sd, - | sed 's/,/, /g')
    say "- >= 20000 durably accepted msgs/s at 256 clients (empty store, sim on; median of ${#C256_RUNS[@]} runs: $all): $C256_RATE msgs/s, $(verdict "$C256_RATE >= 20000")"
    say "- p99 < 50 ms at 256 clients (median of $all_p99): $p99 ms, $(verdict "$p99 < 50")"
    say "  - daemon CPU per message in those runs: $(for r in "${C256_RUNS[@]}"; do cpu_per_msg "$r"; echo; done | grep . | paste -sd, - | sed 's/,/, /g') µs"
fi
max_rss=$(printf '%s\n' "${ROWS[@]}" | awk -F'|' '{gsub(/ /, "", $8); if ($8 + 0 > m) m = $8 + 0} END {print m + 0}')
say "- peak RSS < 100 MiB in every scenario: at most $max_rss MiB, $(verdict "$max_rss < 100")"
if [[ -n $QUEUED_ROW && -s $WORK/queued.json ]]; then
    q=$(rate queued)
    b=$C256_RATE
    if [[ -n $b ]]; then
        ratio=$(awk -v q="$q" -v b="$b" 'BEGIN {printf "%.2f", q / b}')
        say "- with $PREFILL queued, within 10% of an empty store (empty store, sim on, median $b msgs/s): $q msgs/s = ${ratio}x, $(verdict "$ratio >= 0.9")"
    fi
    # Like for like: the empty store with the channel off, the mean of the runs before and after.
    b=$(for r in c256off c256off2; do rate "$r"; done | awk 'NF {s += $1; n++} END {if (n) printf "%.1f", s / n}')
    if [[ -n $b ]]; then
        ratio=$(awk -v q="$q" -v b="$b" 'BEGIN {printf "%.2f", q / b}')
        say "- with $PREFILL queued, within 10% of an empty store (empty store, sim off, like for like; mean of the runs before and after, $b msgs/s): $q msgs/s = ${ratio}x, $(verdict "$ratio >= 0.9")"
        say "  - daemon CPU per message: empty store $(cpu_per_msg c256off) µs before and $(cpu_per_msg c256off2) µs after, $(cpu_per_msg queued) µs with $PREFILL queued"
    fi
fi
say ""
if [[ $FAILED -ne 0 ]]; then
    say "**Some runs failed; see above.**"
fi
echo "== saved to $REPORT" >&2
exit "$FAILED"
