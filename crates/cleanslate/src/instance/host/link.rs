//! Defining a module's imports on wasmtime's linker from the registry,
//! and the one error that lists every import nothing provides, so a
//! missing import is found at build time rather than at a call.

use super::bytes::{bytes_import_signature, call_bytes_host};
use super::trampoline::{func_type, wrap};
use super::{HostBinding, HostFunctions};
use crate::abi::IMPORT_MODULE;
use crate::error::{Error, ErrorKind};
use crate::instance::StoreData;
use crate::module::ModuleLayout;

impl HostFunctions {
    /// Define every function the module imports on `linker`; list every
    /// import that cannot be satisfied. WASI imports are left to the WASI
    /// linker when `wasi` is on.
    pub(crate) fn link(
        &self,
        linker: &mut wasmtime::Linker<StoreData>,
        engine: &wasmtime::Engine,
        layout: &ModuleLayout,
        wasi: bool,
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
            let qualified = format!("{}.{}", import.module, import.name);
            if wasi && crate::module::is_wasi_module(&import.module) {
                continue;
            }
            if import.module == IMPORT_MODULE {
                match self.link_builtin(linker, &import.name, &import.signature) {
                    Ok(()) => {}
                    Err(problem) => missing.push(format!("{qualified}: {problem}")),
                }
                continue;
            }
            let key = (import.module.clone(), import.name.clone());
            let Some(binding) = self.functions.get(&key) else {
                let hint = if crate::module::is_wasi_module(&import.module) {
                    "(a WASI import: enable WASI on the builder)"
                } else {
                    "(provide it with host_fn or host_fn_bytes)"
                };
                missing.push(format!("{qualified}: {} {hint}", import.signature));
                continue;
            };
            let defined = match binding {
                HostBinding::Values(closure) => {
                    let ty = func_type(engine, &import.signature).ok_or_else(|| {
                        Error::new(
                            ErrorKind::MissingImport,
                            format!(
                                "import {qualified} has signature {}, which host functions cannot provide (only i32, i64, f32 and f64 cross the boundary)",
                                import.signature
                            ),
                        )
                    })?;
                    let wrapped =
                        wrap(qualified.clone(), import.signature.clone(), closure.clone());
                    linker.func_new(&import.module, &import.name, ty, wrapped)
                }
                HostBinding::Bytes(closure) => {
                    if import.signature != bytes_import_signature() {
                        missing.push(format!(
                            "{qualified}: the module imports it as {}, but it is a bytes host function, which needs {} (docs/ABI.md)",
                            import.signature,
                            bytes_import_signature()
                        ));
                        continue;
                    }
                    let closure = closure.clone();
                    let name = qualified.clone();
                    linker.func_wrap(
                        &import.module,
                        &import.name,
                        move |caller: wasmtime::Caller<'_, StoreData>, ptr: i32, len: i32| {
                            call_bytes_host(caller, &name, &closure, ptr as u32, len as u32)
                        },
                    )
                }
            };
            defined.map_err(|e| Error::new(ErrorKind::MissingImport, format!("{e:#}")))?;
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::MissingImport,
            format!(
                "the module has {} unresolved import(s): {}",
                missing.len(),
                summarise(&missing, LISTED_MISSING_IMPORTS)
            ),
        ))
    }
}

/// How many unresolved imports an error names before it only counts the
/// rest: a module can have a hundred thousand, and one line must stay
/// readable.
const LISTED_MISSING_IMPORTS: usize = 10;

/// The first `shown` items joined, and a count of the others.
fn summarise(items: &[String], shown: usize) -> String {
    let listed = items[..items.len().min(shown)].join("; ");
    match items.len().checked_sub(shown) {
        Some(rest) if rest > 0 => format!("{listed}; ... and {rest} more"),
        _ => listed,
    }
}
