//! A host function that fails 1,000 times must not grow the process: every
//! failed call's instance, store and error are released by the reset.
//!
//! Alone in its own test binary so that no other test's allocations run
//! concurrently in the process whose resident memory it measures.

mod common;

use cleanslate::{ErrorKind, Val};
use common::{assert_clean_slate, on_every_path};

#[test]
fn host_function_error_a_thousand_times_without_growth() {
    on_every_path(|path| {
        let mut fx = path.fixture(|b| b);
        let call_failing_host = |fx: &mut common::Fixture| {
            let err = fx
                .sandbox
                .call("call_host", &[Val::I32(path.secret), Val::I32(1)])
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::HostError, "{err}");
            assert!(
                err.to_string().contains("the host refused the operation"),
                "{err}"
            );
        };
        for _ in 0..100 {
            call_failing_host(&mut fx);
        }
        let before = common::rss_bytes();
        for _ in 0..1000 {
            call_failing_host(&mut fx);
        }
        let after = common::rss_bytes();
        let growth = after.saturating_sub(before);
        assert!(
            growth < 4 << 20,
            "process memory grew by {growth} bytes over 1000 failing calls"
        );
        assert_clean_slate(&mut fx);
        // The same host function succeeds when asked to.
        assert_eq!(
            fx.sandbox
                .call("call_host", &[Val::I32(path.secret), Val::I32(0)])
                .unwrap(),
            [Val::I32(7)]
        );
    });
}
