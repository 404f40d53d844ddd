//! The bodies of Cleanslate's fuzz targets.
//!
//! Each target turns arbitrary bytes into work for the runtime and checks a
//! property that must hold for every input; a broken property is a
//! [`Finding`], a panic is a finding too. The same bodies run two ways:
//!
//! - coverage-guided, for hours, by the libFuzzer binaries in `fuzz/`
//!   (`scripts/fuzz.sh`, see docs/RELIABILITY.md);
//! - bounded, from seeded pseudo-random bytes, in this crate's tests, so
//!   every CI run searches a few thousand inputs per target.
//!
//! | target | property |
//! |---|---|
//! | [`reset_invariant`] | after every call of a random module — returned, trapped, out of fuel, timed out, cancelled — the sandbox equals an independently built twin's snapshot, on both reset paths |
//! | [`load_module`] | any bytes or text given to `load_bytes` and `build` give a sandbox or a typed error, never a panic |
//! | [`guest_output`] | a guest returning hostile pointers, lengths and records, and calling host functions with hostile arguments, gets a typed error, never a host crash or out-of-bounds read, and the sandbox still resets |
//!
//! ```
//! use cleanslate_fuzz::{Tally, reset_invariant, seeded_bytes};
//!
//! let mut tally = Tally::default();
//! reset_invariant::check(&seeded_bytes(7, 4096), &mut tally).expect("no finding");
//! ```

pub mod guest_output;
pub mod load_module;
mod oracle;
pub mod reset_invariant;
mod tally;

use std::sync::OnceLock;

pub use tally::{Finding, Tally};

/// One runtime for every input: engines are expensive and inputs many.
pub(crate) fn runtime() -> &'static cleanslate::Runtime {
    static RUNTIME: OnceLock<cleanslate::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| cleanslate::Runtime::new().expect("the default runtime starts"))
}

/// `len` pseudo-random bytes for `seed` (splitmix64): the bounded runs'
/// inputs, reproducible from the seed a failure names.
pub fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xdead_beef;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}
