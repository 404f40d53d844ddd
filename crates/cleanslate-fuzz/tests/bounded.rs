//! Bounded runs of every fuzz target, so each CI run searches a few
//! thousand inputs per target (docs/RELIABILITY.md has the long runs).
//!
//! Inputs are seeded pseudo-random bytes; a failure names its seed, and
//! `CLEANSLATE_FUZZ_FIRST_SEED=<seed> CLEANSLATE_FUZZ_CASES=1` replays it.
//! `CLEANSLATE_FUZZ_CASES` also scales a run up (every target runs that
//! many inputs).

use cleanslate_fuzz::{Finding, Tally, guest_output, load_module, reset_invariant, seeded_bytes};

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Run `target` on `cases` seeded inputs of `len` bytes; fail with every
/// finding, each named by its seed.
fn run(
    name: &str,
    cases: u64,
    len: usize,
    target: fn(&[u8], &mut Tally) -> Result<(), Finding>,
) -> Tally {
    let cases = env("CLEANSLATE_FUZZ_CASES").unwrap_or(cases);
    let first = env("CLEANSLATE_FUZZ_FIRST_SEED").unwrap_or(0);
    let mut tally = Tally::default();
    let mut findings = Vec::new();
    for seed in first..first + cases {
        // Vary the length too: short inputs reach other code than long.
        let input = seeded_bytes(seed, len / 4 + (seed as usize * 7919) % len);
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&input, &mut tally)));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(finding)) => findings.push(format!("seed {seed}: {finding}")),
            Err(_) => findings.push(format!("seed {seed}: panicked")),
        }
    }
    eprintln!("{name}: {tally}; {} findings", findings.len());
    assert!(
        findings.is_empty(),
        "{name} findings:\n{}",
        findings.join("\n")
    );
    tally
}

#[test]
fn reset_invariant_holds_for_random_modules_and_calls() {
    let tally = run("reset_invariant", 1_000, 16 * 1024, reset_invariant::check);
    // The search must actually search: most inputs give a sandbox, and the
    // calls end every way a call can.
    assert!(tally.skipped * 2 < tally.inputs, "{tally}");
    assert!(tally.calls > tally.inputs * 4, "{tally}");
    for outcome in ["ok", "out_of_fuel", "timeout", "cancelled"] {
        assert!(tally.count(outcome) > 0, "no call ended {outcome}: {tally}");
    }
    let traps: u64 = tally
        .outcomes
        .iter()
        .filter(|(k, _)| k.starts_with("trap_"))
        .map(|(_, n)| n)
        .sum();
    assert!(traps > 0, "no call trapped: {tally}");
    // Some modules are built around passive segments of every reference
    // type and the tables that use them (issue 14 item 2).
    assert!(
        tally.count("segment_module") > 0,
        "no segment module: {tally}"
    );
    // Resets that skip the scan are checked too, where the machine has them.
    if std::env::var_os("CLEANSLATE_EXPECT_TRACKING").is_some() {
        assert!(
            tally.resets_without_scan > 0,
            "no reset skipped the scan: {tally}"
        );
        // Calls that grew memory are undone in place, and checked.
        assert!(
            tally.count("growth_undone_in_place") > 0,
            "no growth was undone in place: {tally}"
        );
    }
}

#[test]
fn loading_any_bytes_gives_a_sandbox_or_a_typed_error() {
    let tally = run("load_module", 3_000, 4 * 1024, load_module::check);
    for outcome in [
        "raw_input",
        "text_input",
        "generated_input",
        "generated_any_proposal_input",
        "damaged_input",
        "invalid_module",
        "loaded",
        "built",
    ] {
        assert!(tally.count(outcome) > 0, "never {outcome}: {tally}");
    }
}

#[test]
fn hostile_guest_output_gives_typed_errors_and_the_sandbox_resets() {
    let tally = run("guest_output", 2_000, 1024, guest_output::check);
    for outcome in [
        "ok",
        "invalid_guest_output",
        "output_too_large",
        "guest_error",
        "guest_panic",
        "host_error",
        "host_panic",
        "trap_memory_out_of_bounds",
    ] {
        assert!(tally.count(outcome) > 0, "no call ended {outcome}: {tally}");
    }
}
