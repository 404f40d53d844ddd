//! What a pool has done: calls by function and outcome, reset durations and
//! dirty pages, waits for a sandbox, sandboxes in use, as plain Rust values
//! (the command line's server renders them as Prometheus text).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use crate::error::ErrorKind;

/// The label of calls to functions the module does not export.
const UNKNOWN_FUNCTION: &str = "(unknown)";

/// Upper bounds (µs) of the reset-duration and wait-time buckets.
const MICROS_BUCKETS: [f64; 12] = [
    1.0,
    2.5,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    1_000.0,
    10_000.0,
    100_000.0,
    1_000_000.0,
];
/// Upper bounds of the dirty-page buckets.
const PAGE_BUCKETS: [f64; 9] = [0.0, 1.0, 2.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0];

/// A cumulative histogram: how many observations fell at or below each bound.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last counts what is above every bound.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len());
        self.counts[bucket] += 1;
        self.sum += value;
        self.count += 1;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of all observations.
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// `(upper bound, observations at or below it)`, cumulative, ending with
    /// `(+inf, count)`.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        let mut out: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(&bound, &n)| {
                total += n;
                (bound, total)
            })
            .collect();
        out.push((f64::INFINITY, self.count));
        out
    }
}

/// A snapshot of a pool's metrics.
///
/// ```
/// # use cleanslate::{PoolConfig, Runtime, Sandbox, SandboxPool};
/// # let runtime = Runtime::new()?;
/// # let module = runtime.load_bytes(r#"(module (func (export "f")))"#)?;
/// let pool = SandboxPool::new(Sandbox::builder(&module), PoolConfig::new(1))?;
/// pool.call("f", &[])?;
/// let metrics = pool.metrics();
/// assert_eq!(metrics.calls("f", "ok"), 1);
/// assert_eq!(metrics.reset_micros().count(), 1);
/// # Ok::<(), cleanslate::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct PoolMetrics {
    /// Function -> outcome -> calls.
    calls: BTreeMap<String, BTreeMap<&'static str, u64>>,
    reset_micros: Histogram,
    dirty_pages: Histogram,
    wait_micros: Histogram,
    in_use: u64,
    size: u64,
    replacements: u64,
    exhausted: u64,
}

impl PoolMetrics {
    /// Calls of `function` that ended with `outcome` (`"ok"` or an error
    /// kind's name, e.g. `"trap"`).
    pub fn calls(&self, function: &str, outcome: &str) -> u64 {
        self.calls
            .get(function)
            .and_then(|outcomes| outcomes.get(outcome))
            .copied()
            .unwrap_or(0)
    }

    /// All calls, whatever their outcome (refusals for exhaustion included).
    pub fn calls_total(&self) -> u64 {
        self.calls.values().flat_map(|o| o.values()).sum()
    }

    /// Reset durations, in microseconds.
    pub fn reset_micros(&self) -> &Histogram {
        &self.reset_micros
    }

    /// Pages each reset restored.
    pub fn dirty_pages(&self) -> &Histogram {
        &self.dirty_pages
    }

    /// How long callers waited for a free sandbox, in microseconds.
    pub fn wait_micros(&self) -> &Histogram {
        &self.wait_micros
    }

    /// Sandboxes running a call right now.
    pub fn in_use(&self) -> u64 {
        self.in_use
    }

    /// Sandboxes replaced after a failed reset.
    pub fn replacements(&self) -> u64 {
        self.replacements
    }

    /// Calls refused because every sandbox stayed busy.
    pub fn exhausted(&self) -> u64 {
        self.exhausted
    }

    /// Sandboxes in the pool.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Every `(function, outcome, calls)` counted so far, by function then
    /// outcome. Calls of functions the module does not export share the
    /// function name `(unknown)`, so the list stays as long as the exports.
    ///
    /// ```
    /// # use cleanslate::{PoolConfig, Runtime, Sandbox, SandboxPool};
    /// # let module = Runtime::new()?.load_bytes(r#"(module (func (export "f")))"#)?;
    /// let pool = SandboxPool::new(Sandbox::builder(&module), PoolConfig::new(1))?;
    /// pool.call("f", &[])?;
    /// let _ = pool.call("g", &[]);
    /// let metrics = pool.metrics();
    /// let calls: Vec<_> = metrics.call_counts().collect();
    /// assert_eq!(calls, [("(unknown)", "function_not_found", 1), ("f", "ok", 1)]);
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    pub fn call_counts(&self) -> impl Iterator<Item = (&str, &str, u64)> {
        self.calls.iter().flat_map(|(function, outcomes)| {
            outcomes
                .iter()
                .map(move |(outcome, n)| (function.as_str(), *outcome, *n))
        })
    }
}

impl PoolMetrics {
    /// Count one call; allocates only for a function's first call.
    fn count(&mut self, function: &str, outcome: &'static str) {
        let outcomes = match self.calls.get_mut(function) {
            Some(outcomes) => outcomes,
            None => self.calls.entry(function.to_string()).or_default(),
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
}

/// The pool's live metrics.
pub(crate) struct MetricsRecorder {
    /// Export names: function labels are only ever these (or `(unknown)`),
    /// so a caller naming random functions cannot grow the label set.
    exports: BTreeSet<String>,
    state: Mutex<PoolMetrics>,
}

impl MetricsRecorder {
    pub(crate) fn new(exports: BTreeSet<String>, size: usize) -> Self {
        MetricsRecorder {
            exports,
            state: Mutex::new(PoolMetrics {
                calls: BTreeMap::new(),
                reset_micros: Histogram::new(&MICROS_BUCKETS),
                dirty_pages: Histogram::new(&PAGE_BUCKETS),
                wait_micros: Histogram::new(&MICROS_BUCKETS),
                in_use: 0,
                size: size as u64,
                replacements: 0,
                exhausted: 0,
            }),
        }
    }

    fn with(&self, f: impl FnOnce(&mut PoolMetrics)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The label `function` is counted under.
    fn label<'f>(&self, function: &'f str) -> &'f str {
        if self.exports.contains(function) {
            function
        } else {
            UNKNOWN_FUNCTION
        }
    }

    pub(crate) fn record_checkout(&self, waited: Duration) {
        self.with(|m| {
            m.in_use += 1;
            m.wait_micros.observe(micros(waited));
        });
    }

    pub(crate) fn record_checkin(&self) {
        self.with(|m| m.in_use = m.in_use.saturating_sub(1));
    }

    pub(crate) fn record_exhausted(&self, function: &str, waited: Duration) {
        let label = self.label(function);
        self.with(|m| {
            m.exhausted += 1;
            m.wait_micros.observe(micros(waited));
            m.count(label, ErrorKind::PoolExhausted.as_str());
        });
    }

    pub(crate) fn record_call(
        &self,
        function: &str,
        error: Option<ErrorKind>,
        reset: Option<(Duration, u64)>,
    ) {
        let label = self.label(function);
        self.with(|m| {
            m.count(label, error.map_or("ok", |k| k.as_str()));
            if let Some((duration, pages)) = reset {
                m.reset_micros.observe(micros(duration));
                m.dirty_pages.observe(pages as f64);
            }
        });
    }

    pub(crate) fn record_replacement(&self) {
        self.with(|m| m.replacements += 1);
    }

    pub(crate) fn snapshot(&self) -> PoolMetrics {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn micros(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_end_at_inf() {
        let mut h = Histogram::new(&[1.0, 10.0]);
        for v in [0.5, 1.0, 5.0, 50.0] {
            h.observe(v);
        }
        assert_eq!(h.buckets(), vec![(1.0, 2), (10.0, 3), (f64::INFINITY, 4)]);
        assert_eq!(h.sum(), 56.5);
    }

    #[test]
    fn unknown_functions_share_one_label() {
        let recorder = MetricsRecorder::new(["f".to_string()].into(), 1);
        recorder.record_call("f", None, None);
        for name in ["x", "y", "z"] {
            recorder.record_call(name, Some(ErrorKind::FunctionNotFound), None);
        }
        let m = recorder.snapshot();
        assert_eq!(m.calls("f", "ok"), 1);
        assert_eq!(m.calls("(unknown)", "function_not_found"), 3);
        assert_eq!(m.calls.len(), 2, "one label per export, one for the rest");
    }
}
