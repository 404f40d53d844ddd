#!/usr/bin/env python3
"""Two `cleanslate` binaries, same cases, same run: is the new one slower?

Runs `cleanslate bench --json` of BEFORE and AFTER alternately (ROUNDS
times each, so drift on a shared machine hits both alike) on each case,
and prints per case the median of the per-run medians of each binary and
their ratio (after / before; above 1 is slower).

Usage: scripts/compare_binaries.py BEFORE AFTER [ROUNDS]
The dirty-page guests come from `target/release/compare --write-guest DIR`
(this script writes them into a temporary folder).
"""
import json, os, statistics, subprocess, sys, tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def cases(guests):
    example = os.path.join(ROOT, "guests", "example.wat")
    dirty = os.path.join(guests, "dirty_16mib.wasm")
    big = os.path.join(guests, "dirty_1gib.wasm")
    return [
        ("add (no pages)", [example, "add:2,3", "--calls", "20000"]),
        ("trap + reset", [example, "trap_unreachable:1", "--calls", "20000"]),
        ("leave_secret (1 page)", [example, "leave_secret:5", "--calls", "20000"]),
        ("16 MiB, K = 1", [dirty, "dirty:1,13", "--calls", "20000"]),
        ("16 MiB, K = 16", [dirty, "dirty:16,13", "--calls", "10000"]),
        ("16 MiB, K = 256", [dirty, "dirty:256,13", "--calls", "3000"]),
        ("1 GiB, K = 16", [big, "dirty:16,13", "--calls", "5000", "--memory-limit", "2GiB"]),
        ("fresh instance path", [example, "add:2,3", "--calls", "5000", "--reset", "fresh_instance"]),
    ]


def run(binary, args):
    out = subprocess.run([binary, "bench", *args, "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{binary} bench {' '.join(args)} failed: {out.stderr.strip()}")
    return json.loads(out.stdout)["median_us"]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    before, after = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    with tempfile.TemporaryDirectory() as guests:
        compare = os.path.join(ROOT, "target", "release", "compare")
        subprocess.run([compare, "--write-guest", guests], check=True, capture_output=True)
        print("| case | before µs | after µs | after / before |")
        print("|---|---:|---:|---:|")
        for name, args in cases(guests):
            b, a = [], []
            for _ in range(rounds):
                b.append(run(before, args))
                a.append(run(after, args))
            mb, ma = statistics.median(b), statistics.median(a)
            print(f"| {name} | {mb:.2f} | {ma:.2f} | {ma / mb:.2f} |", flush=True)


if __name__ == "__main__":
    main()
