//! Host functions: closures the guest can import, wrapped so that their
//! errors and panics come back as typed failures of the call, never as an
//! unwind through the embedder.
//!
//! This file is the registry the builder fills; the rest is split by what
//! happens to a registered function:
//! - `context`: what a running host function sees ([`HostContext`]);
//! - `link`: defining the module's imports on wasmtime's linker, and the
//!   error that lists the imports nothing provides;
//! - `trampoline`: adapting a closure over values to wasmtime, so its
//!   errors and panics become [`HostFault`]s;
//! - `bytes`: the data ABI's calling convention for bytes host functions;
//! - `builtins`: the `cleanslate.*` imports every guest may use;
//! - `fault`: how a host call failed, as carried through wasmtime.

mod builtins;
mod bytes;
mod context;
mod fault;
mod link;
mod trampoline;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::value::Val;

pub use context::HostContext;
pub(crate) use fault::{HostFault, panic_message};

/// The error type host functions return: anything that converts into a
/// boxed error (`String`, `&str`, `std::io::Error`, ...).
pub type HostFnError = Box<dyn std::error::Error + Send + Sync>;

/// A host function over values; `host_fn`'s closures ignore the context.
pub(crate) type HostClosure =
    Arc<dyn Fn(&mut HostContext<'_>, &[Val]) -> Result<Vec<Val>, HostFnError> + Send + Sync>;

/// A host function over bytes; `Err(HostFailure::BadInput)` blames the guest.
pub(crate) type BytesClosure =
    Arc<dyn Fn(&HostContext<'_>, &[u8]) -> Result<Vec<u8>, HostFailure> + Send + Sync>;

/// Why a bytes host function failed.
pub(crate) enum HostFailure {
    /// The host function itself failed:
    /// [`ErrorKind::HostError`](crate::ErrorKind::HostError).
    Host(HostFnError),
    /// The guest's input did not decode (e.g. malformed JSON):
    /// [`ErrorKind::InvalidGuestOutput`](crate::ErrorKind::InvalidGuestOutput).
    BadInput(String),
}

/// How the host provides one import.
#[derive(Clone)]
enum HostBinding {
    Values(HostClosure),
    Bytes(BytesClosure),
}

/// The host functions a sandbox provides, by (module, name).
#[derive(Clone, Default)]
pub(crate) struct HostFunctions {
    functions: BTreeMap<(String, String), HostBinding>,
}

impl HostFunctions {
    pub(crate) fn insert(&mut self, module: &str, name: &str, f: HostClosure) {
        self.functions.insert(
            (module.to_string(), name.to_string()),
            HostBinding::Values(f),
        );
    }

    pub(crate) fn insert_bytes(&mut self, module: &str, name: &str, f: BytesClosure) {
        self.functions.insert(
            (module.to_string(), name.to_string()),
            HostBinding::Bytes(f),
        );
    }

    /// The bytes host function `name` names for `cleanslate.call_host`:
    /// `module.name` exactly, or a bare `name` registered under one module.
    fn find_bytes(&self, name: &str) -> Result<(String, BytesClosure), String> {
        let bytes = |b: &HostBinding| match b {
            HostBinding::Bytes(f) => Some(f.clone()),
            HostBinding::Values(_) => None,
        };
        if let Some((module, function)) = name.split_once('.')
            && let Some(f) = self
                .functions
                .get(&(module.to_string(), function.to_string()))
                .and_then(bytes)
        {
            return Ok((name.to_string(), f));
        }
        let mut matches = self
            .functions
            .iter()
            .filter(|((_, n), _)| n == name)
            .filter_map(|((m, n), b)| bytes(b).map(|f| (format!("{m}.{n}"), f)));
        match (matches.next(), matches.next()) {
            (Some(found), None) => Ok(found),
            (Some((a, _)), Some((b, _))) => Err(format!(
                "host function name `{name}` is ambiguous ({a}, {b}, ...): call it as `module.name`"
            )),
            (None, _) => {
                let known: Vec<String> = self
                    .functions
                    .iter()
                    .filter(|(_, b)| matches!(b, HostBinding::Bytes(_)))
                    .map(|((m, n), _)| format!("{m}.{n}"))
                    .collect();
                Err(format!(
                    "the guest called host function `{name}`, which the host does not provide (it provides: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            }
        }
    }
}
