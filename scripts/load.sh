#!/usr/bin/env bash
# Load test of `cleanslate serve` on loopback with wrk (Debian: apt install wrk),
# 64 connections, three endpoints in one run:
#   (a) GET /healthz                       the server's floor
#   (b) POST /call/add {"args":[2,3]}       a trivial guest call, clean slate per request
#   (c) POST /call/summarise <1 KiB order>  a 1 KiB JSON transform by a Rust guest
# Results go to stdout; docs/SERVER.md quotes them.
#
# The three run in turn, ROUNDS times (default 3), so that drift of this
# shared machine hits all three alike; a summary with the median per endpoint
# ends the output.
#
# Usage: scripts/load.sh [DURATION_SECONDS] [POOL_SIZE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10}"
pool="${2:-2}"
rounds="${3:-3}"
command -v wrk >/dev/null || { echo "needs wrk: apt install wrk" >&2; exit 2; }

cargo build --release -q -p cleanslate-cli
cargo build --release -q --locked --target wasm32-unknown-unknown \
    --manifest-path guests/rust/Cargo.toml --target-dir target/guests
bin=target/release/cleanslate
json_guest=target/guests/wasm32-unknown-unknown/release/json_transform.wasm
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

start() { # module -> port
    CLEANSLATE_LOG="${CLEANSLATE_LOG:-info}" "$bin" serve "$1" --listen 127.0.0.1:0 --pool "$pool" >"$work/$2.out" 2>/dev/null &
    for _ in $(seq 100); do
        grep -q listening "$work/$2.out" 2>/dev/null && break
        sleep 0.05
    done
    grep -o '[0-9]*$' "$work/$2.out"
}
values_port=$(start guests/example.wat values)
json_port=$(start "$json_guest" json)

# A ~1 KiB order.
python3 - >"$work/order.json" <<'PY'
import json
items = [{"name": f"item {i:03d}", "cents": 100 + i, "quantity": 1 + i % 3} for i in range(22)]
print(json.dumps({"customer": "load test", "items": items}), end="")
PY
post() { # body-file -> lua script
    cat <<LUA
wrk.method = "POST"
local f = io.open("$1", "rb"); wrk.body = f:read("*a"); f:close()
wrk.headers["Content-Type"] = "application/json"
LUA
}
printf '{"args":[2,3]}' >"$work/add.json"
post "$work/add.json" >"$work/add.lua"
post "$work/order.json" >"$work/order.lua"
echo "order body: $(wc -c <"$work/order.json") bytes; pool $pool; 64 connections; ${duration}s each; $(nproc) cores"

run() { # name url [script]
    wrk -t2 -c64 -d"${duration}s" --latency ${3:+-s "$3"} "$2" >"$work/wrk.out"
    rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
    p50=$(awk '$1 == "50%" {print $2}' "$work/wrk.out")
    p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.out")
    bad=$(awk '/Non-2xx|Socket errors/' "$work/wrk.out")
    echo "$1 req/s $rps p50 $p50 p99 $p99 ${bad:+($bad)}"
    echo "$1 $rps $p50 $p99" >>"$work/results"
}
for round in $(seq "$rounds"); do
    echo "== round $round"
    run a "http://127.0.0.1:$values_port/healthz"
    run b "http://127.0.0.1:$values_port/call/add" "$work/add.lua"
    run c "http://127.0.0.1:$json_port/call/summarise" "$work/order.lua"
done
echo "== medians over $rounds rounds (a: GET /healthz, b: POST /call/add, c: POST /call/summarise)"
python3 - "$work/results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, rps, p50, p99 = line.split()
    ms = lambda t: float(t[:-2]) if t.endswith("ms") else float(t[:-2]) / 1000 if t.endswith("us") else float(t[:-1]) * 1000
    rows.setdefault(name, []).append((float(rps), ms(p50), ms(p99)))
floor = statistics.median(r[0] for r in rows["a"])
for name, runs in rows.items():
    rps = statistics.median(r[0] for r in runs)
    print(f"{name}: {rps:,.0f} req/s ({rps / floor:.2f} of a), p50 {statistics.median(r[1] for r in runs):.2f} ms, "
          f"p99 {statistics.median(r[2] for r in runs):.2f} ms; p99 per round: {', '.join(f'{r[2]:.2f}' for r in runs)} ms")
PY
curl -s "http://127.0.0.1:$values_port/metrics" | grep -E 'pool_calls_total|reset_duration_microseconds_(sum|count)'
