//! Shared fixtures: the example guest, its host function, and the clean-slate
//! check every exit-path test ends with.
#![allow(dead_code)]

pub mod build;

use cleanslate::{
    Module, ResetPath, ResetStrategy, Runtime, Sandbox, SandboxBuilder, Snapshot, Status, Val,
};

pub const EXAMPLE_WAT: &str = include_str!("../../../../guests/example.wat");

/// A value the failing calls write into memory, a global and a table slot;
/// it must never be seen again.
pub const SECRET: i32 = 0x5EC2E7;
/// The same, with the bit that makes the guest also grow memory and the
/// table and drop segments (changes only a fresh instance can undo).
pub const SECRET_EVERYWHERE: i32 = SECRET | 0x4000_0000;

/// One way of resetting a sandbox that every exit-path test runs under.
#[derive(Clone, Copy, Debug)]
pub struct Path {
    pub name: &'static str,
    pub strategy: ResetStrategy,
    /// The secret the calls leave.
    pub secret: i32,
}

/// The same, with the bit that makes the guest also grow memory by two
/// pages and leave the secret in the second: undone in place.
pub const SECRET_IN_GROWN_MEMORY: i32 = SECRET | 0x2000_0000;

/// In place (the common case), in place after the call grew memory, in
/// place falling back to a fresh instance (table growth and dropped
/// segments), and fresh instances only.
pub const PATHS: [Path; 4] = [
    Path {
        name: "in_place",
        strategy: ResetStrategy::Auto,
        secret: SECRET,
    },
    Path {
        name: "in_place_after_growth",
        strategy: ResetStrategy::Auto,
        secret: SECRET_IN_GROWN_MEMORY,
    },
    Path {
        name: "auto_with_fallbacks",
        strategy: ResetStrategy::Auto,
        secret: SECRET_EVERYWHERE,
    },
    Path {
        name: "fresh_instance",
        strategy: ResetStrategy::FreshInstance,
        secret: SECRET_EVERYWHERE,
    },
];

impl Path {
    pub fn fixture(&self, configure: impl Fn(SandboxBuilder) -> SandboxBuilder) -> Fixture {
        let strategy = self.strategy;
        let mut fx = fixture(move |b| configure(b.reset_strategy(strategy)));
        // Where the machine tracks writes, everything but table growth and
        // dropped segments is undone in place.
        fx.expect_in_place = strategy == ResetStrategy::Auto
            && self.secret & SECRET_EVERYWHERE & !SECRET == 0
            && expect_tracking();
        fx
    }
}

/// Run `test` once per reset path, naming the path when it fails.
pub fn on_every_path(test: impl Fn(Path)) {
    for path in PATHS {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(path)));
        if let Err(panic) = outcome {
            eprintln!("failed on reset path `{}`", path.name);
            std::panic::resume_unwind(panic);
        }
    }
}

/// Whether this machine must support in-place resets (CI sets it).
pub fn expect_tracking() -> bool {
    std::env::var_os("CLEANSLATE_EXPECT_TRACKING").is_some()
}

pub fn example_module() -> Module {
    Runtime::new().unwrap().load_bytes(EXAMPLE_WAT).unwrap()
}

/// `cleanslate_demo.host_op`: 0 succeeds with 7, 1 returns an error, 2 panics.
pub fn with_host(builder: SandboxBuilder) -> SandboxBuilder {
    builder.host_fn("cleanslate_demo", "host_op", |args| match args {
        [Val::I32(0)] => Ok(vec![Val::I32(7)]),
        [Val::I32(1)] => Err("the host refused the operation".into()),
        [Val::I32(2)] => panic!("host function exploded on purpose"),
        other => Err(format!("unexpected arguments {other:?}").into()),
    })
}

/// A sandbox of the example guest, plus the snapshot of an independently
/// built twin: the oracle for "equal to a fresh sandbox".
pub struct Fixture {
    pub sandbox: Sandbox,
    pub fresh: Snapshot,
    /// The last call's reset must have run in place.
    pub expect_in_place: bool,
}

pub fn fixture(configure: impl Fn(SandboxBuilder) -> SandboxBuilder) -> Fixture {
    let module = example_module();
    let build = || {
        configure(with_host(Sandbox::builder(&module).init("init")))
            .build()
            .unwrap()
    };
    let sandbox = build();
    let fresh = build().snapshot().unwrap();
    Fixture {
        sandbox,
        fresh,
        expect_in_place: false,
    }
}

/// Check every kind of state against the fresh twin and through the guest's
/// own eyes, then that the sandbox still computes what a fresh one does.
pub fn assert_clean_slate(fx: &mut Fixture) {
    let sandbox = &mut fx.sandbox;
    assert_eq!(sandbox.status(), Status::Ready);
    // (A refused call runs nothing and is not reset: the last report
    // stays the previous call's.)
    if let (true, Some(report)) = (fx.expect_in_place, sandbox.last_reset()) {
        assert_eq!(report.path(), ResetPath::InPlace, "{report:?}");
    }
    let now = sandbox.snapshot().unwrap();
    let diff = fx.fresh.differences(&now);
    assert!(
        diff.is_empty(),
        "state differs from a fresh sandbox: {diff:?}"
    );
    assert_eq!(now.memory_sizes(), vec![65536], "grown pages are gone");

    let i32_of = |sandbox: &mut Sandbox, f: &str| sandbox.call_typed::<(), i32>(f, ()).unwrap();
    assert_eq!(i32_of(sandbox, "read_secret"), 0, "memory secret visible");
    assert_eq!(
        sandbox.call_typed::<(), i64>("read_global", ()).unwrap(),
        0,
        "global secret visible"
    );
    assert_eq!(
        i32_of(sandbox, "table_slot_3_is_null"),
        1,
        "table secret visible"
    );
    assert_eq!(i32_of(sandbox, "table_size"), 4, "table growth visible");
    assert_eq!(i32_of(sandbox, "memory_pages"), 1, "memory growth visible");
    assert_eq!(
        i32_of(sandbox, "read_passive"),
        i32::from_le_bytes(*b"pass"),
        "dropped segment visible"
    );
    assert_eq!(
        i32_of(sandbox, "grow_and_read"),
        0,
        "a later grow must yield zeroed pages"
    );
    assert_eq!(
        i32_of(sandbox, "initialised"),
        1 + 0x1217,
        "init's effects are part of the snapshot"
    );
    assert_eq!(i32_of(sandbox, "read_calls"), 0, "call counter survived");
    assert_eq!(
        sandbox
            .call_typed::<(i32, i32), i32>("add", (2, 3))
            .unwrap(),
        5
    );
}

/// Resident set size of this process in bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A sandbox of any module plus the snapshot of an independently built twin
/// (the oracle for "equal to a fresh sandbox").
pub struct Twin {
    pub sandbox: Sandbox,
    pub fresh: Snapshot,
}

pub fn twin(module: &Module, configure: impl Fn(SandboxBuilder) -> SandboxBuilder) -> Twin {
    let build = || configure(Sandbox::builder(module)).build().unwrap();
    let sandbox = build();
    let fresh = build().snapshot().unwrap();
    Twin { sandbox, fresh }
}

/// Memory bytes and size, globals and tables equal the twin's.
pub fn assert_matches_twin(twin: &mut Twin) {
    assert_eq!(twin.sandbox.status(), Status::Ready);
    let now = twin.sandbox.snapshot().unwrap();
    let diff = twin.fresh.differences(&now);
    assert!(
        diff.is_empty(),
        "state differs from a fresh sandbox: {diff:?}"
    );
    assert_eq!(now.memory_sizes(), twin.fresh.memory_sizes());
}

/// Run `test` with each reset strategy, naming it when it fails.
pub fn on_both_strategies(test: impl Fn(ResetStrategy)) {
    for strategy in [ResetStrategy::Auto, ResetStrategy::FreshInstance] {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(strategy)));
        if let Err(panic) = outcome {
            eprintln!("failed with reset strategy {strategy:?}");
            std::panic::resume_unwind(panic);
        }
    }
}
