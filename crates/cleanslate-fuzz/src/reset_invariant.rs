//! The reset invariant: after every call, whatever its exit, the sandbox
//! equals its snapshot.
//!
//! The input becomes a random valid module (wasm-smith: memories, globals,
//! tables, bulk memory, reference types, exceptions, SIMD, traps and
//! `memory.grow` allowed, small limits), sandbox limits (tiny fuel, short
//! timeouts), a reset path, and a sequence of calls with random arguments,
//! some cancelled from another thread at a random moment. The oracle is the
//! snapshot of a twin sandbox built independently from the same module:
//! after each call the sandbox's state — memory bytes and sizes, globals,
//! tables, segments — must equal it byte for byte.

use std::time::Duration;

use arbitrary::Unstructured;
use cleanslate::{ErrorKind, ResetStrategy, Sandbox, Val, ValType};

use crate::tally::outcome_name;
use crate::{Finding, Tally, runtime};

/// Most calls made on one module.
const MAX_CALLS: usize = 16;

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

/// The reference types a table or element segment can hold without the GC
/// proposal, with their null constant.
const REFERENCE_TYPES: [(&str, &str); 3] = [
    ("funcref", "(ref.null func)"),
    ("externref", "(ref.null extern)"),
    ("exnref", "(ref.null exn)"),
];

/// A module with one to three tables and passive element segments of
/// random reference types (32- or 64-bit tables, empty segments included),
/// a passive data segment, and eight exports `op0`..`op7`, each a random
/// sequence of what changes them: `elem.drop`, `table.init` into a table
/// that accepts the segment, `data.drop`, `memory.init`, `table.set`,
/// `table.fill`, `table.grow`, `table.copy`. Offsets are small, so some
/// operations trap part-way.
fn segment_module(u: &mut Unstructured<'_>) -> String {
    let int = |u: &mut Unstructured<'_>, max: u32| u.int_in_range(0..=max).unwrap_or(0);
    let tables: Vec<(usize, bool, u32)> = (0..=int(u, 2))
        .map(|_| (int(u, 2) as usize, int(u, 1) == 1, int(u, 6)))
        .collect();
    let segments: Vec<(usize, u32)> = (0..=int(u, 2))
        .map(|_| (int(u, 2) as usize, int(u, 3)))
        .collect();
    let mut wat = String::from("(module (memory 1 2) (data $d \"segment\")\n");
    wat.push_str("(func $f (result i32) (i32.const 7))\n(elem declare func $f)\n");
    for (i, (ty, table64, size)) in tables.iter().enumerate() {
        let address = if *table64 { "i64 " } else { "" };
        let ty = REFERENCE_TYPES[*ty].0;
        wat.push_str(&format!("(table $t{i} {address}{size} 12 {ty})\n"));
    }
    for (i, (ty, len)) in segments.iter().enumerate() {
        let (name, null) = REFERENCE_TYPES[*ty];
        let items: Vec<&str> = (0..*len)
            .map(|k| {
                if *ty == 0 && k % 2 == 0 {
                    "(ref.func $f)"
                } else {
                    null
                }
            })
            .collect();
        wat.push_str(&format!("(elem $e{i} {name} {})\n", items.join(" ")));
    }
    let index = |table: usize, value: u32| {
        if tables[table].1 {
            format!("(i64.const {value})")
        } else {
            format!("(i32.const {value})")
        }
    };
    for op in 0..8 {
        wat.push_str(&format!("(func (export \"op{op}\")\n"));
        for _ in 0..=int(u, 3) {
            let t = int(u, tables.len() as u32 - 1) as usize;
            let (table_ty, _, _) = tables[t];
            let null = REFERENCE_TYPES[table_ty].1;
            let s = int(u, segments.len() as u32 - 1) as usize;
            let line = match int(u, 7) {
                0 => format!("(elem.drop $e{s})"),
                1 if segments[s].0 == table_ty => format!(
                    "(table.init $t{t} $e{s} {} (i32.const 0) (i32.const {}))",
                    index(t, int(u, 4)),
                    int(u, segments[s].1)
                ),
                2 => "(data.drop $d)".to_string(),
                3 => format!(
                    "(memory.init $d (i32.const {}) (i32.const 0) (i32.const {}))",
                    int(u, 100),
                    int(u, 7)
                ),
                4 if table_ty == 0 => {
                    format!("(table.set $t{t} {} (ref.func $f))", index(t, int(u, 6)))
                }
                4 => format!("(table.set $t{t} {} {null})", index(t, int(u, 6))),
                5 => format!(
                    "(table.fill $t{t} {} {null} {})",
                    index(t, int(u, 4)),
                    index(t, int(u, 4))
                ),
                6 => format!("(drop (table.grow $t{t} {null} {}))", index(t, int(u, 2))),
                _ => {
                    let other = int(u, tables.len() as u32 - 1) as usize;
                    if tables[other].0 == table_ty && tables[other].1 == tables[t].1 {
                        format!(
                            "(table.copy $t{t} $t{other} {} {} {})",
                            index(t, int(u, 3)),
                            index(other, int(u, 3)),
                            index(t, int(u, 3))
                        )
                    } else {
                        "(nop)".to_string()
                    }
                }
            };
            wat.push_str(&line);
            wat.push('\n');
        }
        wat.push_str(")\n");
    }
    wat.push(')');
    wat
}

/// Small and boundary values find more than uniform ones.
fn random_val(ty: ValType, u: &mut Unstructured<'_>) -> Option<Val> {
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

/// Check the invariant on the module, limits and calls `data` describes.
///
/// The first three quarters of `data` shape the module (wasm-smith may use
/// all it is given), the rest the limits and calls. An input that yields no
/// sandbox (a start function that traps, a segment that does not fit) is
/// counted as skipped, after checking its refusal was a typed error.
///
/// # Errors
///
/// A [`Finding`] when the property does not hold for `data`.
pub fn check(data: &[u8], tally: &mut Tally) -> Result<(), Finding> {
    tally.inputs += 1;
    let (module_bytes, call_bytes) = data.split_at(data.len() * 3 / 4);
    let mut u = Unstructured::new(module_bytes);
    // One input in eight gets a module built around passive segments of
    // every kind and the tables that use them: wasm-smith rarely pairs an
    // `elem.drop` with a `table.init` of the same non-funcref segment.
    let wasm = if data.first().is_some_and(|b| b % 8 == 0) {
        tally.saw("segment_module");
        match wat::parse_str(segment_module(&mut u)) {
            Ok(wasm) => wasm,
            Err(e) => return Err(Finding(format!("the segment template is invalid: {e}"))),
        }
    } else {
        let Ok(generated) = wasm_smith::Module::new(smith_config(), &mut u) else {
            tally.skipped += 1;
            return Ok(());
        };
        generated.to_bytes()
    };
    let module = match runtime().load_bytes(&wasm) {
        Ok(module) => module,
        Err(e) if e.kind() == ErrorKind::InvalidModule => {
            tally.skipped += 1;
            return Ok(());
        }
        Err(e) => return Err(Finding(format!("a valid module was refused untyped: {e}"))),
    };

    let mut u = Unstructured::new(call_bytes);
    let strategy = if u.arbitrary().unwrap_or(false) {
        ResetStrategy::FreshInstance
    } else {
        ResetStrategy::Auto
    };
    // Tiny fuel mostly; one input in four runs on time alone, so loops
    // end by timeout or cancellation instead.
    let fuel = match u.int_in_range(0..=3u8).unwrap_or(0) {
        0 => None,
        _ => Some(u.int_in_range(1..=20_000u64).unwrap_or(5_000)),
    };
    let timeout = Duration::from_millis(u.int_in_range(1..=20u64).unwrap_or(20));
    let build = || {
        let builder = Sandbox::builder(&module)
            .reset_strategy(strategy)
            .timeout(timeout)
            .memory_limit(8 * 65536);
        match fuel {
            Some(fuel) => builder.fuel(fuel),
            None => builder,
        }
        .build()
    };
    let (mut sandbox, oracle) = match (build(), build()) {
        (Ok(sandbox), Ok(mut twin)) => match twin.snapshot() {
            Ok(oracle) => (sandbox, oracle),
            Err(e) => return Err(Finding(format!("a new sandbox cannot snapshot: {e}"))),
        },
        // The start function trapped, a segment did not fit, ...: a typed
        // refusal at build is not a finding.
        (Err(e), _) | (_, Err(e)) => {
            if matches!(
                e.kind(),
                ErrorKind::ResetFailed | ErrorKind::Unrecoverable | ErrorKind::Poisoned
            ) {
                return Err(Finding(format!("build failed with {:?}: {e}", e.kind())));
            }
            tally.skipped += 1;
            return Ok(());
        }
    };

    // Functions whose parameters the host can pass (not v128, references).
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
        tally.skipped += 1;
        return Ok(());
    }
    let handle = sandbox.interrupt_handle();
    for n in 0..MAX_CALLS {
        if u.is_empty() && n > 0 {
            break;
        }
        let index = u.choose_index(functions.len()).unwrap_or(0);
        let (name, params) = &functions[index];
        let args: Vec<Val> = params
            .iter()
            .map(|t| random_val(*t, &mut u).expect("host-passable types only"))
            .collect();
        // One call in eight is cancelled from another thread after a random
        // pause (it may land before, during or after the call).
        let cancel_after = (u.int_in_range(0..=7u8).unwrap_or(1) == 0)
            .then(|| Duration::from_micros(u.int_in_range(0..=2_000u64).unwrap_or(0)));
        let resets_before = sandbox.resets();
        let outcome = std::thread::scope(|scope| {
            if let Some(pause) = cancel_after {
                let handle = handle.clone();
                scope.spawn(move || {
                    std::thread::sleep(pause);
                    handle.cancel();
                });
            }
            sandbox.call(name, &args)
        });
        tally.calls += 1;
        tally.saw(outcome_name(&outcome));
        if sandbox.resets() != resets_before
            && sandbox.last_reset().is_some_and(|r| {
                r.path() == cleanslate::ResetPath::InPlace && !r.scanned_page_tables()
            })
        {
            tally.resets_without_scan += 1;
        }
        if sandbox.resets() != resets_before
            && sandbox
                .last_reset()
                .is_some_and(|r| r.memory_lowered_bytes() > 0)
        {
            tally.saw("growth_undone_in_place");
        }
        let describe = || {
            format!(
                "{strategy:?}, fuel {fuel:?}, timeout {timeout:?}: call {n} `{name}` {args:?} \
                 (cancel after {cancel_after:?}) ended {:?}",
                outcome.as_ref().err().map(|e| e.to_string())
            )
        };
        if let Err(e) = &outcome
            && matches!(e.kind(), ErrorKind::ResetFailed | ErrorKind::Unrecoverable)
        {
            return Err(Finding(format!("the reset failed: {}", describe())));
        }
        crate::oracle::assert_clean(&mut sandbox, &oracle, describe)?;
    }
    Ok(())
}
