//! Bytes and JSON across the boundary (docs/ABI.md): round trips, host
//! functions over bytes, every new error kind, and a hostile guest — each
//! failure followed by the clean-slate check, on both reset paths.

mod common;

use cleanslate::{Call, ErrorKind, ResetStrategy, Runtime, Sandbox, SandboxBuilder, Status};
use common::{Twin as Fixture, assert_matches_twin, on_both_strategies as on_both_paths};

const HOSTILE_WAT: &str = include_str!("../../../guests/hostile_data.wat");

fn with_kv(builder: SandboxBuilder) -> SandboxBuilder {
    builder.host_fn_bytes("kv", "get", |ctx, key| {
        assert_eq!(ctx.function(), "kv.get");
        match key {
            b"colour" => Ok(format!("teal (for {})", ctx.export()).into_bytes()),
            b"boom" => panic!("the kv store exploded"),
            b"" => Ok(Vec::new()),
            other => Err(format!("no key {:?}", String::from_utf8_lossy(other)).into()),
        }
    })
}

fn fixture(
    strategy: ResetStrategy,
    configure: impl Fn(SandboxBuilder) -> SandboxBuilder,
) -> Fixture {
    let module = Runtime::new().unwrap().load_bytes(HOSTILE_WAT).unwrap();
    common::twin(&module, |b| configure(with_kv(b.reset_strategy(strategy))))
}

/// The twin check, and the guest itself sees no secret.
fn assert_clean_slate(fx: &mut Fixture) {
    assert_matches_twin(fx);
    assert_eq!(fx.sandbox.snapshot().unwrap().memory_sizes(), vec![65536]);
    assert_eq!(
        fx.sandbox.call_typed::<(), i32>("read_secret", ()).unwrap(),
        0
    );
}

#[test]
fn bytes_round_trip_and_reset() {
    on_both_paths(|strategy| {
        let mut fx = fixture(strategy, |b| b);
        assert_eq!(fx.sandbox.call_bytes("echo", b"hello").unwrap(), b"hello");
        assert_clean_slate(&mut fx);
        assert_eq!(
            fx.sandbox.call_bytes("upper", b"shout, please").unwrap(),
            b"SHOUT, PLEASE"
        );
        assert_clean_slate(&mut fx);
        // Empty input needs no allocation and gives empty output.
        assert_eq!(fx.sandbox.call_bytes("echo", b"").unwrap(), b"");
        // Large input: the guest's allocator grows memory; the reset takes
        // the growth back.
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(fx.sandbox.call_bytes("echo", &big).unwrap(), big);
        assert_clean_slate(&mut fx);
        assert_eq!(fx.sandbox.call_bytes("grow_then_echo", b"x").unwrap(), b"x");
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn json_round_trip() {
    let mut fx = fixture(ResetStrategy::Auto, |b| b);
    let input = serde_json::json!({"name": "ada", "tags": ["x", "y"], "n": 3});
    let back: serde_json::Value = fx.sandbox.call_json("echo", &input).unwrap();
    assert_eq!(back, input);
    // Output that is not JSON of the requested type blames the guest.
    let err = fx
        .sandbox
        .call_json::<_, u32>("upper", "not a number")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidGuestOutput, "{err}");
    assert_clean_slate(&mut fx);
}

#[test]
fn host_functions_over_bytes_round_trip() {
    on_both_paths(|strategy| {
        let mut fx = fixture(strategy, |b| b);
        assert_eq!(
            fx.sandbox.call_bytes("lookup", b"colour").unwrap(),
            b"teal (for lookup)"
        );
        assert_clean_slate(&mut fx);
        assert_eq!(
            fx.sandbox.call_bytes("lookup_by_name", b"colour").unwrap(),
            b"teal (for lookup_by_name)"
        );
        assert_eq!(fx.sandbox.call_bytes("lookup", b"").unwrap(), b"");
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn host_function_errors_and_panics_fail_the_call_and_reset() {
    on_both_paths(|strategy| {
        let mut fx = fixture(strategy, |b| b);
        let err = fx.sandbox.call_bytes("lookup", b"shape").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::HostError, "{err}");
        assert!(err.message().contains("no key \"shape\""), "{err}");
        assert_clean_slate(&mut fx);
        let err = fx
            .sandbox
            .call_bytes("lookup_by_name", b"boom")
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::HostPanic, "{err}");
        assert!(err.message().contains("the kv store exploded"), "{err}");
        assert_clean_slate(&mut fx);
        let err = fx
            .sandbox
            .call_bytes("call_missing_host_fn", b"")
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::HostError, "{err}");
        assert!(err.message().contains("nope.missing"), "{err}");
        assert!(err.message().contains("kv.get"), "lists what exists: {err}");
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn guest_errors_and_panics_carry_the_guests_message() {
    on_both_paths(|strategy| {
        let mut fx = fixture(strategy, |b| b);
        let err = fx.sandbox.call_bytes("fail", b"bad order #7").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::GuestError, "{err}");
        assert_eq!(err.guest_message(), Some("bad order #7"));
        assert_clean_slate(&mut fx);
        let err = fx.sandbox.call_bytes("panics", b"").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::GuestPanic, "{err}");
        assert_eq!(err.guest_message(), Some("the guest gave up"));
        assert_clean_slate(&mut fx);
        // A panic message outside memory is an ABI violation, not a read.
        let err = fx
            .sandbox
            .call_bytes("panic_message_past_the_end", b"")
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidGuestOutput, "{err}");
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn hostile_outputs_are_refused_without_reading_outside_memory() {
    on_both_paths(|strategy| {
        let mut fx = fixture(strategy, |b| b);
        for function in [
            "bad_status",
            "output_past_the_end",
            "huge_length",
            "pointer_wraps",
            "record_past_the_end",
        ] {
            let err = fx.sandbox.call_bytes(function, b"in").unwrap_err();
            // A u32::MAX length is over the output limit before it is out
            // of bounds; either way nothing is read.
            let expected = if function == "huge_length" {
                ErrorKind::OutputTooLarge
            } else {
                ErrorKind::InvalidGuestOutput
            };
            assert_eq!(err.kind(), expected, "{function}: {err}");
            assert_clean_slate(&mut fx);
        }
    });
}

#[test]
fn hostile_host_calls_are_refused() {
    on_both_paths(|strategy| {
        let mut fx = fixture(strategy, |b| b);
        let err = fx
            .sandbox
            .call_bytes("host_input_past_the_end", b"")
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidGuestOutput, "{err}");
        assert_clean_slate(&mut fx);
        let err = fx.sandbox.call_bytes("host_input_huge", b"").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OutputTooLarge, "{err}");
        assert_clean_slate(&mut fx);
        let err = fx
            .sandbox
            .call_bytes("host_name_past_the_end", b"")
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidGuestOutput, "{err}");
        assert_clean_slate(&mut fx);
        // A name longer than any host function's is refused by its real
        // length, not the length of the prefix that was looked at.
        let err = fx.sandbox.call_bytes("host_name_huge", b"").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidGuestOutput, "{err}");
        assert!(err.to_string().contains("4294967295"), "{err}");
        assert!(!err.to_string().contains("65536"), "{err}");
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn output_over_the_limit_is_refused() {
    on_both_paths(|strategy| {
        let mut fx = fixture(strategy, |b| b.output_limit(1024));
        let err = fx.sandbox.call_bytes("big_output", b"").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OutputTooLarge, "{err}");
        assert!(err.message().contains("1024"), "{err}");
        assert_clean_slate(&mut fx);
        // Exactly at the limit passes.
        let input = vec![b'a'; 1024];
        assert_eq!(fx.sandbox.call_bytes("echo", &input).unwrap(), input);
        // Host-call input counts against it too.
        let err = fx
            .sandbox
            .call_bytes("lookup", &vec![b'k'; 1025])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OutputTooLarge, "{err}");
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn allocator_failures_are_typed() {
    on_both_paths(|strategy| {
        let mut fx = fixture(strategy, |b| b);
        // The guest's allocator returns 0 for 1313 bytes...
        let err = fx.sandbox.call_bytes("echo", &[1; 1313]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OutOfMemory, "{err}");
        assert_clean_slate(&mut fx);
        // ...and a pointer past the end for 1717.
        let err = fx.sandbox.call_bytes("echo", &[1; 1717]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidGuestOutput, "{err}");
        assert_clean_slate(&mut fx);
        // Input beyond the memory limit: the allocator cannot grow.
        let mut fx = fixture(strategy, |b| b.memory_limit(1 << 20));
        let err = fx
            .sandbox
            .call_bytes("echo", &vec![0; 2 << 20])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::OutOfMemory, "{err}");
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn wrong_signatures_and_missing_allocator_are_refused_before_running() {
    let mut fx = fixture(ResetStrategy::Auto, |b| b);
    let resets = fx.sandbox.resets();
    let err = fx
        .sandbox
        .call_bytes("not_a_data_function", b"x")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArguments, "{err}");
    assert!(err.message().contains("docs/ABI.md"), "{err}");
    let err = fx.sandbox.call_bytes("nothing_here", b"x").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FunctionNotFound, "{err}");
    assert_eq!(fx.sandbox.resets(), resets, "nothing ran, nothing to reset");

    let runtime = Runtime::new().unwrap();
    let module = runtime
        .load_bytes(
            r#"(module (memory 1) (func (export "f") (param i32 i32) (result i32) (i32.const 0)))"#,
        )
        .unwrap();
    let mut sandbox = Sandbox::builder(&module).build().unwrap();
    let err = sandbox.call_bytes("f", b"input").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FunctionNotFound, "{err}");
    assert!(err.message().contains("cleanslate_alloc"), "{err}");
    // Without input no allocator is needed.
    assert_eq!(sandbox.call_bytes("f", b"").unwrap(), b"");
}

#[test]
fn bytes_host_function_imported_with_the_wrong_type_is_a_missing_import() {
    let runtime = Runtime::new().unwrap();
    let module = runtime
        .load_bytes(r#"(module (import "kv" "get" (func (param i32) (result i32))))"#)
        .unwrap();
    let err = with_kv(Sandbox::builder(&module)).build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MissingImport, "{err}");
    assert!(err.message().contains("(i32, i32) -> i64"), "{err}");
}

#[test]
fn json_host_functions_decode_and_blame_malformed_guest_input() {
    #[derive(serde::Deserialize)]
    struct Lookup {
        key: String,
    }
    let runtime = Runtime::new().unwrap();
    let module = runtime.load_bytes(HOSTILE_WAT).unwrap();
    let build = || {
        Sandbox::builder(&module)
            .host_fn_json("kv", "get", |_ctx, req: Lookup| {
                Ok(serde_json::json!({ "key": req.key, "len": req.key.len() }))
            })
            .build()
            .unwrap()
    };
    let mut sandbox = build();
    let mut fx = Fixture {
        fresh: build().snapshot().unwrap(),
        sandbox: build(),
    };
    let answer: serde_json::Value = sandbox
        .call_json("lookup", &serde_json::json!({"key": "abc"}))
        .unwrap();
    assert_eq!(answer, serde_json::json!({"key": "abc", "len": 3}));
    let err = fx.sandbox.call_bytes("lookup", b"{not json").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidGuestOutput, "{err}");
    assert_clean_slate(&mut fx);
}

#[test]
fn call_with_carries_bytes_output() {
    let mut fx = fixture(ResetStrategy::Auto, |b| b);
    let result = fx.sandbox.call_with(&Call::bytes("upper", "abc")).unwrap();
    assert_eq!(result.output(), Some(&b"ABC"[..]));
    assert_eq!(result.exit_code(), None);
    assert!(result.stdout().is_empty());
    let result = fx
        .sandbox
        .call_with(&Call::json("echo", &serde_json::json!([1, 2])).unwrap())
        .unwrap();
    assert_eq!(result.output_json::<Vec<u32>>().unwrap(), [1, 2]);
    assert_clean_slate(&mut fx);
}

#[test]
fn sessions_keep_state_across_bytes_calls_and_reset_at_the_end() {
    let mut fx = fixture(ResetStrategy::Auto, |b| b);
    {
        let mut session = fx.sandbox.session();
        assert_eq!(session.call_bytes("echo", b"one").unwrap(), b"one");
        // The secret `echo` left is still there inside the session...
        assert_eq!(
            session.call("read_secret", &[]).unwrap(),
            [cleanslate::Val::I32(2 * 0x5EC2E7)]
        );
        let result = session.call_with(&Call::bytes("upper", "two")).unwrap();
        assert_eq!(result.output(), Some(&b"TWO"[..]));
        // ...and a guest failure poisons the session.
        let err = session.call_bytes("fail", b"stop").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::GuestError);
        assert_eq!(session.status(), Status::Poisoned);
    }
    assert_clean_slate(&mut fx);
}
