//! Adapting a closure over [`Val`]s to a wasmtime host function: values
//! are converted both ways, results are checked against the import's
//! signature, and errors and panics leave as [`HostFault`]s, never as an
//! unwind into the engine.

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::{HostClosure, HostContext, HostFault};
use crate::instance::StoreData;
use crate::value::{Signature, Val};

/// The wasmtime type of an import a closure over values can provide; `None`
/// when a parameter or result is a reference or vector type, which
/// [`Val`] does not carry across the boundary.
pub(super) fn func_type(
    engine: &wasmtime::Engine,
    signature: &Signature,
) -> Option<wasmtime::FuncType> {
    let convert = |t: &crate::value::ValType| -> Option<wasmtime::ValType> {
        Some(match t {
            crate::value::ValType::I32 => wasmtime::ValType::I32,
            crate::value::ValType::I64 => wasmtime::ValType::I64,
            crate::value::ValType::F32 => wasmtime::ValType::F32,
            crate::value::ValType::F64 => wasmtime::ValType::F64,
            _ => return None,
        })
    };
    let params: Option<Vec<_>> = signature.params().iter().map(convert).collect();
    let results: Option<Vec<_>> = signature.results().iter().map(convert).collect();
    Some(wasmtime::FuncType::new(engine, params?, results?))
}

type Trampoline = dyn Fn(
        wasmtime::Caller<'_, StoreData>,
        &[wasmtime::Val],
        &mut [wasmtime::Val],
    ) -> wasmtime::Result<()>
    + Send
    + Sync;

/// `closure` as wasmtime calls it for import `function`.
pub(super) fn wrap(
    function: String,
    signature: Signature,
    closure: HostClosure,
) -> Box<Trampoline> {
    Box::new(move |mut caller, params, results| {
        let args: Vec<Val> = params.iter().filter_map(Val::from_wasmtime).collect();
        let mut context = HostContext::new(&function, &mut caller);
        let outcome = catch_unwind(AssertUnwindSafe(|| closure(&mut context, &args)));
        let values = match outcome {
            Ok(Ok(values)) => values,
            Ok(Err(e)) => return Err(HostFault::returned(&function, e)),
            Err(payload) => return Err(HostFault::panicked(&function, payload.as_ref())),
        };
        let fits = values.len() == signature.results().len()
            && values
                .iter()
                .zip(signature.results())
                .all(|(v, t)| v.ty() == *t);
        if !fits {
            let got: Vec<String> = values.iter().map(|v| v.ty().to_string()).collect();
            return Err(wasmtime::Error::new(HostFault::Error {
                function: function.clone(),
                message: format!(
                    "it returned ({}) but the import's signature is {signature}",
                    got.join(", ")
                ),
                source: None,
            }));
        }
        for (slot, value) in results.iter_mut().zip(values) {
            *slot = value.to_wasmtime();
        }
        Ok(())
    })
}
