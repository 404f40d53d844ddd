//! The Rust example guests (guests/rust, written with the cleanslate-guest
//! SDK), built from source and run: JSON with serde, a host function, and
//! every way of failing — each failure followed by the clean-slate check.

mod common;

use std::time::Duration;

use cleanslate::{ErrorKind, ResetStrategy, Runtime, SandboxBuilder};
use common::build::rust_guest;
use common::{
    Twin as Fixture, assert_matches_twin as assert_clean_slate, on_both_strategies as on_both_paths,
};
use serde_json::json;

fn fixture(
    guest: &str,
    strategy: ResetStrategy,
    configure: impl Fn(SandboxBuilder) -> SandboxBuilder,
) -> Fixture {
    let module = Runtime::new()
        .unwrap()
        .load_file(rust_guest(guest))
        .unwrap();
    common::twin(&module, |b| configure(b.reset_strategy(strategy)))
}

#[test]
fn json_transform_guest_round_trips_with_serde() {
    on_both_paths(|strategy| {
        let mut fx = fixture("json-transform", strategy, |b| b);
        let order = json!({
            "customer": "ada",
            "items": [
                {"name": "pen", "cents": 150, "quantity": 4},
                {"name": "lamp", "cents": 2999, "quantity": 1}
            ]
        });
        let summary: serde_json::Value = fx.sandbox.call_json("summarise", &order).unwrap();
        assert_eq!(
            summary,
            json!({"customer": "ada", "lines": 2, "total_cents": 3599, "most_expensive": "lamp"})
        );
        assert_clean_slate(&mut fx);
        // The same call again gives the same answer from the same state.
        let again: serde_json::Value = fx.sandbox.call_json("summarise", &order).unwrap();
        assert_eq!(again, summary);

        let err = fx
            .sandbox
            .call_json::<_, serde_json::Value>(
                "summarise",
                &json!({"customer": "bob", "items": []}),
            )
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::GuestError, "{err}");
        assert_eq!(
            err.guest_message(),
            Some("an order needs at least one item")
        );
        assert_clean_slate(&mut fx);

        let err = fx
            .sandbox
            .call_bytes("summarise", b"{\"customer\": 7")
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::GuestError, "{err}");
        assert!(
            err.guest_message()
                .unwrap()
                .contains("not JSON of the expected shape"),
            "{err}"
        );
        assert_clean_slate(&mut fx);

        assert_eq!(fx.sandbox.call_bytes("shout", b"quiet").unwrap(), b"QUIET");
        let kib: Vec<u8> = (0..1024).map(|i| b'a' + (i % 26) as u8).collect();
        assert_eq!(
            fx.sandbox.call_bytes("shout", &kib).unwrap(),
            kib.to_ascii_uppercase()
        );
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn kv_lookup_guest_calls_the_host() {
    on_both_paths(|strategy| {
        let mut fx = fixture("kv-lookup", strategy, |b| {
            b.host_fn_bytes("kv", "get", |ctx, key| {
                assert_eq!(ctx.export(), "lookup");
                match key {
                    b"colour" => Ok(b"teal".to_vec()),
                    b"size" => Ok(b"large".to_vec()),
                    other => Err(format!("no key {}", String::from_utf8_lossy(other)).into()),
                }
            })
        });
        let answer: serde_json::Value = fx
            .sandbox
            .call_json("lookup", &json!({"keys": ["colour", "size"]}))
            .unwrap();
        assert_eq!(
            answer,
            json!([{"key": "colour", "value": "teal"}, {"key": "size", "value": "large"}])
        );
        assert_clean_slate(&mut fx);
        let err = fx
            .sandbox
            .call_json::<_, serde_json::Value>("lookup", &json!({"keys": ["colour", "weight"]}))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::HostError, "{err}");
        assert!(err.message().contains("no key weight"), "{err}");
        assert_clean_slate(&mut fx);
    });
}

#[test]
fn misbehaving_guest_fails_in_every_way_and_leaves_a_clean_slate() {
    on_both_paths(|strategy| {
        let mut fx = fixture("misbehave", strategy, |b| {
            b.memory_limit(16 << 20)
                .stack_limit(256 * 1024)
                .timeout(Duration::from_millis(100))
        });
        let traces = |fx: &mut Fixture| fx.sandbox.call_bytes("traces", b"").unwrap();
        assert_eq!(fx.sandbox.call_bytes("misbehave", b"ok").unwrap(), b"fine");
        for (how, kind, says) in [
            ("error", ErrorKind::GuestError, "you asked for an error"),
            ("panic", ErrorKind::GuestPanic, "you asked for a panic"),
            ("oom", ErrorKind::OutOfMemory, "memory"),
            ("recurse", ErrorKind::StackOverflow, "stack"),
            ("loop", ErrorKind::Timeout, "timeout"),
            ("nonsense", ErrorKind::GuestError, "unknown failure"),
        ] {
            let err = fx
                .sandbox
                .call_bytes("misbehave", how.as_bytes())
                .unwrap_err();
            assert_eq!(err.kind(), kind, "{how}: {err}");
            assert!(err.message().contains(says), "{how}: {err}");
            assert_clean_slate(&mut fx);
            // The guest's own counter of failed calls is back at zero: the
            // static a Rust guest keeps in linear memory was reset too.
            assert_eq!(traces(&mut fx), 0u32.to_le_bytes(), "{how}");
        }
        let err = fx.sandbox.call_bytes("misbehave", b"panic").unwrap_err();
        assert!(
            err.guest_message()
                .unwrap()
                .contains("misbehave/src/lib.rs"),
            "the panic location is reported: {err}"
        );
    });
}
