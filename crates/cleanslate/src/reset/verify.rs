//! The second check: after a reset, read the state back and compare it with
//! the snapshot, independently of how the reset path wrote it.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, ErrorKind};
use crate::instance::LiveInstance;
use crate::module::Module;
use crate::snapshot::SnapshotImage;
use crate::snapshot::image::{capture_table, dropped_segments, global_value, possibly_nonzero};
use std::ops::Range;

/// When to re-check a reset against the snapshot.
///
/// A mismatch means the reset is broken: the sandbox becomes unrecoverable
/// and the call returns [`ErrorKind::ResetFailed`] carrying its own error.
///
/// ```
/// use cleanslate::Verify;
/// assert_eq!("sampled:100".parse::<Verify>()?, Verify::Sampled(100));
/// assert_eq!(Verify::Always.to_string(), "always");
/// # Ok::<(), cleanslate::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Verify {
    /// Never re-check (the fastest; trusts the reset path).
    #[default]
    Off,
    /// Re-check after every reset.
    Always,
    /// Re-check after every n-th reset (n ≥ 1).
    Sampled(u64),
}

impl fmt::Display for Verify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verify::Off => f.write_str("off"),
            Verify::Always => f.write_str("always"),
            Verify::Sampled(n) => write!(f, "sampled:{n}"),
        }
    }
}

impl FromStr for Verify {
    type Err = Error;
    fn from_str(text: &str) -> Result<Verify, Error> {
        let bad = || {
            Error::new(
                ErrorKind::InvalidArguments,
                format!(
                    "cannot read {text:?} as a verification mode: use off, always or sampled:N (N ≥ 1)"
                ),
            )
        };
        match text {
            "off" => Ok(Verify::Off),
            "always" => Ok(Verify::Always),
            _ => {
                let n: u64 = text
                    .strip_prefix("sampled:")
                    .ok_or_else(bad)?
                    .parse()
                    .map_err(|_| bad())?;
                if n == 0 {
                    return Err(bad());
                }
                Ok(Verify::Sampled(n))
            }
        }
    }
}

/// Decides, reset by reset, whether this one is verified.
#[derive(Debug)]
pub(crate) struct VerifySchedule {
    mode: Verify,
    resets: u64,
}

impl VerifySchedule {
    pub(crate) fn new(mode: Verify) -> Self {
        VerifySchedule { mode, resets: 0 }
    }

    pub(crate) fn next_is_due(&mut self) -> bool {
        self.resets += 1;
        match self.mode {
            Verify::Off => false,
            Verify::Always => true,
            Verify::Sampled(n) => self.resets.is_multiple_of(n.max(1)),
        }
    }
}

fn mismatch(what: String) -> Error {
    Error::new(
        ErrorKind::ResetFailed,
        format!(
            "verification found the reset incomplete: {what}; the sandbox is unrecoverable (this is a Cleanslate bug, please report it)"
        ),
    )
}

/// Compare every piece of `live`'s state with `image`.
pub(crate) fn check(
    module: &Module,
    image: &SnapshotImage,
    live: &mut LiveInstance,
) -> Result<(), Error> {
    for (i, expected) in image.memories.iter().enumerate() {
        let len = live.memories[i].data_size(&live.store);
        if len != expected.bytes.len() {
            return Err(mismatch(format!(
                "memory {i} has {len} bytes, the snapshot {}",
                expected.bytes.len()
            )));
        }
        // Outside these ranges both sides are provably zero (untouched), and
        // reading them would only map pages the scan must then walk.
        let examine = merge(
            &expected.populated,
            possibly_nonzero(module, i, live).as_deref(),
            len,
        );
        let actual = live.memories[i].data(&live.store);
        for r in examine {
            if actual[r.clone()] != expected.bytes[r.clone()] {
                let at = r.start
                    + actual[r.clone()]
                        .iter()
                        .zip(&expected.bytes[r.clone()])
                        .position(|(a, b)| a != b)
                        .unwrap_or(0);
                return Err(mismatch(format!(
                    "memory {i} differs from the snapshot at byte {at:#x}"
                )));
            }
        }
    }
    for (i, (index, expected)) in image.globals.iter().enumerate() {
        let global = live.globals[i].1;
        let value = global.get(&mut live.store);
        let actual = global_value(live, &value)?;
        if actual != *expected {
            return Err(mismatch(format!(
                "global {index} is {actual:?}, the snapshot has {expected:?}"
            )));
        }
    }
    for (i, expected) in image.tables.iter().enumerate() {
        let actual = capture_table(live, i)?;
        if actual != *expected {
            return Err(mismatch(format!("table {i} differs from the snapshot")));
        }
    }
    let (data, elements) = dropped_segments(module, live)?;
    if data != image.dropped_data || elements != image.dropped_elements {
        return Err(mismatch(format!(
            "dropped segments are data {data:?} / elements {elements:?}, the snapshot has {:?} / {:?}",
            image.dropped_data, image.dropped_elements
        )));
    }
    Ok(())
}

/// The union of two range lists; `None` for the second means it could not
/// be narrowed, so the whole memory (`len` bytes) is examined.
fn merge(a: &[Range<usize>], b: Option<&[Range<usize>]>, len: usize) -> Vec<Range<usize>> {
    let Some(b) = b else {
        return std::iter::once(0..len).collect();
    };
    let mut all: Vec<Range<usize>> = a.iter().chain(b).cloned().collect();
    all.sort_by_key(|r| r.start);
    let mut out: Vec<Range<usize>> = Vec::with_capacity(all.len());
    for r in all {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Damage a freshly reset instance on purpose if a test asked for it.
pub(super) fn inject(live: &mut LiveInstance, faults: &mut super::PendingFaults) {
    use super::Fault;
    if faults.fire(Fault::CorruptMemory)
        && let Some(memory) = live.memories.first().copied()
        && let Some(byte) = memory.data_mut(&mut live.store).last_mut()
    {
        *byte ^= 0x5a;
    }
    if faults.fire(Fault::CorruptGlobal)
        && let Some((_, global)) = live.globals.first().copied()
    {
        let damaged = match global.get(&mut live.store) {
            wasmtime::Val::I32(v) => wasmtime::Val::I32(v ^ 0x5a),
            wasmtime::Val::I64(v) => wasmtime::Val::I64(v ^ 0x5a),
            wasmtime::Val::F32(v) => wasmtime::Val::F32(v ^ 0x5a),
            wasmtime::Val::F64(v) => wasmtime::Val::F64(v ^ 0x5a),
            other => other,
        };
        let _ = global.set(&mut live.store, damaged);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_verification_runs_every_nth_reset() {
        let mut schedule = VerifySchedule::new(Verify::Sampled(3));
        let due: Vec<bool> = (0..6).map(|_| schedule.next_is_due()).collect();
        assert_eq!(due, [false, false, true, false, false, true]);
        let mut off = VerifySchedule::new(Verify::Off);
        assert!(!(0..10).any(|_| off.next_is_due()));
    }

    #[test]
    fn parses_modes_and_rejects_zero_samples() {
        assert_eq!("off".parse::<Verify>().unwrap(), Verify::Off);
        assert!("sampled:0".parse::<Verify>().is_err());
        assert!("sometimes".parse::<Verify>().is_err());
    }
}
