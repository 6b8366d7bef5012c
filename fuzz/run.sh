#!/usr/bin/env bash
# Runs parla's cargo-fuzz targets for a bounded time each and prints what libFuzzer reported.
#
#   fuzz/run.sh                 every target, FUZZ_SECONDS (default 30) each
#   fuzz/run.sh gsm7 phone      only these
#   FUZZ_SECONDS=600 fuzz/run.sh
#
# Environment:
#   FUZZ_SECONDS     time per target in seconds (default 30)
#   FUZZ_TIMEOUT     seconds one input may take before libFuzzer calls it a hang (default 10)
#   FUZZ_SANITIZER   none (default: parla is safe Rust, and this is ~3x faster) or address
#   FUZZ_KEEP_GOING  1: after a crash, still run the remaining targets (exit status stays 1)
#
# Exit status: 0 when no target crashed, 1 when one did or an input under fuzz/regressions/ still
# crashes (a new crashing input is saved in fuzz/artifacts/<target>/; the panic is printed with
# the frames in parla), 2 on a usage or build problem.
#
# cargo-fuzz passes nightly-only flags to rustc (-Zsanitizer, -Cpasses=sancov-module, ...). With
# only a stable toolchain, RUSTC_BOOTSTRAP=1 lets stable rustc accept them.
set -euo pipefail

cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-30}
timeout=${FUZZ_TIMEOUT:-10}
sanitizer=${FUZZ_SANITIZER:-none}
keep_going=${FUZZ_KEEP_GOING:-0}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz not found; installing it from crates.io" >&2
    cargo install cargo-fuzz --locked
fi

# Fuzz the dependency versions the daemon ships: start from the main crate's lock file (cargo
# then only adds libfuzzer-sys and its few dependencies).
if [[ -f ../Cargo.lock ]]; then
    cp ../Cargo.lock Cargo.lock
fi

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
known=$(cargo fuzz list)
for t in "${targets[@]}"; do
    if ! grep -qx -- "$t" <<<"$known"; then
        echo "unknown target $t; targets are: $(echo $known)" >&2
        exit 2
    fi
done

# -a: debug assertions on, so an arithmetic overflow is a crash rather than a silent wrap.
flags=(-a -s "$sanitizer")
logs=target/fuzz-logs
mkdir -p "$logs"
echo "building (sanitizer $sanitizer, debug assertions on)"
if ! cargo fuzz build "${flags[@]}" >"$logs/build.log" 2>&1; then
    cat "$logs/build.log" >&2
    exit 2
fi
status=0
summary=()

report_failure() { # target, log, what
    {
        echo "== $1: $3 (full log: fuzz/$2)"
        # The panic message (or libFuzzer's reason: timeout, out of memory, signal) ...
        sed -n '/panicked at/,/^stack backtrace:/p' "$2" | grep -v '^stack backtrace:' | head -n 20
        grep -E 'ERROR: libFuzzer|==[0-9]+== ?ERROR|^SUMMARY' "$2" | head -n 5 || true
        # ... the frames in parla and the fuzz target, skipping std, libFuzzer and dependencies ...
        echo "frames in parla / the target:"
        awk '/^ +[0-9]+: /{frame=$0; next}
             /^ +at / && !/\/rustc\// && !/\.cargo\/registry/ && !/libfuzzer/ && !/csu\// {print frame; print}' "$2" | head -n 20
        # ... and the saved input with the commands to reproduce it.
        grep '^Running: ' "$2" | tail -n 1 || true
        sed -n '/^Failing input:/,/^Minimize/p' "$2" | grep -v -e '^Minimize' -e '^$' || true
        echo "reproduce from fuzz/: RUSTC_BOOTSTRAP=1 cargo fuzz run ${flags[*]} $1 <that input>"
        echo "once parla is fixed, keep the input under fuzz/regressions/$1/: every run replays it"
    } >&2
    status=1
    if [[ $keep_going != 1 ]]; then
        echo "== summary (stopped at the first crash; FUZZ_KEEP_GOING=1 runs the rest)"
        printf '%s\n' "${summary[@]}"
        exit 1
    fi
}

for t in "${targets[@]}"; do
    log=$logs/$t.log
    # Inputs that once crashed a target (kept under regressions/) must keep passing.
    if compgen -G "regressions/$t/*" >/dev/null; then
        echo "== $t: replaying regressions/$t/"
        if ! cargo fuzz run "${flags[@]}" "$t" regressions/"$t"/* >"$log" 2>&1; then
            summary+=("$t: REGRESSION FAILS (see $log)")
            report_failure "$t" "$log" "a saved regression input still crashes"
            continue
        fi
    fi

    mkdir -p "corpus/$t"
    # smpp_server reads the same PDUs as smpp: it starts from smpp's seeds.
    seeds=$t
    [[ $t == smpp_server ]] && seeds=smpp
    if [[ -d seeds/$seeds ]]; then
        cp -n "seeds/$seeds"/* "corpus/$t"/ 2>/dev/null || true
    fi
    echo "== $t: fuzzing for ${seconds}s (corpus/$t, $(ls "corpus/$t" | wc -l) inputs)"
    if cargo fuzz run "${flags[@]}" "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout="$timeout" -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result=CRASH
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    # The last status line: "#N DONE cov: C ft: F corp: K/S ..." (or pulse/NEW before a crash).
    last=$(grep -E '^#[0-9]+\s' "$log" | tail -n 1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$last")
    line="$t: $result, ${runs:-?} runs, ${rate:-?} exec/s, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}"
    summary+=("$line")
    echo "   $line"
    if [[ $result != ok ]]; then
        report_failure "$t" "$log" "crash (input saved under artifacts/$t/)"
    fi
done

echo "== summary (logs in fuzz/$logs/)"
printf '%s\n' "${summary[@]}"
exit "$status"
