//! Host functions: closures the guest can import, wrapped so that their
//! errors and panics come back as typed failures of the call, never as an
//! unwind through the embedder.

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::error::{Error, ErrorKind};
use crate::module::ModuleLayout;
use crate::sandbox::StoreData;
use crate::value::{Signature, Val};

/// The error type host functions return: anything that converts into a
/// boxed error (`String`, `&str`, `std::io::Error`, ...).
pub type HostFnError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) type HostClosure = Arc<dyn Fn(&[Val]) -> Result<Vec<Val>, HostFnError> + Send + Sync>;

/// The host functions a sandbox provides, by (module, name).
#[derive(Clone, Default)]
pub(crate) struct HostFunctions {
    functions: BTreeMap<(String, String), HostClosure>,
}

/// How a host function failed; carried through wasmtime as the error of the
/// call so the sandbox can classify it.
#[derive(Debug)]
pub(crate) enum HostFault {
    Error { function: String, message: String },
    Panic { function: String, message: String },
}

impl fmt::Display for HostFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostFault::Error { function, message } => {
                write!(f, "host function `{function}` returned an error: {message}")
            }
            HostFault::Panic { function, message } => {
                write!(f, "host function `{function}` panicked: {message}")
            }
        }
    }
}

impl std::error::Error for HostFault {}

impl HostFault {
    pub(crate) fn to_error(&self) -> Error {
        let kind = match self {
            HostFault::Error { .. } => ErrorKind::HostError,
            HostFault::Panic { .. } => ErrorKind::HostPanic,
        };
        Error::new(kind, format!("{self}"))
    }
}

impl HostFunctions {
    pub(crate) fn insert(&mut self, module: &str, name: &str, f: HostClosure) {
        self.functions
            .insert((module.to_string(), name.to_string()), f);
    }

    /// Define every function the module imports on `linker`; list every
    /// import that cannot be satisfied.
    pub(crate) fn link(
        &self,
        linker: &mut wasmtime::Linker<StoreData>,
        engine: &wasmtime::Engine,
        layout: &ModuleLayout,
    ) -> Result<(), Error> {
        let mut missing: Vec<String> = layout
            .other_imports
            .iter()
            .map(|i| {
                format!(
                    "{}.{} ({}: sandboxes own all their state and cannot import one)",
                    i.module, i.name, i.what
                )
            })
            .collect();
        for import in &layout.function_imports {
            let key = (import.module.clone(), import.name.clone());
            let Some(closure) = self.functions.get(&key) else {
                missing.push(format!(
                    "{}.{}: {} (provide it with host_fn)",
                    import.module, import.name, import.signature
                ));
                continue;
            };
            let ty = func_type(engine, &import.signature).ok_or_else(|| {
                Error::new(
                    ErrorKind::MissingImport,
                    format!(
                        "import {}.{} has signature {}, which host functions cannot provide (only i32, i64, f32 and f64 cross the boundary)",
                        import.module, import.name, import.signature
                    ),
                )
            })?;
            let wrapped = wrap(
                format!("{}.{}", import.module, import.name),
                import.signature.clone(),
                closure.clone(),
            );
            linker
                .func_new(&import.module, &import.name, ty, wrapped)
                .map_err(|e| Error::new(ErrorKind::MissingImport, format!("{e:#}")))?;
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::MissingImport,
            format!(
                "the module has {} unresolved import(s): {}",
                missing.len(),
                missing.join("; ")
            ),
        ))
    }
}

fn func_type(engine: &wasmtime::Engine, signature: &Signature) -> Option<wasmtime::FuncType> {
    let convert = |t: &crate::ValType| -> Option<wasmtime::ValType> {
        Some(match t {
            crate::ValType::I32 => wasmtime::ValType::I32,
            crate::ValType::I64 => wasmtime::ValType::I64,
            crate::ValType::F32 => wasmtime::ValType::F32,
            crate::ValType::F64 => wasmtime::ValType::F64,
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

/// Adapt a user closure to wasmtime: convert values, check the results
/// against the import's signature, and turn errors and panics into
/// [`HostFault`]s.
fn wrap(function: String, signature: Signature, closure: HostClosure) -> Box<Trampoline> {
    Box::new(move |_caller, params, results| {
        let args: Vec<Val> = params.iter().filter_map(Val::from_wasmtime).collect();
        let outcome = catch_unwind(AssertUnwindSafe(|| closure(&args)));
        let values = match outcome {
            Ok(Ok(values)) => values,
            Ok(Err(e)) => {
                return Err(wasmtime::Error::new(HostFault::Error {
                    function: function.clone(),
                    message: e.to_string(),
                }));
            }
            Err(payload) => {
                return Err(wasmtime::Error::new(HostFault::Panic {
                    function: function.clone(),
                    message: panic_message(payload.as_ref()),
                }));
            }
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
            }));
        }
        for (slot, value) in results.iter_mut().zip(values) {
            *slot = value.to_wasmtime();
        }
        Ok(())
    })
}

/// The text of a panic payload, when it has one.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}
