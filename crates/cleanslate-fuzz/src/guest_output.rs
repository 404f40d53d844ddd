//! Hostile guest output: a guest that hands the host fuzzer-chosen result
//! records, pointers and lengths, calls host functions with fuzzer-chosen
//! arguments, allocates at fuzzer-chosen addresses, panics with
//! fuzzer-chosen messages and grows its memory in between.
//!
//! The property: every call ends with output within the limit or a typed
//! error — never a host crash, an out-of-bounds read (in safe Rust that
//! would be a panic, caught here as a finding) or a host panic nobody
//! asked for — and the sandbox then equals its snapshot.
//!
//! The guest is a small interpreter: its data function reads its input as
//! 20-byte instructions `op a b c d` (little-endian u32s) and executes them,
//! so one compiled module serves every input.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use arbitrary::Unstructured;
use cleanslate::{ErrorKind, Module, Sandbox};

use crate::tally::outcome_name;
use crate::{Finding, Tally, runtime};

/// The most bytes the guest may hand the host: small, so lengths exceed it.
pub const OUTPUT_LIMIT: usize = 4096;

/// Operations (`op % 10`):
/// 0 store32 a←b · 1 return record a · 2 call_host(a,b,c,d) · 3 kv.get(a,b)
/// · 4 panic(a,b) · 5 log(a,b,c) · 6 next allocations return a (-1: bump)
/// · 7 memory.grow(a & 3) · 8 store64 a←last host result · 9 fill a..a+c with b.
/// Falling off the end returns the record at 0.
const GUEST_WAT: &str = r#"(module
  (import "cleanslate" "call_host" (func $call_host (param i32 i32 i32 i32) (result i64)))
  (import "cleanslate" "panic" (func $panic (param i32 i32)))
  (import "cleanslate" "log" (func $log (param i32 i32 i32)))
  (import "kv" "get" (func $kv_get (param i32 i32) (result i64)))
  (memory 2 4)
  (global $bump (mut i32) (i32.const 65536))
  (global $fixed_alloc (mut i32) (i32.const -1))
  (global $last (mut i64) (i64.const 0))
  (data (i32.const 16) "kv.get")
  (data (i32.const 32) "get")
  (data (i32.const 48) "no.such")
  (data (i32.const 64) "\00\00\00\00\10\00\00\00\06\00\00\00")
  (data (i32.const 80) "\01\00\00\00\10\00\00\00\06\00\00\00")
  (func (export "cleanslate_alloc") (param $len i32) (result i32)
    (local $at i32)
    (if (i32.ne (global.get $fixed_alloc) (i32.const -1))
      (then (return (global.get $fixed_alloc))))
    (local.set $at (global.get $bump))
    (if (i64.gt_u
          (i64.add (i64.extend_i32_u (local.get $at)) (i64.extend_i32_u (local.get $len)))
          (i64.mul (i64.extend_i32_u (memory.size)) (i64.const 65536)))
      (then (return (i32.const 0))))
    (global.set $bump (i32.add (local.get $at) (local.get $len)))
    (local.get $at))
  (func (export "run") (param $ptr i32) (param $len i32) (result i32)
    (local $at i32) (local $end i32)
    (local $op i32) (local $a i32) (local $b i32) (local $c i32) (local $d i32)
    (local.set $at (local.get $ptr))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (block $done
      (loop $next
        (br_if $done (i32.gt_u (i32.add (local.get $at) (i32.const 20)) (local.get $end)))
        (local.set $op (i32.rem_u (i32.load (local.get $at)) (i32.const 10)))
        (local.set $a (i32.load offset=4 (local.get $at)))
        (local.set $b (i32.load offset=8 (local.get $at)))
        (local.set $c (i32.load offset=12 (local.get $at)))
        (local.set $d (i32.load offset=16 (local.get $at)))
        (local.set $at (i32.add (local.get $at) (i32.const 20)))
        (block $fill (block $store_last (block $grow (block $set_alloc (block $log
        (block $panic (block $kv (block $host (block $return (block $store
          (br_table $store $return $host $kv $panic $log $set_alloc $grow $store_last $fill
            (local.get $op)))
          (i32.store (local.get $a) (local.get $b)) (br $next))
          (return (local.get $a)))
          (global.set $last (call $call_host (local.get $a) (local.get $b) (local.get $c) (local.get $d)))
          (br $next))
          (global.set $last (call $kv_get (local.get $a) (local.get $b))) (br $next))
          (call $panic (local.get $a) (local.get $b)) (br $next))
          (call $log (local.get $a) (local.get $b) (local.get $c)) (br $next))
          (global.set $fixed_alloc (local.get $a)) (br $next))
          (drop (memory.grow (i32.and (local.get $a) (i32.const 3)))) (br $next))
          (i64.store (local.get $a) (global.get $last)) (br $next))
        (memory.fill (local.get $a) (local.get $b) (i32.and (local.get $c) (i32.const 0x1ffff)))
        (br $next)))
    (i32.const 0)))"#;

fn module() -> &'static Module {
    static MODULE: OnceLock<Module> = OnceLock::new();
    MODULE.get_or_init(|| {
        runtime()
            .load_bytes(GUEST_WAT)
            .expect("the hostile guest loads")
    })
}

/// The message of the host function's panic on request (a libFuzzer
/// driver must let exactly this panic unwind).
pub const REQUESTED_PANIC: &str = "the host function panicked on request";

/// `kv.get`: echoes its input reversed; input starting with `E` fails,
/// with `P` panics (setting `panic_requested` first: a `HostPanic` without
/// it would be a panic of the host's own making), with `L` returns four
/// times as many bytes as the next two say.
fn kv_get(input: &[u8], panic_requested: &AtomicBool) -> Result<Vec<u8>, cleanslate::HostFnError> {
    match input.first() {
        Some(b'E') => Err("the host refused".into()),
        Some(b'P') => {
            panic_requested.store(true, Ordering::SeqCst);
            std::panic::panic_any(REQUESTED_PANIC);
        }
        Some(b'L') => {
            let len = input
                .get(1..3)
                .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
            Ok(vec![b'x'; usize::from(len) * 4])
        }
        _ => Ok(input.iter().rev().copied().collect()),
    }
}

/// A 32-bit argument: mostly the addresses and sizes where bounds checks
/// live (the data at 16..92, memory ends, the allocator's heap, wrapping
/// values), sometimes anything.
fn argument(u: &mut Unstructured<'_>) -> u32 {
    let near = |base: u32, u: &mut Unstructured<'_>| {
        base.wrapping_add_signed(u.int_in_range(-16..=16).unwrap_or(0))
    };
    match u.int_in_range(0..=9u8).unwrap_or(0) {
        0 => u.int_in_range(0..=96).unwrap_or(0),
        1 => *u.choose(&[16, 32, 48, 64, 80]).unwrap_or(&16),
        2 => near(65536, u),
        3 => near(2 * 65536, u),
        4 => near(4 * 65536, u),
        5 => near(u32::MAX, u),
        6 => near(OUTPUT_LIMIT as u32, u),
        7 => u.int_in_range(0..=8).unwrap_or(0),
        // What `kv.get` reacts to, for a store32 to put in memory.
        8 => u32::from_le_bytes(
            *u.choose(&[*b"Exxx", *b"Pxxx", *b"L\x10\x04x"])
                .unwrap_or(b"Exxx"),
        ),
        _ => u.arbitrary().unwrap_or(0),
    }
}

/// The program for one call: instructions, each `op a b c d`.
fn program(u: &mut Unstructured<'_>) -> Vec<u8> {
    let count = u.int_in_range(0..=12usize).unwrap_or(0);
    let mut out = Vec::with_capacity(count * 20);
    for _ in 0..count {
        out.extend_from_slice(&u.int_in_range(0..=9u32).unwrap_or(0).to_le_bytes());
        for _ in 0..4 {
            out.extend_from_slice(&argument(u).to_le_bytes());
        }
    }
    out
}

/// Outcomes a hostile guest may cause. Anything else is a finding.
fn acceptable(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Trap(_)
            | ErrorKind::GuestError
            | ErrorKind::GuestPanic
            | ErrorKind::InvalidGuestOutput
            | ErrorKind::OutputTooLarge
            | ErrorKind::HostError
            | ErrorKind::HostPanic
            | ErrorKind::OutOfMemory
            | ErrorKind::OutOfFuel
            | ErrorKind::Timeout
    )
}

/// Run the calls `data` describes against one hostile-guest sandbox.
///
/// # Errors
///
/// A [`Finding`] when the property does not hold for `data`.
pub fn check(data: &[u8], tally: &mut Tally) -> Result<(), Finding> {
    tally.inputs += 1;
    let panic_requested = Arc::new(AtomicBool::new(false));
    let build = || {
        let panic_requested = panic_requested.clone();
        Sandbox::builder(module())
            .output_limit(OUTPUT_LIMIT)
            .memory_limit(4 * 65536)
            .fuel(200_000)
            .host_fn_bytes("kv", "get", move |_ctx, input| {
                kv_get(input, &panic_requested)
            })
            .build()
    };
    let (mut sandbox, oracle) = match (build(), build().and_then(|mut twin| twin.snapshot())) {
        (Ok(sandbox), Ok(oracle)) => (sandbox, oracle),
        (Err(e), _) | (_, Err(e)) => {
            return Err(Finding(format!("the hostile guest does not build: {e}")));
        }
    };
    let mut u = Unstructured::new(data);
    for n in 0..8 {
        if u.is_empty() && n > 0 {
            break;
        }
        let input = program(&mut u);
        panic_requested.store(false, Ordering::SeqCst);
        let outcome = sandbox.call_bytes("run", &input);
        tally.calls += 1;
        tally.saw(outcome_name(&outcome));
        let describe = || format!("call {n} with program {input:02x?} ended {outcome:?}");
        match &outcome {
            Ok(output) if output.len() > OUTPUT_LIMIT => {
                return Err(Finding(format!("output over the limit: {}", describe())));
            }
            Ok(_) => {}
            Err(e)
                if e.kind() == ErrorKind::HostPanic && !panic_requested.load(Ordering::SeqCst) =>
            {
                return Err(Finding(format!(
                    "the host panicked by itself: {}",
                    describe()
                )));
            }
            Err(e) if !acceptable(e.kind()) => {
                return Err(Finding(format!("unexpected error kind: {}", describe())));
            }
            Err(_) => {}
        }
        crate::oracle::assert_clean(&mut sandbox, &oracle, describe)?;
    }
    Ok(())
}
