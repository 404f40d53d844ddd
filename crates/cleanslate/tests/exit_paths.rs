//! One test per way a call can end. Each checks the typed error, then that
//! the secret the call left everywhere is gone and the sandbox behaves like
//! a fresh one (see `common::assert_clean_slate`).

mod common;

use std::thread;
use std::time::Duration;

use cleanslate::{ErrorKind, Runtime, Sandbox, TrapCode, Val};
use common::{assert_clean_slate, on_every_path};

#[test]
fn success_leaves_nothing_behind() {
    on_every_path(|path| {
        let mut fx = path.fixture(|b| b);
        assert_eq!(
            fx.sandbox
                .call("add", &[Val::I32(40), Val::I32(2)])
                .unwrap(),
            [Val::I32(42)]
        );
        assert_clean_slate(&mut fx);
        // A successful call that writes the secret everywhere.
        fx.sandbox
            .call("leave_secret", &[Val::I32(path.secret)])
            .unwrap();
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn every_trap_code_is_typed_and_reset() {
    on_every_path(|path| {
        let cases = [
            ("trap_unreachable", TrapCode::Unreachable),
            ("trap_memory_out_of_bounds", TrapCode::MemoryOutOfBounds),
            ("trap_divide_by_zero", TrapCode::IntegerDivideByZero),
            ("trap_integer_overflow", TrapCode::IntegerOverflow),
            ("trap_bad_conversion", TrapCode::BadConversionToInteger),
            (
                "trap_indirect_type_mismatch",
                TrapCode::IndirectCallTypeMismatch,
            ),
            ("trap_table_out_of_bounds", TrapCode::TableOutOfBounds),
            ("trap_null_reference", TrapCode::NullReference),
        ];
        let mut fx = path.fixture(|b| b);
        for (function, code) in cases {
            let err = fx
                .sandbox
                .call(function, &[Val::I32(path.secret)])
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Trap(code), "{function}: {err}");
            assert!(
                err.to_string().contains(function),
                "message names the function: {err}"
            );
            assert_clean_slate(&mut fx);
        }
    });
}

#[test]
fn stack_overflow_from_deep_recursion() {
    on_every_path(|path| {
        let mut fx = path.fixture(|b| b.stack_limit(256 * 1024));
        let err = fx
            .sandbox
            .call("stack_overflow", &[Val::I32(path.secret)])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::StackOverflow, "{err}");
        assert!(err.to_string().contains("256 KiB"), "{err}");
        assert_clean_slate(&mut fx);
        // Recursion within the limit still works afterwards.
        assert_eq!(
            fx.sandbox.call("recurse", &[Val::I32(1000)]).unwrap(),
            [Val::I32(1000)]
        );
    });
}

#[test]
fn stack_overflow_from_large_frames() {
    on_every_path(|path| {
        let mut fx = path.fixture(|b| b.stack_limit(128 * 1024));
        let err = fx
            .sandbox
            .call("stack_overflow_big_frames", &[Val::I32(path.secret)])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::StackOverflow, "{err}");
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn a_large_stack_limit_works_from_a_small_thread() {
    on_every_path(|path| {
        // The calling thread has far less stack than the guest may use; the call
        // must still overflow cleanly at the guest's limit, not crash the host.
        let handle = thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let mut fx = path.fixture(|b| b.stack_limit(8 << 20));
                let err = fx
                    .sandbox
                    .call("stack_overflow", &[Val::I32(path.secret)])
                    .unwrap_err();
                assert_eq!(err.kind(), ErrorKind::StackOverflow, "{err}");
                assert_clean_slate(&mut fx);
            })
            .unwrap();
        handle.join().unwrap();
    });
}

#[test]
fn out_of_memory_when_the_limit_refuses_growth() {
    on_every_path(|path| {
        let mut fx = path.fixture(|b| b.memory_limit(1 << 20));
        let err = fx
            .sandbox
            .call("out_of_memory", &[Val::I32(path.secret)])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OutOfMemory, "{err}");
        assert!(
            err.to_string().contains("1048576"),
            "message names the limit: {err}"
        );
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn growth_within_the_limit_then_a_trap_is_a_trap_and_the_pages_are_gone() {
    on_every_path(|path| {
        let mut fx = path.fixture(|b| b.memory_limit(1 << 20));
        let err = fx
            .sandbox
            .call("grow_then_trap", &[Val::I32(path.secret)])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Trap(TrapCode::Unreachable), "{err}");
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn out_of_fuel() {
    on_every_path(|path| {
        let mut fx = path.fixture(|b| b.fuel(200_000));
        let err = fx
            .sandbox
            .call("spin", &[Val::I32(path.secret)])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OutOfFuel, "{err}");
        assert_clean_slate(&mut fx);
        // Fuel is per call: a later call gets the full amount again.
        assert_eq!(
            fx.sandbox.call("recurse", &[Val::I32(100)]).unwrap(),
            [Val::I32(100)]
        );
    });
}

#[test]
fn timeout_stops_an_infinite_loop() {
    on_every_path(|path| {
        let mut fx = path.fixture(|b| b.timeout(Duration::from_millis(50)));
        let err = fx
            .sandbox
            .call("spin", &[Val::I32(path.secret)])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn cancel_from_another_thread_mid_call() {
    on_every_path(|path| {
        let mut fx = path.fixture(|b| b);
        let handle = fx.sandbox.interrupt_handle();
        let canceller = thread::spawn(move || {
            // Wait until the call is really running, then stop it.
            while !handle.is_running() {
                thread::sleep(Duration::from_millis(1));
            }
            thread::sleep(Duration::from_millis(10));
            assert!(handle.cancel(), "a call was running");
        });
        let err = fx
            .sandbox
            .call("spin", &[Val::I32(path.secret)])
            .unwrap_err();
        canceller.join().unwrap();
        assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn cancel_with_no_call_running_does_not_affect_the_next_call() {
    on_every_path(|path| {
        let mut fx = path.fixture(|b| b.timeout(Duration::from_millis(30)));
        let handle = fx.sandbox.interrupt_handle();
        assert!(!handle.cancel(), "nothing was running");
        assert!(!handle.cancel());
        assert_eq!(
            fx.sandbox.call("recurse", &[Val::I32(10)]).unwrap(),
            [Val::I32(10)]
        );
        // A long call is stopped by its timeout, not by the stale cancel.
        let err = fx
            .sandbox
            .call("spin", &[Val::I32(path.secret)])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn host_function_panic_is_caught_and_reset() {
    on_every_path(|path| {
        let mut fx = path.fixture(|b| b);
        let err = fx
            .sandbox
            .call("call_host", &[Val::I32(path.secret), Val::I32(2)])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::HostPanic, "{err}");
        assert!(err.to_string().contains("exploded on purpose"), "{err}");
        assert_clean_slate(&mut fx);
    });
}

/// The embedder's own error type, to be found again behind the call's error.
#[derive(Debug)]
struct QuotaExceeded {
    tenant: &'static str,
}

impl std::fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tenant {} is over its quota", self.tenant)
    }
}

impl std::error::Error for QuotaExceeded {}

#[test]
fn host_function_error_keeps_the_embedders_error_as_its_source() {
    on_every_path(|path| {
        let mut fx = path.fixture(|b| {
            b.host_fn("cleanslate_demo", "host_op", |_| {
                Err(Box::new(QuotaExceeded { tenant: "acme" }))
            })
        });
        let err = fx
            .sandbox
            .call("call_host", &[Val::I32(path.secret), Val::I32(1)])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::HostError, "{err}");
        assert!(
            err.to_string().contains("tenant acme is over its quota"),
            "{err}"
        );
        let source = std::error::Error::source(&err).expect("the host's error is the source");
        let quota = source
            .downcast_ref::<QuotaExceeded>()
            .expect("the source is the embedder's own type");
        assert_eq!(quota.tenant, "acme");
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn host_function_returning_wrong_types_is_a_host_error() {
    let module = common::example_module();
    let mut sandbox = Sandbox::builder(&module)
        .host_fn("cleanslate_demo", "host_op", |_| Ok(vec![Val::I64(1)]))
        .build()
        .unwrap();
    let err = sandbox
        .call("call_host", &[Val::I32(common::SECRET), Val::I32(0)])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HostError, "{err}");
    assert!(err.to_string().contains("(i32) -> i32"), "{err}");
    assert_eq!(sandbox.call_typed::<(), i32>("read_secret", ()).unwrap(), 0);
}

#[test]
fn unknown_function_is_refused_and_changes_nothing() {
    on_every_path(|path| {
        let mut fx = path.fixture(|b| b);
        let err = fx.sandbox.call("no_such_function", &[]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FunctionNotFound);
        assert!(err.to_string().contains("add"), "lists what exists: {err}");
        // The rewrite's internal exports are not callable either.
        let err = fx.sandbox.call("cleanslate#memory:0", &[]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::FunctionNotFound);
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn wrong_arguments_are_refused_and_change_nothing() {
    on_every_path(|path| {
        let mut fx = path.fixture(|b| b);
        for args in [
            vec![],
            vec![Val::I32(1)],
            vec![Val::I32(1), Val::I64(2)],
            vec![Val::I32(1); 3],
        ] {
            let err = fx.sandbox.call("add", &args).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArguments, "{args:?}");
            assert!(err.to_string().contains("(i32, i32) -> i32"), "{err}");
        }
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn invalid_modules_are_typed_errors_with_the_parser_message() {
    let runtime = Runtime::new().unwrap();
    let err = runtime.load_bytes(b"\0asm\x01\0\0\0\x01\xff").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidModule);
    assert!(
        err.offset().is_some(),
        "binary errors carry an offset: {err}"
    );
    let err = runtime
        .load_bytes("(module (func (export \"f\") (result i32)))")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidModule);
    assert!(err.to_string().contains("type mismatch"), "{err}");
    let err = runtime.load_bytes("(module (fun))").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidModule);
    assert!(err.to_string().contains("invalid WAT"), "{err}");
    let err = runtime.load_bytes([0xffu8, 0xfe, 0x00]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidModule);
    let err = runtime.load_file("/no/such/module.wasm").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidModule);
    assert!(err.to_string().contains("/no/such/module.wasm"), "{err}");
}

#[test]
fn missing_imports_are_all_listed() {
    let runtime = Runtime::new().unwrap();
    let module = runtime
        .load_bytes(
            r#"(module
                (import "env" "a" (func (param i32)))
                (import "env" "b" (func (result i64)))
                (import "env" "mem" (memory 1))
                (import "other" "c" (func)))"#,
        )
        .unwrap();
    let err = Sandbox::builder(&module)
        .host_fn("env", "a", |_| Ok(vec![]))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MissingImport);
    let text = err.to_string();
    for name in ["env.b", "env.mem", "other.c"] {
        assert!(text.contains(name), "{name} not listed in: {text}");
    }
    assert!(!text.contains("env.a:"), "provided import listed: {text}");
}

#[test]
fn a_hundred_thousand_missing_imports_are_summarised_in_one_short_message() {
    let imports: String = (0..100_000)
        .map(|i| format!("(import \"env\" \"f{i}\" (func))"))
        .collect();
    let runtime = Runtime::new().unwrap();
    let module = runtime.load_bytes(format!("(module {imports})")).unwrap();
    let err = Sandbox::builder(&module).build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MissingImport);
    let text = err.to_string();
    assert!(text.len() < 4096, "{} bytes of error message", text.len());
    assert!(text.contains("100000 unresolved import"), "{text}");
    assert!(text.contains("env.f0:"), "the first ones are named: {text}");
    assert!(text.contains("99990 more"), "the rest are counted: {text}");
}

#[test]
fn init_failure_fails_the_build_with_its_kind() {
    let module = common::example_module();
    let err = common::with_host(Sandbox::builder(&module).init("trap_unreachable"))
        .build()
        .unwrap_err();
    // init takes no parameters: refused before running.
    assert_eq!(err.kind(), ErrorKind::InvalidArguments, "{err}");
    let runtime = Runtime::new().unwrap();
    let module = runtime
        .load_bytes(r#"(module (func (export "boom") unreachable))"#)
        .unwrap();
    let err = Sandbox::builder(&module).init("boom").build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Trap(TrapCode::Unreachable), "{err}");
    assert!(err.to_string().contains("init function `boom`"), "{err}");
}

#[test]
fn ten_thousand_alternating_calls_end_identical_to_the_snapshot() {
    on_every_path(|path| {
        let mut fx = path.fixture(|b| b.memory_limit(1 << 20).fuel(1_000_000));
        let failing = [
            "trap_unreachable",
            "trap_memory_out_of_bounds",
            "trap_null_reference",
            "out_of_memory",
            "grow_then_trap",
            "spin",
        ];
        for i in 0..10_000u32 {
            if i % 2 == 0 {
                let f = failing[(i as usize / 2) % failing.len()];
                assert!(
                    fx.sandbox
                        .call(f, &[Val::I32(path.secret ^ i as i32)])
                        .is_err(),
                    "{f}"
                );
            } else {
                fx.sandbox
                    .call("leave_secret", &[Val::I32(path.secret ^ i as i32)])
                    .unwrap();
                assert_eq!(
                    fx.sandbox.call_typed::<(), i32>("read_secret", ()).unwrap(),
                    0
                );
            }
        }
        assert_clean_slate(&mut fx);
    });
}

/// A short timeout fires on time even while a call with a far later
/// deadline runs in the same runtime (the timer, asleep towards the later
/// deadline, must be woken for the earlier one).
#[test]
fn a_short_timeout_fires_while_a_long_one_runs() {
    let runtime = Runtime::new().unwrap();
    let module = runtime
        .load_bytes(r#"(module (func (export "spin") (loop $l (br $l))))"#)
        .unwrap();
    let mut long = Sandbox::builder(&module)
        .timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    let stop_long = long.interrupt_handle();
    let long_call = std::thread::spawn(move || long.call("spin", &[]).unwrap_err());
    let mut short = Sandbox::builder(&module)
        .timeout(Duration::from_millis(30))
        .build()
        .unwrap();
    let err = short.call("spin", &[]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    while !stop_long.cancel() {
        std::thread::yield_now();
    }
    assert_eq!(long_call.join().unwrap().kind(), ErrorKind::Cancelled);
}
