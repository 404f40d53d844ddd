//! Finding the export a call names and checking what it is given, before
//! the reset guard is armed: nothing runs here, so a failure needs no reset.

use crate::abi::{ALLOC_EXPORT, is_data_signature};
use crate::error::{Error, ErrorKind};
use crate::module::ModuleLayout;
use crate::sandbox::SandboxCore;
use crate::sandbox::request::{Call, CallInput};
use crate::value::Val;

/// A callable export, resolved and type-checked before the guard is armed.
pub(crate) struct Target<'n> {
    pub name: &'n str,
    pub func: wasmtime::Func,
    pub result_count: usize,
}

/// A data-ABI export: (input pointer, input length) -> result record.
pub(crate) type DataFunc = wasmtime::TypedFunc<(i32, i32), i32>;

/// A [`Call`] resolved against the module, ready to run.
pub(crate) enum Prepared<'c> {
    Values(Target<'c>, &'c [Val]),
    Bytes(DataFunc, &'c [u8]),
}

impl SandboxCore {
    /// Find the export `name` and check `args` against it.
    pub(crate) fn resolve<'n>(&mut self, name: &'n str, args: &[Val]) -> Result<Target<'n>, Error> {
        let layout = &self.module.inner.layout;
        let Some(export) = layout.function(name) else {
            return Err(function_not_found(layout, name));
        };
        if let Some(bad) = export
            .signature
            .params()
            .iter()
            .chain(export.signature.results())
            .find(|t| !t.is_scalar())
        {
            return Err(Error::new(
                ErrorKind::InvalidArguments,
                format!(
                    "`{name}` has signature {}; values of type {bad} cannot cross the boundary",
                    export.signature
                ),
            ));
        }
        export.signature.check_args(name, args)?;
        let result_count = export.signature.results().len();
        let live = self.live()?;
        let func = live
            .instance
            .get_func(&mut live.store, name)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::FunctionNotFound,
                    format!("the instance lacks the export `{name}`"),
                )
            })?;
        Ok(Target {
            name,
            func,
            result_count,
        })
    }

    /// Find the data-ABI export `name` (docs/ABI.md) and check that the
    /// guest can receive `input`.
    pub(crate) fn resolve_data(&mut self, name: &str, input: &[u8]) -> Result<DataFunc, Error> {
        let layout = &self.module.inner.layout;
        let Some(export) = layout.function(name) else {
            return Err(function_not_found(layout, name));
        };
        if !is_data_signature(&export.signature) {
            return Err(Error::new(
                ErrorKind::InvalidArguments,
                format!(
                    "`{name}` has signature {}; a bytes/JSON function needs (i32, i32) -> i32 (input pointer and length in, result record out; docs/ABI.md)",
                    export.signature
                ),
            ));
        }
        if layout.memories.first().is_none_or(|m| m.memory64) {
            return Err(Error::new(
                ErrorKind::InvalidArguments,
                format!(
                    "`{name}` cannot take bytes: the module defines no 32-bit memory 0 to pass them in"
                ),
            ));
        }
        let live = self.live()?;
        if !input.is_empty() && live.store.data().alloc.is_none() {
            return Err(Error::new(
                ErrorKind::FunctionNotFound,
                format!(
                    "the module exports no `{ALLOC_EXPORT}` (param i32) (result i32), which the host needs to place the input of `{name}` in guest memory (docs/ABI.md)"
                ),
            ));
        }
        live.instance
            .get_typed_func::<(i32, i32), i32>(&mut live.store, name)
            .map_err(|e| Error::new(ErrorKind::FunctionNotFound, format!("`{name}`: {e:#}")))
    }

    /// Resolve and check a [`Call`] before anything runs.
    pub(crate) fn prepare<'c>(&mut self, call: &'c Call) -> Result<Prepared<'c>, Error> {
        self.ensure_status_allows_calls()?;
        Ok(match &call.input {
            CallInput::Values(args) => Prepared::Values(self.resolve(&call.function, args)?, args),
            CallInput::Bytes(input) => {
                Prepared::Bytes(self.resolve_data(&call.function, input)?, input)
            }
        })
    }
}

/// No export `name`: say what the module does export, so a typo is easy to
/// spot.
fn function_not_found(layout: &ModuleLayout, name: &str) -> Error {
    let mut known: Vec<&str> = layout.exports.iter().map(|e| e.name.as_str()).collect();
    known.truncate(20);
    Error::new(
        ErrorKind::FunctionNotFound,
        format!(
            "the module exports no function named `{name}`; it exports: {}",
            if known.is_empty() {
                "(no functions)".to_string()
            } else {
                known.join(", ")
            }
        ),
    )
}
