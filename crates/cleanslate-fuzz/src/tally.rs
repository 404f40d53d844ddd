//! What a run of a target exercised, and what it found.

use std::collections::BTreeMap;
use std::fmt;

/// A broken property: what input, what call, what differed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding(pub String);

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Finding {}

/// Counts of what the inputs exercised, so a bounded run can prove it
/// searched (a generator that degenerated into skipping everything would
/// otherwise pass silently).
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Inputs given to the target.
    pub inputs: u64,
    /// Inputs that produced no sandbox to check (the module was refused or
    /// its start failed): not findings, but not searched either.
    pub skipped: u64,
    /// Guest calls made and checked.
    pub calls: u64,
    /// How calls (or loads, for `load_module`) ended, by outcome name.
    pub outcomes: BTreeMap<String, u64>,
    /// In-place resets that skipped the page-table scan (only hot pages
    /// could have been written), each checked like every other.
    pub resets_without_scan: u64,
}

impl Tally {
    pub(crate) fn saw(&mut self, outcome: impl Into<String>) {
        *self.outcomes.entry(outcome.into()).or_default() += 1;
    }

    /// How often `outcome` was seen.
    pub fn count(&self, outcome: &str) -> u64 {
        self.outcomes.get(outcome).copied().unwrap_or(0)
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} inputs ({} skipped), {} calls checked ({} in-place resets without a scan); outcomes:",
            self.inputs, self.skipped, self.calls, self.resets_without_scan
        )?;
        for (outcome, n) in &self.outcomes {
            write!(f, " {outcome}={n}")?;
        }
        Ok(())
    }
}

/// The snake_case name of a call's outcome.
pub(crate) fn outcome_name<T>(outcome: &Result<T, cleanslate::Error>) -> String {
    match outcome {
        Ok(_) => "ok".to_string(),
        Err(e) => match e.kind() {
            cleanslate::ErrorKind::Trap(code) => format!("trap_{}", code.as_str()),
            kind => kind.as_str().to_string(),
        },
    }
}
