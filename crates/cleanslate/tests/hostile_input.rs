//! Malformed modules and absurd limits: each is a typed error (or a working
//! sandbox), never a panic, a hang or an unbounded allocation.

use std::time::Duration;

use cleanslate::{ErrorKind, Runtime, Sandbox, Val};

fn runtime() -> Runtime {
    Runtime::new().unwrap()
}

/// A valid little module to damage.
fn valid() -> Vec<u8> {
    wat::parse_str(
        r#"(module (memory 1) (global (mut i32) (i32.const 1))
            (func (export "f") (param i32) (result i32) (local.get 0)))"#,
    )
    .unwrap()
}

fn assert_invalid(bytes: &[u8], what: &str) {
    match runtime().load_bytes(bytes) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidModule, "{what}: {e}"),
        Ok(_) => panic!("{what}: loaded"),
    }
}

#[test]
fn every_truncation_of_a_module_is_refused_or_loads() {
    let wasm = valid();
    let mut refused = 0;
    for len in 0..wasm.len() {
        // A cut at a section boundary is a smaller valid module.
        match runtime().load_bytes(&wasm[..len]) {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(
                    e.kind(),
                    ErrorKind::InvalidModule,
                    "truncated to {len}: {e}"
                );
                refused += 1;
            }
        }
    }
    assert!(
        refused > wasm.len() / 2,
        "only {refused} truncations refused"
    );
}

#[test]
fn every_single_byte_corruption_is_refused_or_loads() {
    let wasm = valid();
    for at in 8..wasm.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = wasm.clone();
            bad[at] ^= flip;
            // Some flips keep the module valid (a different constant): then
            // it must build and run like any module.
            match runtime().load_bytes(&bad) {
                Ok(module) => {
                    if let Ok(mut sandbox) = Sandbox::builder(&module).build() {
                        let _ = sandbox.call("f", &[Val::I32(1)]);
                    }
                }
                Err(e) => assert_eq!(
                    e.kind(),
                    ErrorKind::InvalidModule,
                    "flip {flip:#x} at {at}: {e}"
                ),
            }
        }
    }
}

#[test]
fn garbage_and_bad_sections_are_refused() {
    for (bytes, what) in [
        (b"".to_vec(), "empty"),
        (b"\0asm".to_vec(), "magic only"),
        (b"\0asm\x02\0\0\0".to_vec(), "version 2"),
        (
            b"\0asm\x01\0\0\0\x0c\xff\xff\xff\xff\x0f".to_vec(),
            "a section claiming 4 GiB",
        ),
        (b"\0asm\x01\0\0\0\x7f\x00".to_vec(), "an unknown section id"),
        (
            b"(module (func (export \"f\") (i32.add)))".to_vec(),
            "WAT that does not type-check",
        ),
        (b"(module (func".to_vec(), "unterminated WAT"),
        (vec![0xff; 4096], "noise"),
    ] {
        assert_invalid(&bytes, what);
    }
}

#[test]
fn huge_declared_sizes_are_refused_or_limited_without_allocating_them() {
    // 65,536 pages (4 GiB) declared as the minimum: refused by the memory
    // limit at build, not allocated.
    let module = runtime().load_bytes("(module (memory 65536))").unwrap();
    let err = Sandbox::builder(&module)
        .memory_limit(1 << 20)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::OutOfMemory | ErrorKind::Instantiation
        ),
        "{err}"
    );
    // A table of ten million elements declared: valid, and either built or
    // refused with a typed error.
    let module = runtime()
        .load_bytes("(module (table 10000000 funcref))")
        .unwrap();
    if let Err(e) = Sandbox::builder(&module).build() {
        assert!(
            matches!(e.kind(), ErrorKind::OutOfMemory | ErrorKind::Instantiation),
            "{e}"
        );
    }
    // Over the spec's limits: invalid.
    assert_invalid(
        b"(module (memory 65537))",
        "more than 4 GiB of 32-bit memory",
    );
}

#[test]
fn ten_thousand_imports_are_reported_not_crashed() {
    let mut wat = String::from("(module\n");
    for i in 0..10_000 {
        wat.push_str(&format!("(import \"env\" \"f{i}\" (func))\n"));
    }
    wat.push(')');
    let module = runtime().load_bytes(&wat).unwrap();
    assert_eq!(module.imports().count(), 10_000);
    let err = Sandbox::builder(&module).build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MissingImport, "{err}");
}

#[test]
fn deep_nesting_is_refused_or_runs() {
    for depth in [1_000usize, 100_000] {
        let mut wat = String::from("(module (func (export \"f\")");
        wat.push_str(&"(block ".repeat(depth));
        wat.push_str(&")".repeat(depth));
        wat.push_str("))");
        match runtime().load_bytes(&wat) {
            Ok(module) => {
                let mut sandbox = Sandbox::builder(&module).build().unwrap();
                sandbox.call("f", &[]).unwrap();
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidModule, "depth {depth}: {e}"),
        }
    }
}

#[test]
fn absurd_limits_are_typed() {
    let module = runtime().load_bytes(valid()).unwrap();
    // Zero-byte memory limit: the module's one page does not fit.
    let err = Sandbox::builder(&module)
        .memory_limit(0)
        .build()
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::OutOfMemory | ErrorKind::Instantiation | ErrorKind::InvalidArguments
        ),
        "{err}"
    );
    // The largest limits are accepted and mean "no practical limit".
    let mut sandbox = Sandbox::builder(&module)
        .memory_limit(u64::MAX)
        .fuel(u64::MAX)
        .timeout(Duration::MAX)
        .build()
        .unwrap();
    assert_eq!(sandbox.call("f", &[Val::I32(3)]).unwrap(), [Val::I32(3)]);
    // Zero fuel cannot run anything: refused at build, with what to do.
    let err = Sandbox::builder(&module).fuel(0).build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArguments, "{err}");
    // So can a zero timeout.
    let err = Sandbox::builder(&module)
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArguments, "{err}");
    // Absurd stack limits are refused with a typed error, not a crash.
    for stack in [0usize, usize::MAX] {
        match Sandbox::builder(&module).stack_limit(stack).build() {
            Ok(mut sandbox) => {
                let _ = sandbox.call("f", &[Val::I32(1)]);
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidArguments, "stack {stack}: {e}"),
        }
    }
}

/// Regression: a timeout or pool wait of `Duration::MAX` overflowed the
/// deadline arithmetic and panicked; it now means "no limit".
#[test]
fn the_longest_durations_mean_no_limit() {
    let module = runtime().load_bytes(valid()).unwrap();
    let builder = Sandbox::builder(&module).timeout(Duration::MAX);
    let pool = cleanslate::SandboxPool::new(
        builder,
        cleanslate::PoolConfig::new(1).max_wait(Duration::MAX),
    )
    .unwrap();
    assert_eq!(pool.call("f", &[Val::I32(4)]).unwrap(), [Val::I32(4)]);
    let tokio = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let result = tokio
        .block_on(pool.call_async_inline(&cleanslate::Call::values("f", &[Val::I32(5)])))
        .unwrap();
    assert_eq!(result.values(), [Val::I32(5)]);
}
