//! The markdown table, the target checks, the resident-memory soak, and
//! writing them into docs/BENCHMARKS.md.

use std::fmt::Write as _;

use cleanslate::{Runtime, Sandbox, Val};

use crate::methods::{ALL, Method};
use crate::process::{mappings, open_fds, rss_kib};
use crate::{Cell, GROW_NS, GrowthCell, KS, SIZES, guest};

pub struct Soak {
    pub calls: u64,
    pub k: u64,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub fds_before: usize,
    pub fds_after: usize,
    pub mappings_before: usize,
    pub mappings_after: usize,
}

/// Run `calls` in-place calls dirtying 16 scattered pages of a 16 MiB memory;
/// compare resident memory and descriptors before and after.
pub fn soak(calls: u64) -> Soak {
    let bytes = 16 << 20;
    let k = 16;
    let module = Runtime::new()
        .unwrap()
        .load_bytes(guest::module(bytes))
        .unwrap();
    let mut sandbox = Sandbox::builder(&module)
        .memory_limit(bytes)
        .build()
        .unwrap();
    let args = [Val::I32(k as i32), Val::I32(guest::stride(bytes, k) as i32)];
    for _ in 0..10_000 {
        sandbox.call("dirty", &args).unwrap();
    }
    let (rss_before_kib, fds_before, mappings_before) = (rss_kib(), open_fds(), mappings());
    for _ in 0..calls {
        sandbox.call("dirty", &args).unwrap();
    }
    Soak {
        calls,
        k,
        rss_before_kib,
        rss_after_kib: rss_kib(),
        fds_before,
        fds_after: open_fds(),
        mappings_before,
        mappings_after: mappings(),
    }
}

fn find(cells: &[Cell], size: &str, k: u64, method: Method) -> Option<f64> {
    cells
        .iter()
        .find(|c| c.size == size && c.k == k && c.method == method)
        .map(|c| c.median_us)
}

fn best_fresh(cells: &[Cell], size: &str, k: u64) -> Option<(f64, Method)> {
    cells
        .iter()
        .filter(|c| c.size == size && c.k == k && c.method.is_wasmtime_fresh())
        .map(|c| (c.median_us, c.method))
        .min_by(|a, b| a.0.total_cmp(&b.0))
}

fn find_growth<'a>(
    growth: &'a [GrowthCell],
    size: &str,
    n: u64,
    method: Method,
) -> Option<&'a GrowthCell> {
    growth
        .iter()
        .find(|c| c.size == size && c.n == n && c.method == method)
}

fn best_fresh_growth(growth: &[GrowthCell], size: &str, n: u64) -> Option<(f64, Method)> {
    growth
        .iter()
        .filter(|c| c.size == size && c.n == n && c.method.is_wasmtime_fresh())
        .map(|c| (c.median_us, c.method))
        .min_by(|a, b| a.0.total_cmp(&b.0))
}

pub fn markdown(
    cells: &[Cell],
    growth: &[GrowthCell],
    real: &[(Method, f64)],
    scaling: &[(u64, f64, f64)],
    soak: Option<&Soak>,
) -> String {
    let mut out = String::new();
    for (_, size) in SIZES {
        let _ = writeln!(
            out,
            "\n#### {size} memory: median µs per call, including its reset\n"
        );
        let mut header = String::from("| K pages |");
        let mut rule = String::from("|---:|");
        for m in ALL {
            let _ = write!(header, " {} |", m.name());
            rule.push_str("---:|");
        }
        header.push_str(" in place ÷ best wasmtime fresh |");
        rule.push_str("---:|");
        let _ = writeln!(out, "{header}\n{rule}");
        for k in KS {
            let mut row = format!("| {k} |");
            for m in ALL {
                match find(cells, size, k, m) {
                    Some(us) => {
                        let _ = write!(row, " {us:.1} |");
                    }
                    None => row.push_str(" – |"),
                }
            }
            match (
                find(cells, size, k, Method::CleanslateInPlace),
                best_fresh(cells, size, k),
            ) {
                (Some(ours), Some((best, _))) => {
                    let _ = write!(row, " {:.2}× |", ours / best);
                }
                _ => row.push_str(" – |"),
            }
            let _ = writeln!(out, "{row}");
        }
    }
    if !growth.is_empty() {
        out.push_str("\n#### Growing calls: `grow(N)` grows the memory by N wasm pages (64 KiB) and writes one byte in each 4 KiB page of the grown region; median µs per call, including its reset\n\n");
        out.push_str("Each wasmtime baseline instantiates, calls the same export and drops the store; \"reset alone\" is the duration the in-place reset reports for itself (the rest of the call + reset column is the call, including its growth); \"reset path\" is what Cleanslate's default (`ResetStrategy::Auto`) did on every call measured, warm-up included, and how much it lowered the memory by (`ResetReport::memory_lowered_bytes`; the harness fails the run if any reset was not in place or did not undo the whole growth).\n\n");
        let mut header = String::from("| memory | N pages |");
        let mut rule = String::from("|---|---:|");
        for m in crate::methods::GROWTH {
            let _ = write!(header, " {} |", m.name());
            rule.push_str("---:|");
        }
        header.push_str(" in place ÷ best wasmtime fresh | fresh instance ÷ best wasmtime fresh | in place: reset alone, median µs | in place: reset path |");
        rule.push_str("---:|---:|---:|---|");
        let _ = writeln!(out, "{header}\n{rule}");
        for (_, size) in SIZES {
            for n in GROW_NS {
                let mut row = format!("| {size} | {n} |");
                for m in crate::methods::GROWTH {
                    match find_growth(growth, size, n, m) {
                        Some(c) => {
                            let _ = write!(row, " {:.1} |", c.median_us);
                        }
                        None => row.push_str(" – |"),
                    }
                }
                let best = best_fresh_growth(growth, size, n);
                for m in [Method::CleanslateInPlace, Method::CleanslateFresh] {
                    match (find_growth(growth, size, n, m), best) {
                        (Some(c), Some((best, _))) => {
                            let _ = write!(row, " {:.2}× |", c.median_us / best);
                        }
                        _ => row.push_str(" – |"),
                    }
                }
                let paths = find_growth(growth, size, n, Method::CleanslateInPlace)
                    .and_then(|c| c.paths.as_ref());
                let reset = paths
                    .and_then(|p| p.reset_median_us())
                    .map(|us| format!("{us:.1}"))
                    .unwrap_or_else(|| "–".into());
                let path = paths.map(|p| p.describe()).unwrap_or_else(|| "–".into());
                let _ = writeln!(out, "{row} {reset} | {path} |");
            }
        }
    }
    if !real.is_empty() {
        out.push_str("\n#### Real work: a Rust guest (guests/rust/json-transform) sums a 200-item JSON order (~10 KB) with serde, median µs per call including its reset\n\n");
        let best = real
            .iter()
            .filter(|(m, _)| m.is_wasmtime_fresh())
            .map(|&(_, us)| us)
            .fold(f64::INFINITY, f64::min);
        out.push_str("| method | median µs | ÷ best wasmtime fresh |\n|---|---:|---:|\n");
        for (method, us) in real {
            let _ = writeln!(out, "| {} | {us:.1} | {:.2}× |", method.name(), us / best);
        }
    }
    if !scaling.is_empty() {
        let (small, big) = (SIZES[0].1, SIZES[1].1);
        let _ = writeln!(
            out,
            "\n#### Memory size: in place on {big} vs {small}, measured in alternating batches of 50 calls\n\n| K pages | {small} µs | {big} µs | {big} ÷ {small} |\n|---:|---:|---:|---:|"
        );
        for (k, a, b) in scaling {
            let _ = writeln!(out, "| {k} | {a:.1} | {b:.1} | {:.2}× |", b / a);
        }
    }
    out.push_str("\n#### Targets (from the issue), checked on this run\n\n");
    for line in targets(cells, scaling)
        .into_iter()
        .chain(growth_targets(growth))
        .chain(fresh_targets(cells))
    {
        let _ = writeln!(out, "- {line}");
    }
    if let Some(s) = soak {
        let growth = s.rss_after_kib as f64 / s.rss_before_kib.max(1) as f64 - 1.0;
        let _ = writeln!(
            out,
            "\n#### Resident memory over {} calls (in place, K = {} scattered pages, 16 MiB)\n\nRSS {} KiB before, {} KiB after ({:+.2}%); open descriptors {} before, {} after; mappings {} before, {} after.",
            s.calls,
            s.k,
            s.rss_before_kib,
            s.rss_after_kib,
            growth * 100.0,
            s.fds_before,
            s.fds_after,
            s.mappings_before,
            s.mappings_after
        );
    }
    out
}

fn verdict(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**not met**" }
}

fn targets(cells: &[Cell], scaling: &[(u64, f64, f64)]) -> Vec<String> {
    let mut lines = Vec::new();
    let small = SIZES[0].1;
    let ratio = |k: u64| -> Option<(f64, f64, f64, Method)> {
        let ours = find(cells, small, k, Method::CleanslateInPlace)?;
        let (best, method) = best_fresh(cells, small, k)?;
        Some((ours / best, ours, best, method))
    };
    for (k, limit) in [(1, 0.7), (256, 0.2)] {
        if let Some((r, ours, best, method)) = ratio(k) {
            lines.push(format!(
                "K = {k}: in place {ours:.1} µs vs best fresh-instance baseline {best:.1} µs ({}): {r:.2}×, target ≤ {limit}× — {}",
                method.name(),
                verdict(r <= limit)
            ));
        }
    }
    for (_, size) in SIZES {
        let slower: Vec<String> = KS
            .iter()
            .filter_map(|&k| {
                let ours = find(cells, size, k, Method::CleanslateInPlace)?;
                let (best, _) = best_fresh(cells, size, k)?;
                (ours > best).then(|| format!("K = {k} ({ours:.1} vs {best:.1} µs)"))
            })
            .collect();
        lines.push(format!(
            "{size}: never slower than the best fresh-instance baseline — {}{}",
            verdict(slower.is_empty()),
            if slower.is_empty() {
                String::new()
            } else {
                format!(" at {}", slower.join(", "))
            }
        ));
    }
    let (big, small_name) = (SIZES[1].1, SIZES[0].1);
    // From the alternating measurement only: cells measured a minute apart
    // drift too much for a 1.2× bound at a microsecond. (`main` always
    // measures it; an empty list means it failed, which is not met.)
    let ratios: Vec<(u64, f64)> = scaling.iter().map(|&(k, a, b)| (k, b / a)).collect();
    let scale: Vec<String> = ratios
        .iter()
        .map(|(k, r)| format!("K = {k}: {r:.2}× {}", if *r <= 1.2 { "ok" } else { "over" }))
        .collect();
    let scale_ok = !scale.is_empty() && !scale.iter().any(|s| s.ends_with("over"));
    lines.push(format!(
        "{big} vs {small_name} at the same K within 1.2× — {}: {}",
        verdict(scale_ok),
        scale.join("; ")
    ));
    // The marginal cost of a page: above the same method's K = 0 cost.
    let per_page: Vec<(&str, u64, f64, f64)> = SIZES
        .iter()
        .flat_map(|&(_, size)| KS.iter().filter(|&&k| k >= 16).map(move |&k| (size, k)))
        .filter_map(|(size, k)| {
            let ours = find(cells, size, k, Method::CleanslateInPlace)?;
            let base = find(cells, size, 0, Method::CleanslateInPlace)?;
            let copy = find(cells, size, k, Method::Memcpy)?;
            Some((size, k, (ours - base) / k as f64, copy / k as f64))
        })
        .collect();
    let per_page_ok = per_page
        .iter()
        .all(|(_, _, ours, copy)| *ours <= 2.0 * copy);
    lines.push(format!(
        "above K ≈ 16, per-page cost (above K = 0) within 2× of memcpy — {}: {}",
        verdict(per_page_ok),
        per_page
            .iter()
            .map(|(size, k, ours, copy)| {
                format!("{size} K = {k}: {ours:.2} vs {copy:.2} µs/page")
            })
            .collect::<Vec<_>>()
            .join("; ")
    ));
    lines
}

/// Growing calls reset in place at no more than half the best wasmtime
/// fresh instance, per memory size and N (16 MiB is the target;
/// 1 GiB is checked alike).
fn growth_targets(growth: &[GrowthCell]) -> Vec<String> {
    let limit = 0.5;
    let mut lines = Vec::new();
    for (_, size) in SIZES {
        for n in GROW_NS {
            let (Some(ours), Some((best, method))) = (
                find_growth(growth, size, n, Method::CleanslateInPlace),
                best_fresh_growth(growth, size, n),
            ) else {
                if growth.iter().any(|c| c.size == size) {
                    lines.push(format!(
                        "{size}, growing call N = {n}: not measured — {}",
                        verdict(false)
                    ));
                }
                continue;
            };
            let r = ours.median_us / best;
            let in_place = ours.paths.as_ref().is_some_and(|p| p.all_in_place());
            let path = ours
                .paths
                .as_ref()
                .map(|p| p.describe())
                .unwrap_or_else(|| "unknown".into());
            let floor = find_growth(growth, size, n, Method::ZeroGrown)
                .map(|f| {
                    format!(
                        " (floor: writing and zeroing the grown pages alone, no engine, {:.1} µs = {:.2}×)",
                        f.median_us,
                        f.median_us / best
                    )
                })
                .unwrap_or_default();
            lines.push(format!(
                "{size}, growing call N = {n}: default (Auto) {:.1} µs, reset {path}, vs best fresh-instance baseline {best:.1} µs ({}): {r:.2}×, target in place and ≤ {limit}× — {}{floor}",
                ours.median_us,
                method.name(),
                verdict(in_place && r <= limit)
            ));
        }
    }
    lines
}

/// The forced fresh path (`ResetStrategy::FreshInstance`) costs no more
/// than 1.5× the best wasmtime fresh instance, per K (16 MiB is the issue's
/// target; 1 GiB is checked alike).
fn fresh_targets(cells: &[Cell]) -> Vec<String> {
    let limit = 1.5;
    let mut lines = Vec::new();
    for (_, size) in SIZES {
        for k in [0, 1, 16, 256] {
            let (Some(ours), Some((best, method))) = (
                find(cells, size, k, Method::CleanslateFresh),
                best_fresh(cells, size, k),
            ) else {
                continue;
            };
            let r = ours / best;
            lines.push(format!(
                "{size}, forced fresh instance, K = {k}: {ours:.1} µs vs best fresh-instance baseline {best:.1} µs ({}): {r:.2}×, target ≤ {limit}× — {}",
                method.name(),
                verdict(r <= limit)
            ));
        }
    }
    lines
}

const BEGIN: &str =
    "<!-- compare:begin (written by `cargo run --release -p cleanslate-benches --bin compare`) -->";
const END: &str = "<!-- compare:end -->";

/// Replace the generated part of docs/BENCHMARKS.md and redraw the plots.
pub fn write(markdown: &str, cells: &[Cell]) -> std::io::Result<()> {
    let generated = format!(
        "{}\n{markdown}\n![cost vs dirty pages](benchmarks/cost_vs_dirty_pages.svg)",
        machine()
    );
    crate::doc_section::replace("BENCHMARKS.md", BEGIN, END, &generated)?;
    let docs = crate::doc_section::docs_dir();
    std::fs::create_dir_all(docs.join("benchmarks"))?;
    crate::plot::draw(&docs.join("benchmarks/cost_vs_dirty_pages.svg"), cells)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!(
        "Measured on: {cpu}, {cores} cores, Linux {}, wasmtime 48.0.8, release build. Medians of up to 3,000 calls per cell (at least 50, about 1.5 s each).",
        kernel.trim()
    )
}
