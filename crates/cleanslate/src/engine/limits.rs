//! Per-sandbox resource limits and the memory limiter that enforces them.

use std::time::Duration;

use crate::error::{Error, ErrorKind};

/// The stack limit sandboxes get unless they ask for another.
pub(crate) const DEFAULT_STACK_LIMIT: usize = 512 * 1024;

/// Default limit on a sandbox's linear memories, all together: 64 MiB.
pub const DEFAULT_MEMORY_LIMIT: u64 = 64 << 20;
/// Default limit on the number of elements of each table.
pub const DEFAULT_TABLE_ELEMENTS: u64 = 100_000;
/// The largest stack limit a sandbox may ask for. Calls run on the caller's
/// thread, and guest frames must fit below its real stack.
pub const MAX_STACK_LIMIT: usize = 64 << 20;

/// The limits a sandbox's calls run under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Bytes all linear memories of a sandbox may hold together.
    pub memory: u64,
    /// Elements each table may grow to.
    pub table_elements: u64,
    /// Bytes of native stack guest code may use.
    pub stack: usize,
    /// Fuel units per call; `None` means unmetered.
    pub fuel: Option<u64>,
    /// Wall-clock time per call.
    pub timeout: Option<Duration>,
    /// Bytes a guest may hand the host in one piece (output, host-call
    /// input, stdout, stderr).
    pub output: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: DEFAULT_MEMORY_LIMIT,
            table_elements: DEFAULT_TABLE_ELEMENTS,
            stack: DEFAULT_STACK_LIMIT,
            fuel: None,
            timeout: None,
            output: crate::abi::DEFAULT_OUTPUT_LIMIT,
        }
    }
}

impl Limits {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bad = |msg: String| Err(Error::new(ErrorKind::InvalidArguments, msg));
        if self.stack < 16 * 1024 || self.stack > MAX_STACK_LIMIT {
            return bad(format!(
                "stack limit {} bytes is out of range: choose between 16 KiB and {} MiB",
                self.stack,
                MAX_STACK_LIMIT >> 20
            ));
        }
        if self.fuel == Some(0) {
            return bad(
                "fuel of 0 cannot run any code: give at least 1 unit, or no fuel limit".into(),
            );
        }
        if self.timeout == Some(Duration::ZERO) {
            return bad("a timeout of 0 cannot run any code: give a positive duration".into());
        }
        Ok(())
    }
}

/// Enforces [`Limits`] on memory and table growth, and remembers whether it
/// refused any growth during the current call (a call that then fails ran
/// out of memory; the spec makes a refused `memory.grow` return -1).
///
/// The memory limit is the sandbox's total: the limiter keeps the sum of
/// its memories' sizes (wasmtime reports each memory's creation as growth
/// from 0, so instantiation counts too), and a growth is allowed only while
/// that sum stays within the limit. A module with many memories gets the
/// same host memory as one with a single memory.
pub(crate) struct GrowthLimiter {
    memory: u64,
    table_elements: u64,
    /// Bytes all memories of the store hold, as far as growth approved so
    /// far says; corrected from the memories themselves before each call.
    memory_total: u64,
    pub refused_memory: Option<RefusedGrowth>,
}

/// A memory growth the limiter refused, in bytes of all memories together.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RefusedGrowth {
    /// All memories before the growth.
    pub current: u64,
    /// All memories had the growth been allowed.
    pub desired: u64,
    pub limit: u64,
}

impl GrowthLimiter {
    pub(crate) fn new(limits: &Limits) -> Self {
        GrowthLimiter {
            memory: limits.memory,
            table_elements: limits.table_elements,
            memory_total: 0,
            refused_memory: None,
        }
    }

    /// The memories' real total (before a call): a growth the limiter
    /// allowed but the engine then failed, and resets that replace the
    /// instance, leave the running sum behind.
    pub(crate) fn set_memory_total(&mut self, bytes: u64) {
        self.memory_total = bytes;
    }
}

impl wasmtime::ResourceLimiter for GrowthLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let others = self.memory_total.saturating_sub(current as u64);
        let total = others.saturating_add(desired as u64);
        if total > self.memory {
            self.refused_memory = Some(RefusedGrowth {
                current: others.saturating_add(current as u64),
                desired: total,
                limit: self.memory,
            });
            return Ok(false);
        }
        self.memory_total = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired as u64 <= self.table_elements)
    }

    fn instances(&self) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_limit_counts_all_memories_together() {
        use wasmtime::ResourceLimiter;
        let limits = Limits {
            memory: 100,
            ..Limits::default()
        };
        let mut limiter = GrowthLimiter::new(&limits);
        // Three memories created (growth from 0), then grown.
        assert!(limiter.memory_growing(0, 40, None).unwrap());
        assert!(limiter.memory_growing(0, 40, None).unwrap());
        assert!(!limiter.memory_growing(0, 40, None).unwrap(), "120 > 100");
        let refused = limiter.refused_memory.take().unwrap();
        assert_eq!((refused.current, refused.desired), (80, 120));
        assert!(limiter.memory_growing(0, 20, None).unwrap(), "exactly 100");
        assert!(!limiter.memory_growing(40, 41, None).unwrap());
        // Corrected to the memories' real sizes, room is back.
        limiter.set_memory_total(60);
        assert!(limiter.memory_growing(40, 80, None).unwrap());
        assert!(!limiter.memory_growing(20, 21, None).unwrap());
    }

    #[test]
    fn limits_reject_values_that_cannot_run_code() {
        let mut limits = Limits::default();
        assert!(limits.validate().is_ok());
        limits.fuel = Some(0);
        assert_eq!(
            limits.validate().unwrap_err().kind(),
            ErrorKind::InvalidArguments
        );
        limits.fuel = None;
        limits.stack = usize::MAX;
        assert!(limits.validate().is_err());
    }
}
