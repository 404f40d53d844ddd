#!/usr/bin/env bash
# Run the unit tests that can run under Miri: the guest SDK, and the
# library's tests that make no system calls Miri cannot emulate
# (userfaultfd and PAGEMAP_SCAN are skipped). docs/SECURITY.md says what
# this covers; docs/RELIABILITY.md has the latest results.
#
# Needs nightly with Miri: rustup +nightly component add miri rust-src
# The library's run compiles wasmtime under Miri: expect tens of minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo +nightly miri test -p cleanslate-guest --lib
cargo +nightly miri test -p cleanslate --lib -- --skip tracking::tests --skip tracking::tracked_memories::tests
