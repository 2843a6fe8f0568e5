#!/usr/bin/env bash
# Bounded fuzz run: every target in fuzz_targets/ for FUZZ_SECONDS (default 30) each.
#
#   FUZZ_SECONDS=10 bash fuzz/run.sh
#
# Runs against a temporary copy of each seed corpus, with crash artifacts written to the same
# temporary directory, so the repository is never modified. Prints each target's final libFuzzer
# line (`Done N runs in S second(s)`) and exits non-zero if any target crashes or fails to build.
# Without a nightly toolchain or cargo-fuzz (and cargo-fuzz cannot be installed), prints one line
# and exits 0: fuzzing is skipped, not failed.
set -uo pipefail

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$fuzz_dir" || exit 1

seconds="${FUZZ_SECONDS:-30}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "FUZZ_SECONDS must be a positive whole number of seconds, not '$seconds'" >&2
    exit 2
fi

if ! command -v rustup >/dev/null 2>&1 || ! rustup toolchain list | grep -q nightly; then
    echo "fuzzing skipped: no nightly Rust toolchain (cargo fuzz needs one; rustup toolchain install nightly)"
    exit 0
fi

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    install_log="$(mktemp "${TMPDIR:-/tmp}/cargo-fuzz-install.XXXXXX.log")"
    echo "cargo-fuzz not found; installing it (cargo install cargo-fuzz --locked)..." >&2
    if ! cargo install cargo-fuzz --locked >"$install_log" 2>&1 \
        || ! cargo +nightly fuzz --version >/dev/null 2>&1; then
        echo "fuzzing skipped: cargo-fuzz is not installed and could not be installed (see $install_log)"
        exit 0
    fi
    rm -f "$install_log"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/bulkhead-fuzz.XXXXXX")"
# cargo-fuzz always creates fuzz/artifacts/<target>/ (git-ignored) even though libFuzzer is told
# to write elsewhere; on exit, remove the ones this run created, if they stayed empty.
created_dirs=()
keep_work=0
cleanup() {
    local dir
    for dir in "${created_dirs[@]}"; do
        [[ -d "$dir" ]] && rmdir "$dir" 2>/dev/null
    done
    if ((keep_work == 0)); then
        rm -rf "$work"
    fi
}
trap cleanup EXIT

shopt -s nullglob
targets=()
for source in fuzz_targets/*.rs; do
    targets+=("$(basename "$source" .rs)")
done
for target in "${targets[@]}"; do
    [[ -e "artifacts/$target" ]] || created_dirs+=("$fuzz_dir/artifacts/$target")
done
[[ -e artifacts ]] || created_dirs+=("$fuzz_dir/artifacts")
if ((${#targets[@]} == 0)); then
    echo "no fuzz targets in $fuzz_dir/fuzz_targets" >&2
    exit 1
fi

echo "building ${#targets[@]} fuzz targets: ${targets[*]}"
if ! cargo +nightly fuzz build; then
    echo "FAILED: the fuzz targets do not build" >&2
    exit 1
fi

failed=()
for target in "${targets[@]}"; do
    corpus="$work/corpus/$target"
    artifacts="$work/artifacts/$target"
    log="$work/$target.log"
    mkdir -p "$corpus" "$artifacts"
    if [[ -d "corpus/$target" ]]; then
        cp -R "corpus/$target/." "$corpus/"
    fi

    echo "== $target: fuzzing for ${seconds}s"
    cargo +nightly fuzz run "$target" "$corpus" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -artifact_prefix="$artifacts/" \
        >"$log" 2>&1
    status=$?

    done_line="$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1)"
    if ((status == 0)) && [[ -n "$done_line" ]]; then
        echo "$target: $done_line"
        continue
    fi

    failed+=("$target")
    keep_work=1
    echo "$target: FAILED (exit $status)"
    # The panic message, libFuzzer's verdict and the failing input; else (a build or setup
    # failure) the end of the log.
    summary="$(grep -A1 -E "panicked at" "$log" | head -n 4
        grep -E "ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|Test unit written to|^Base64:" "$log")"
    if [[ -n "$summary" ]]; then
        echo "$summary" | sed 's/^/    /'
    else
        tail -n 30 "$log" | sed 's/^/    /'
    fi
    found_artifact=0
    for artifact in "$artifacts"/*; do
        [[ -e "$artifact" ]] || continue
        found_artifact=1
        echo "$target: crash artifact: $artifact"
        echo "    reproduce: (cd $fuzz_dir && cargo +nightly fuzz run $target $artifact)"
    done
    ((found_artifact)) || echo "$target: no crash artifact written; full log: $log"
done

if ((${#failed[@]} > 0)); then
    echo "fuzzing FAILED for: ${failed[*]} (logs and artifacts kept in $work)"
    exit 1
fi
echo "fuzzing passed: ${#targets[@]} targets, ${seconds}s each"
