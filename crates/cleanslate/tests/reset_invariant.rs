//! The reset invariant, searched for counterexamples: random valid modules
//! (wasm-smith: memories, globals, tables, bulk memory, reference types,
//! exceptions, SIMD, traps and `memory.grow` allowed, small limits), each
//! called many times with random arguments under tiny fuel and short
//! timeouts. After every call an independent oracle — the snapshot of a
//! separately built twin sandbox — must equal the sandbox, byte for byte
//! (memory bytes and sizes, globals, tables, segments), on both reset paths.
//! Any difference, an unusable sandbox, or a panic is a finding.
//!
//! The suite runs a bounded search (`CASES` modules); set
//! `CLEANSLATE_FUZZ_CASES` and `CLEANSLATE_FUZZ_CALLS` for a long run (see
//! docs/RELIABILITY.md). The libFuzzer targets in `fuzz/` drive the same
//! check from coverage-guided input.

mod common;

use std::time::Duration;

use arbitrary::Unstructured;
use cleanslate::{ErrorKind, ResetStrategy, Runtime, Sandbox, Status, Val, ValType};

/// Modules searched in the normal test suite, and calls per module.
const CASES: u64 = 1_000;
const CALLS: usize = 8;

/// Every generated module exports functions of these names and types (with
/// random bodies), so every module has calls the host can make.
const EXPORTS: &str = r#"(module
  (func (export "a") (param i32) (result i32) unreachable)
  (func (export "b") (param i32 i64))
  (func (export "c") (result i64) unreachable)
  (func (export "d") (param f64 i32 i32) (result f32) unreachable)
  (func (export "e")))"#;

fn smith_config() -> wasm_smith::Config {
    wasm_smith::Config {
        exports: Some(wat::parse_str(EXPORTS).expect("the export template parses")),
        max_imports: 0,
        min_funcs: 1,
        max_funcs: 8,
        min_exports: 1,
        max_exports: 12,
        max_memories: 1,
        max_memory32_bytes: 4 * 65536,
        memory64_enabled: false,
        memory_max_size_required: true,
        max_tables: 2,
        max_table_elements: 64,
        table_max_size_required: true,
        max_globals: 8,
        max_data_segments: 4,
        max_element_segments: 4,
        max_elements: 16,
        max_instructions: 120,
        max_nesting_depth: 6,
        max_tags: 2,
        gc_enabled: false,
        threads_enabled: false,
        custom_page_sizes_enabled: false,
        wide_arithmetic_enabled: false,
        ..wasm_smith::Config::default()
    }
}

/// A deterministic byte stream for `seed` (splitmix64).
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xdead_beef;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn random_val(ty: ValType, u: &mut Unstructured<'_>) -> Option<Val> {
    // Small and boundary values find more than uniform ones.
    let pick = u.int_in_range(0..=3u8).unwrap_or(0);
    Some(match ty {
        ValType::I32 => Val::I32(match pick {
            0 => u.int_in_range(-4..=70_000).unwrap_or(0),
            1 => i32::MIN,
            2 => -1,
            _ => u.arbitrary().unwrap_or(0),
        }),
        ValType::I64 => Val::I64(match pick {
            0 => u.int_in_range(-4..=70_000).unwrap_or(0),
            1 => i64::MIN,
            _ => u.arbitrary().unwrap_or(0),
        }),
        ValType::F32 => Val::F32(u.arbitrary().unwrap_or(0.0)),
        ValType::F64 => Val::F64(u.arbitrary().unwrap_or(0.0)),
        _ => return None,
    })
}

/// What one search found; empty when the invariant held.
#[derive(Default)]
struct Tally {
    modules: u64,
    skipped: u64,
    /// Modules with no export the host can pass arguments to.
    uncallable: u64,
    calls: u64,
    findings: Vec<String>,
}

fn search(runtime: &Runtime, seed: u64, calls: usize, tally: &mut Tally) {
    let input = bytes(seed, 16 * 1024);
    let mut u = Unstructured::new(&input);
    let Ok(generated) = wasm_smith::Module::new(smith_config(), &mut u) else {
        tally.skipped += 1;
        return;
    };
    let wasm = generated.to_bytes();
    let module = match runtime.load_bytes(&wasm) {
        Ok(module) => module,
        Err(e) => {
            // A valid module we cannot take must say so with a type, never panic.
            assert_eq!(e.kind(), ErrorKind::InvalidModule, "seed {seed}: {e}");
            tally.skipped += 1;
            return;
        }
    };
    let strategy = if seed.is_multiple_of(2) {
        ResetStrategy::Auto
    } else {
        ResetStrategy::FreshInstance
    };
    let build = || {
        Sandbox::builder(&module)
            .reset_strategy(strategy)
            .fuel(5_000)
            .timeout(Duration::from_millis(100))
            .memory_limit(8 * 65536)
            .build()
    };
    let (mut sandbox, oracle) = match (build(), build()) {
        (Ok(sandbox), Ok(mut twin)) => (sandbox, twin.snapshot().unwrap()),
        // The start function trapped, a segment did not fit, ...: a typed
        // refusal at build is not a finding.
        (Err(e), _) | (_, Err(e)) => {
            if std::env::var_os("CLEANSLATE_FUZZ_VERBOSE").is_some() {
                eprintln!("seed {seed}: not built: {e}");
            }
            tally.skipped += 1;
            return;
        }
    };
    tally.modules += 1;
    // The calls draw from their own stream: module generation may have
    // used up the first.
    let call_input = bytes(seed ^ 0x5eed_ca11, 64 * calls + 256);
    let mut u = Unstructured::new(&call_input);
    let functions: Vec<(String, Vec<ValType>)> = module
        .functions()
        .map(|f| (f.name().to_string(), f.params().to_vec()))
        .filter(|(_, params)| {
            params
                .iter()
                .all(|t| matches!(t, ValType::I32 | ValType::I64 | ValType::F32 | ValType::F64))
        })
        .collect();
    if functions.is_empty() {
        tally.uncallable += 1;
        return;
    }
    // Functions whose parameters cannot be passed from the host (v128,
    // references) are skipped, so draw more often than `calls`.
    let mut checked = 0;
    for n in 0..calls * 4 {
        if checked == calls {
            break;
        }
        let Ok(index) = u.choose_index(functions.len()) else {
            break;
        };
        let (name, params) = &functions[index];
        let Some(args) = params
            .iter()
            .map(|t| random_val(*t, &mut u))
            .collect::<Option<Vec<_>>>()
        else {
            continue;
        };
        let outcome = sandbox.call(name, &args);
        tally.calls += 1;
        checked += 1;
        if let Err(e) = &outcome
            && matches!(e.kind(), ErrorKind::ResetFailed | ErrorKind::Unrecoverable)
        {
            tally
                .findings
                .push(format!("seed {seed} call {n} `{name}` {args:?}: {e}"));
            return;
        }
        if sandbox.status() != Status::Ready {
            tally.findings.push(format!(
                "seed {seed} call {n} `{name}`: sandbox {:?}",
                sandbox.status()
            ));
            return;
        }
        let now = sandbox.snapshot().unwrap();
        let differences = oracle.differences(&now);
        if !differences.is_empty() || now.memory_sizes() != oracle.memory_sizes() {
            tally.findings.push(format!(
                "seed {seed} ({strategy:?}) call {n} `{name}` {args:?} ({:?}): state differs from the oracle: {differences:?}",
                outcome.as_ref().err().map(|e| e.kind())
            ));
            return;
        }
    }
}

#[test]
fn random_modules_always_reset_to_their_snapshot() {
    let cases = std::env::var("CLEANSLATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    let calls = std::env::var("CLEANSLATE_FUZZ_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CALLS);
    let first = std::env::var("CLEANSLATE_FUZZ_FIRST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0u64);
    let runtime = Runtime::new().unwrap();
    let mut tally = Tally::default();
    for seed in first..first + cases {
        search(&runtime, seed, calls, &mut tally);
    }
    eprintln!(
        "reset invariant: {} modules ({} skipped, {} with no callable export), {} calls checked, {} findings",
        tally.modules,
        tally.skipped,
        tally.uncallable,
        tally.calls,
        tally.findings.len()
    );
    assert!(
        tally.findings.is_empty(),
        "findings:\n{}",
        tally.findings.join("\n")
    );
    // The search must actually search: most generated modules run.
    assert!(
        tally.modules * 2 > cases,
        "only {} of {cases} modules ran",
        tally.modules
    );
}
