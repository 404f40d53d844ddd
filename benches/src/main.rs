//! `compare`: Cleanslate's resets against plain-wasmtime baselines, side by
//! side in one process and run, on guests that dirty K scattered pages of a
//! 16 MiB and a 1 GiB memory, and on a guest whose call grows its memory by
//! N wasm pages and writes every new host page. Prints a markdown table and writes it, the
//! target checks and a plot into docs/BENCHMARKS.md and docs/benchmarks/.
//!
//! Run: `cargo run --release -p cleanslate-benches --bin compare`
//! (`-- --quick` for a short smoke run that writes nothing;
//! `-- --write-guest DIR` writes the guests, `dirty_16mib.wasm`,
//! `dirty_1gib.wasm`, `grow_16mib.wasm` and `grow_1gib.wasm` (which may grow
//! by 16 wasm pages), for `cleanslate bench DIR/dirty_16mib.wasm
//! dirty:K,STRIDE` or `cleanslate bench DIR/grow_16mib.wasm grow:N
//! --memory-limit 17MiB`, or a profiler, and exits).

mod doc_section;
mod guest;
mod methods;
mod plot;
mod process;
mod real_work;
mod report;

use std::time::{Duration, Instant};

use methods::{ALL, Method};

/// Dirty-page counts measured.
const KS: [u64; 5] = [0, 1, 16, 256, 4096];
/// Memory sizes measured.
const SIZES: [(u64, &str); 2] = [(16 << 20, "16 MiB"), (1 << 30, "1 GiB")];

/// Wasm pages a growing call adds.
const GROW_NS: [u64; 2] = [1, 16];
/// How far the growing guest's memory may grow: the largest N.
const MAX_GROW: u64 = 16;

/// One measured cell.
#[derive(Clone, Debug)]
pub struct Cell {
    pub size: &'static str,
    pub k: u64,
    pub method: Method,
    pub median_us: f64,
    pub iterations: usize,
}

/// One measured cell of the growing guest.
#[derive(Clone, Debug)]
pub struct GrowthCell {
    pub size: &'static str,
    pub n: u64,
    pub method: Method,
    pub median_us: f64,
    pub iterations: usize,
    /// The reset paths taken (Cleanslate only).
    pub paths: Option<methods::Paths>,
}

struct Budget {
    warmup: usize,
    min_iterations: usize,
    max_iterations: usize,
    time: Duration,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--write-guest") {
        let Some(dir) = args.get(at + 1) else {
            eprintln!("--write-guest needs a directory");
            std::process::exit(2);
        };
        for (wasm, name) in [
            (guest::module(16 << 20), "dirty_16mib.wasm"),
            (guest::module(1 << 30), "dirty_1gib.wasm"),
            (guest::growing_module(16 << 20, MAX_GROW), "grow_16mib.wasm"),
            (guest::growing_module(1 << 30, MAX_GROW), "grow_1gib.wasm"),
        ] {
            let path = std::path::Path::new(dir).join(name);
            if let Err(e) = std::fs::write(&path, wasm) {
                eprintln!("cannot write {}: {e}", path.display());
                std::process::exit(1);
            }
            println!("{}", path.display());
        }
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let budget = if quick {
        Budget {
            warmup: 3,
            min_iterations: 10,
            max_iterations: 50,
            time: Duration::from_millis(50),
        }
    } else {
        Budget {
            warmup: 30,
            min_iterations: 50,
            max_iterations: 3000,
            time: Duration::from_millis(1500),
        }
    };
    let mut cells = Vec::new();
    for (bytes, size) in SIZES {
        let wasm = guest::module(bytes);
        for k in KS {
            let stride = guest::stride(bytes, k);
            for method in ALL {
                match measure(method, &wasm, bytes, k, stride, &budget) {
                    Ok((median_us, iterations)) => {
                        eprintln!(
                            "{size:>6} K={k:<5} {:<58} {median_us:>10.2} µs ({iterations} calls)",
                            method.name()
                        );
                        cells.push(Cell {
                            size,
                            k,
                            method,
                            median_us,
                            iterations,
                        });
                    }
                    Err(e) => eprintln!("{size:>6} K={k:<5} {:<58} failed: {e}", method.name()),
                }
            }
        }
    }
    let growth = growing_calls(&budget);
    let mut real = Vec::new();
    match real_work::guest() {
        Ok(wasm) => {
            for method in real_work::METHODS {
                let call = real_work::prepare(method, &wasm, real_work::input());
                match call.map(|call| sample(call, &budget)) {
                    Ok((median_us, iterations)) => {
                        eprintln!(
                            "real work {:<58} {median_us:>10.2} µs ({iterations} calls)",
                            method.name()
                        );
                        real.push((method, median_us));
                    }
                    Err(e) => eprintln!("real work {:<58} failed: {e}", method.name()),
                }
            }
        }
        Err(e) => eprintln!("real work: cannot build the Rust guest: {e}"),
    }
    let scaling = size_scaling(&budget);
    let soak = if quick {
        None
    } else {
        Some(report::soak(1_000_000))
    };
    let markdown = report::markdown(&cells, &growth, &real, &scaling, soak.as_ref());
    println!("{markdown}");
    if !quick {
        report::write(&markdown, &cells)
            .unwrap_or_else(|e| eprintln!("could not write the report: {e}"));
    }
    // The harness's assertion: with `ResetStrategy::Auto`, a growing call is
    // undone in place, every time. (Checked after writing, so that the
    // report, which says so too, is not lost.)
    let not_undone: Vec<String> = growth
        .iter()
        .filter(|c| c.method == Method::CleanslateInPlace)
        .filter_map(|c| {
            let paths = c.paths.as_ref()?;
            (!paths.all_in_place()).then(|| format!("{} N = {}: {}", c.size, c.n, paths.describe()))
        })
        .collect();
    if !not_undone.is_empty() {
        eprintln!(
            "assertion failed: a growing call's reset (Auto) was not in place, or did not undo the growth: {}",
            not_undone.join("; ")
        );
        std::process::exit(1);
    }
}

/// Calls that grow the memory by N wasm pages and write each new host page,
/// per method, on each memory size.
fn growing_calls(budget: &Budget) -> Vec<GrowthCell> {
    let mut cells = Vec::new();
    for (bytes, size) in SIZES {
        let wasm = guest::growing_module(bytes, MAX_GROW);
        for n in GROW_NS {
            for method in methods::GROWTH {
                match methods::prepare_growing(method, &wasm, bytes, MAX_GROW, n) {
                    Ok((call, paths)) => {
                        let (median_us, iterations) = sample(call, budget);
                        let paths = paths.map(|p| p.borrow().clone());
                        eprintln!(
                            "{size:>6} grow N={n:<3} {:<58} {median_us:>10.2} µs ({iterations} calls){}",
                            method.name(),
                            paths
                                .as_ref()
                                .map(|p| format!(
                                    ", reset {}, reset alone {:.2} µs, {} pages, {} scans",
                                    p.describe(),
                                    p.reset_median_us().unwrap_or(f64::NAN),
                                    p.last_pages,
                                    p.scanned
                                ))
                                .unwrap_or_default()
                        );
                        cells.push(GrowthCell {
                            size,
                            n,
                            method,
                            median_us,
                            iterations,
                            paths,
                        });
                    }
                    Err(e) => {
                        eprintln!("{size:>6} grow N={n:<3} {:<58} failed: {e}", method.name())
                    }
                }
            }
        }
    }
    cells
}

/// The in-place reset on the small and the large memory at the same K,
/// measured in alternating batches so that drift of the machine (which at
/// a microsecond per call moves medians by half between cells measured a
/// minute apart) hits both alike: (K, small µs, large µs).
fn size_scaling(budget: &Budget) -> Vec<(u64, f64, f64)> {
    const BATCH: usize = 50;
    let [(small_bytes, _), (large_bytes, _)] = SIZES;
    let (small_wasm, large_wasm) = (guest::module(small_bytes), guest::module(large_bytes));
    let mut rows = Vec::new();
    for k in KS {
        let prepare = |wasm: &[u8], bytes: u64| {
            methods::prepare(
                Method::CleanslateInPlace,
                wasm,
                bytes,
                k,
                guest::stride(bytes, k),
            )
        };
        let (mut small, mut large) = match (
            prepare(&small_wasm, small_bytes),
            prepare(&large_wasm, large_bytes),
        ) {
            (Ok(small), Ok(large)) => (small, large),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("size scaling K={k}: {e}");
                continue;
            }
        };
        for _ in 0..budget.warmup {
            small();
            large();
        }
        let (mut small_ns, mut large_ns) = (Vec::new(), Vec::new());
        let started = Instant::now();
        while small_ns.len() < budget.max_iterations
            && (small_ns.len() < budget.min_iterations || started.elapsed() < 2 * budget.time)
        {
            for (call, samples) in [(&mut small, &mut small_ns), (&mut large, &mut large_ns)] {
                for _ in 0..BATCH {
                    let t = Instant::now();
                    call();
                    samples.push(t.elapsed().as_nanos() as u64);
                }
            }
        }
        let median = |samples: &mut Vec<u64>| {
            samples.sort_unstable();
            samples[samples.len() / 2] as f64 / 1000.0
        };
        let row = (k, median(&mut small_ns), median(&mut large_ns));
        eprintln!(
            "size scaling K={k:<5} {:>10.2} µs vs {:>10.2} µs ({} calls each, alternating)",
            row.1,
            row.2,
            small_ns.len()
        );
        rows.push(row);
    }
    rows
}

/// Median microseconds per call (call + reset) and the calls measured.
fn measure(
    method: Method,
    wasm: &[u8],
    bytes: u64,
    k: u64,
    stride: u64,
    budget: &Budget,
) -> Result<(f64, usize), String> {
    let call = methods::prepare(method, wasm, bytes, k, stride)?;
    Ok(sample(call, budget))
}

/// Median microseconds per call of `call`, and the calls measured.
fn sample(mut call: methods::Call, budget: &Budget) -> (f64, usize) {
    for _ in 0..budget.warmup {
        call();
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    while samples.len() < budget.max_iterations
        && (samples.len() < budget.min_iterations || started.elapsed() < budget.time)
    {
        let t = Instant::now();
        call();
        samples.push(t.elapsed().as_nanos() as u64);
    }
    samples.sort_unstable();
    (samples[samples.len() / 2] as f64 / 1000.0, samples.len())
}
