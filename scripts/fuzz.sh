#!/usr/bin/env bash
# Fuzzes the suite parser (crates/core/fuzz) for a bounded time; not part of CI.
#   scripts/fuzz.sh [SECONDS]     default 60, or FUZZ_SECONDS
# cargo-fuzz needs a nightly toolchain (libFuzzer's sanitizer flags). Without
# one the script stops and says so; the parser's never-panics proptests still
# run on stable with `cargo test -p gauntlet-core`.
set -euo pipefail

seconds="${1:-${FUZZ_SECONDS:-60}}"
target="${FUZZ_TARGET:-parse_suite}"
root="$(cd "$(dirname "$0")/.." && pwd)"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz.sh: no nightly toolchain, which cargo-fuzz needs." >&2
    echo "fuzz.sh: install one with 'rustup toolchain install nightly', or rely on the" >&2
    echo "fuzz.sh: stable proptests (cargo test -p gauntlet-core parse::tests::properties)." >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

cd "$root/crates/core"
corpus="fuzz/corpus/$target"
mkdir -p "$corpus"
cp -n fuzz/seeds/* "$corpus/" 2>/dev/null || true

echo "fuzz.sh: fuzzing $target for ${seconds}s" >&2
# Memory is capped so an input that makes the parser build something huge
# (issue 8: eight list vars of 20 items) is reported as a crash, not left to
# swap the machine: -rss_limit_mb bounds the process, -malloc_limit_mb any
# single allocation.
exec cargo +nightly fuzz run "$target" "$corpus" -- \
    -max_total_time="$seconds" -max_len=8192 -timeout=10 \
    -rss_limit_mb="${FUZZ_RSS_MB:-256}" -malloc_limit_mb="${FUZZ_MALLOC_MB:-256}"
