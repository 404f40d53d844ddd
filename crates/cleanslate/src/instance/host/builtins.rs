//! The `cleanslate.*` imports every guest may use (docs/ABI.md):
//! `call_host` (a bytes host function by name), `panic` and `log`.

use super::bytes::{call_bytes_host, with_memory};
use super::{HostFault, HostFunctions};
use crate::abi::{IMPORT_MODULE, MESSAGE_LIMIT, read_message};
use crate::error::{Error, ErrorKind};
use crate::instance::StoreData;
use crate::value::Signature;

impl HostFunctions {
    /// Define one of the `cleanslate.*` imports every guest may use.
    pub(super) fn link_builtin(
        &self,
        linker: &mut wasmtime::Linker<StoreData>,
        name: &str,
        signature: &Signature,
    ) -> Result<(), String> {
        use crate::value::ValType::I32;
        let expect = |params: Vec<crate::value::ValType>, results: Vec<crate::value::ValType>| {
            let wanted = Signature::new(params, results);
            if *signature == wanted {
                Ok(())
            } else {
                Err(format!(
                    "imported as {signature}, but it is {wanted} (docs/ABI.md)"
                ))
            }
        };
        let defined = match name {
            "call_host" => {
                expect(vec![I32; 4], vec![crate::value::ValType::I64])?;
                let functions = self.clone();
                linker.func_wrap(
                    IMPORT_MODULE,
                    "call_host",
                    move |mut caller: wasmtime::Caller<'_, StoreData>,
                          name_ptr: i32,
                          name_len: i32,
                          ptr: i32,
                          len: i32| {
                        let name = guest_string(&mut caller, name_ptr as u32, name_len as u32)?;
                        let (qualified, closure) = functions.find_bytes(&name).map_err(|m| {
                            wasmtime::Error::new(HostFault::Error {
                                function: name.clone(),
                                message: m,
                                source: None,
                            })
                        })?;
                        call_bytes_host(caller, &qualified, &closure, ptr as u32, len as u32)
                    },
                )
            }
            "panic" => {
                expect(vec![I32; 2], vec![])?;
                linker.func_wrap(
                    IMPORT_MODULE,
                    "panic",
                    |mut caller: wasmtime::Caller<'_, StoreData>, ptr: i32, len: i32| {
                        let message = with_memory(&mut caller, |memory| {
                            read_message(&memory, ptr as u32, len as u32)
                        })?;
                        Err::<(), _>(wasmtime::Error::new(HostFault::GuestPanic { message }))
                    },
                )
            }
            "log" => {
                expect(vec![I32; 3], vec![])?;
                linker.func_wrap(
                    IMPORT_MODULE,
                    "log",
                    |mut caller: wasmtime::Caller<'_, StoreData>,
                     level: i32,
                     ptr: i32,
                     len: i32| {
                        let message = with_memory(&mut caller, |memory| {
                            read_message(&memory, ptr as u32, len as u32)
                        })?;
                        let export = caller.data().current_export.as_str();
                        match level {
                            0 => tracing::error!(target: "cleanslate::guest", export, "{message}"),
                            1 => tracing::warn!(target: "cleanslate::guest", export, "{message}"),
                            2 => tracing::info!(target: "cleanslate::guest", export, "{message}"),
                            3 => tracing::debug!(target: "cleanslate::guest", export, "{message}"),
                            _ => tracing::trace!(target: "cleanslate::guest", export, "{message}"),
                        }
                        Ok(())
                    },
                )
            }
            other => {
                return Err(format!(
                    "`{other}` is not a function the host offers (cleanslate.call_host, cleanslate.panic and cleanslate.log are)"
                ));
            }
        };
        defined.map(|_| ()).map_err(|e| format!("{e:#}"))
    }
}

/// The host function name the guest passed to `call_host`: bounded and
/// UTF-8, or the guest broke the ABI.
fn guest_string(
    caller: &mut wasmtime::Caller<'_, StoreData>,
    ptr: u32,
    len: u32,
) -> wasmtime::Result<String> {
    if len > MESSAGE_LIMIT {
        return Err(wasmtime::Error::new(HostFault::Guest(Error::new(
            ErrorKind::InvalidGuestOutput,
            format!(
                "the guest named a host function with {len} bytes; names are at most {} KiB",
                MESSAGE_LIMIT / 1024
            ),
        ))));
    }
    with_memory(caller, |memory| {
        let bytes = memory.read(ptr, len, "a host function name")?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            Error::new(
                ErrorKind::InvalidGuestOutput,
                "the guest named a host function with bytes that are not UTF-8",
            )
        })
    })
}
