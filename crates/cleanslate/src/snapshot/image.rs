//! The snapshot image: a sandbox's complete guest-visible state as plain
//! data, independent of any instance or store, and how it is captured.

use std::ops::Range;
use std::sync::OnceLock;

use wasmtime::{Ref, Val as WasmVal};

use crate::error::{Error, ErrorKind};
use crate::module::Module;
use crate::sandbox::instance::LiveInstance;

/// Granularity of memory comparison and copying: the host page size.
pub(crate) const HOST_PAGE: usize = 4096;

/// Everything a call could change, captured at one moment.
#[derive(Debug)]
pub(crate) struct SnapshotImage {
    pub memories: Vec<MemoryImage>,
    /// Values of the mutable defined globals, by global index.
    pub globals: Vec<(u32, GlobalValue)>,
    pub tables: Vec<TableImage>,
    /// Passive data segments that are dropped (among those whose state is
    /// observable at all).
    pub dropped_data: Vec<u32>,
    /// Passive element segments that are dropped (likewise).
    pub dropped_elements: Vec<u32>,
}

#[derive(Debug)]
pub(crate) struct MemoryImage {
    pub bytes: Vec<u8>,
    /// The byte ranges (host-page aligned) where this image differs from a
    /// freshly instantiated memory; computed on first use.
    pub diff_from_fresh: OnceLock<Vec<Range<usize>>>,
}

/// A global's value, comparable across instances (floats by bits,
/// funcrefs by function index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GlobalValue {
    I32(i32),
    I64(i64),
    F32(u32),
    F64(u64),
    V128(u128),
    /// A funcref: the module function index, or `None` for null.
    FuncRef(Option<u32>),
    /// A null reference of a non-function reference type.
    NullRef,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TableImage {
    /// Each element as a module function index (`None` = null).
    pub elements: Vec<Option<u32>>,
}

impl SnapshotImage {
    /// Capture the state of `live`.
    pub(crate) fn capture(
        module: &Module,
        live: &mut LiveInstance,
    ) -> Result<SnapshotImage, Error> {
        let memories = live
            .memories
            .iter()
            .map(|m| MemoryImage {
                bytes: m.data(&live.store).to_vec(),
                diff_from_fresh: OnceLock::new(),
            })
            .collect();
        let mut globals = Vec::with_capacity(live.globals.len());
        for i in 0..live.globals.len() {
            let (index, global) = live.globals[i];
            let value = global.get(&mut live.store);
            globals.push((index, global_value(live, &value)?));
        }
        let mut tables = Vec::with_capacity(live.tables.len());
        for i in 0..live.tables.len() {
            tables.push(capture_table(live, i)?);
        }
        let (dropped_data, dropped_elements) = dropped_segments(module, live)?;
        Ok(SnapshotImage {
            memories,
            globals,
            tables,
            dropped_data,
            dropped_elements,
        })
    }

    /// Total bytes of memory held by the image.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.memories.iter().map(|m| m.bytes.len()).sum()
    }
}

pub(crate) fn global_value(live: &mut LiveInstance, value: &WasmVal) -> Result<GlobalValue, Error> {
    Ok(match value {
        WasmVal::I32(v) => GlobalValue::I32(*v),
        WasmVal::I64(v) => GlobalValue::I64(*v),
        WasmVal::F32(v) => GlobalValue::F32(*v),
        WasmVal::F64(v) => GlobalValue::F64(*v),
        WasmVal::V128(v) => GlobalValue::V128(v.as_u128()),
        WasmVal::FuncRef(f) => GlobalValue::FuncRef(funcref_index(live, f.as_ref())?),
        WasmVal::ExternRef(None) | WasmVal::AnyRef(None) | WasmVal::ExnRef(None) => {
            GlobalValue::NullRef
        }
        other => {
            return Err(Error::new(
                ErrorKind::Unrecoverable,
                format!("cannot snapshot a global holding {other:?}"),
            ));
        }
    })
}

/// Write the image's global values into `live` (either path's last step
/// for globals).
pub(crate) fn write_globals(image: &SnapshotImage, live: &mut LiveInstance) -> Result<(), String> {
    for (i, (index, value)) in image.globals.iter().enumerate() {
        let global = live.globals[i].1;
        let val = match *value {
            GlobalValue::I32(v) => WasmVal::I32(v),
            GlobalValue::I64(v) => WasmVal::I64(v),
            GlobalValue::F32(v) => WasmVal::F32(v),
            GlobalValue::F64(v) => WasmVal::F64(v),
            GlobalValue::V128(v) => WasmVal::V128(v.into()),
            GlobalValue::FuncRef(None) => WasmVal::FuncRef(None),
            GlobalValue::FuncRef(Some(f)) => {
                let func = live.functions.get(&f).copied();
                if func.is_none() {
                    return Err(format!("function {f} of global {index} is not reachable"));
                }
                WasmVal::FuncRef(func)
            }
            GlobalValue::NullRef => WasmVal::ExternRef(None),
        };
        global
            .set(&mut live.store, val)
            .map_err(|e| format!("cannot restore global {index}: {e:#}"))?;
    }
    Ok(())
}

pub(crate) fn capture_table(live: &mut LiveInstance, i: usize) -> Result<TableImage, Error> {
    let table = live.tables[i];
    let size = table.size(&live.store);
    let mut elements = Vec::with_capacity(size as usize);
    for slot in 0..size {
        let element = match table.get(&mut live.store, slot) {
            Some(Ref::Func(f)) => funcref_index(live, f.as_ref())?,
            Some(Ref::Extern(None)) | Some(Ref::Any(None)) | Some(Ref::Exn(None)) => None,
            other => {
                return Err(Error::new(
                    ErrorKind::Unrecoverable,
                    format!("cannot snapshot table {i} slot {slot} holding {other:?}"),
                ));
            }
        };
        elements.push(element);
    }
    Ok(TableImage { elements })
}

fn funcref_index(
    live: &mut LiveInstance,
    func: Option<&wasmtime::Func>,
) -> Result<Option<u32>, Error> {
    match func {
        None => Ok(None),
        Some(f) => live.function_index(f).map(Some).ok_or_else(|| {
            Error::new(
                ErrorKind::Unrecoverable,
                "a function reference does not belong to this module; cannot snapshot it",
            )
        }),
    }
}

/// Probe which observable passive segments are dropped.
pub(crate) fn dropped_segments(
    module: &Module,
    live: &mut LiveInstance,
) -> Result<(Vec<u32>, Vec<u32>), Error> {
    let hooks = &module.inner.hooks;
    let mut data = Vec::new();
    for seg in &hooks.data_segments {
        if let Some(probe) = &seg.probe
            && live.call_helper(probe)?
        {
            data.push(seg.segment);
        }
    }
    let mut elements = Vec::new();
    for seg in &hooks.element_segments {
        if let Some(probe) = &seg.probe
            && live.call_helper(probe)?
        {
            elements.push(seg.segment);
        }
    }
    Ok((data, elements))
}
