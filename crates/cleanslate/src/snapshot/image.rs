//! The snapshot image: a sandbox's complete guest-visible state as plain
//! data, independent of any instance or store, and how it is captured.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use wasmtime::{Ref, Val as WasmVal};

use crate::error::{Error, ErrorKind};
use crate::instance::LiveInstance;
use crate::memory::{ImageFile, LazyImageFile};
use crate::module::Module;
pub(crate) use crate::module::{HOST_PAGE, differing_pages};
use crate::tracking::PageScan;

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
    /// Host-page-aligned byte ranges outside which `bytes` is all zero.
    pub populated: Vec<Range<usize>>,
    /// The byte ranges (host-page aligned) where this image differs from a
    /// freshly instantiated memory; computed on first use.
    pub diff_from_fresh: OnceLock<Vec<Range<usize>>>,
    /// The same bytes as a sealed file, which the fresh-instance path maps
    /// copy-on-write; made on first use.
    file: LazyImageFile,
}

impl MemoryImage {
    /// An image of `bytes`, all zero outside `populated` (host-page
    /// aligned, sorted ranges within `bytes`).
    pub(crate) fn new(bytes: Vec<u8>, populated: Vec<Range<usize>>) -> MemoryImage {
        MemoryImage {
            bytes,
            populated,
            diff_from_fresh: OnceLock::new(),
            file: LazyImageFile::default(),
        }
    }

    /// The image as a sealed file to map into a new instance's memory.
    ///
    /// # Errors
    /// Why the system refused the file (the next use tries again); the
    /// fresh path then copies the differing pages instead.
    pub(crate) fn file(&self) -> Result<&Arc<ImageFile>, String> {
        let runs = self
            .populated
            .iter()
            .map(|range| (range.start, &self.bytes[range.clone()]));
        self.file.get_or_make(self.bytes.len(), runs)
    }
}

/// A global's value, comparable across instances (floats by bits,
/// funcrefs by function index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
        let memories = (0..live.memories.len())
            .map(|i| capture_memory(module, i, live))
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

/// Capture memory `index`, mapping as little of it as possible.
///
/// The image is a zeroed allocation into which only non-zero content is
/// written: untouched, its pages cost the host no memory, so what the
/// image holds follows the data the memory really has, not its size.
fn capture_memory(module: &Module, index: usize, live: &LiveInstance) -> MemoryImage {
    let memory = live.memories[index];
    let data = memory.data(&live.store);
    let mut bytes = vec![0u8; data.len()];
    let Some(populated) = possibly_nonzero(module, index, live) else {
        copy_nonzero_pages(&mut bytes, data);
        return MemoryImage {
            bytes,
            populated: std::iter::once(0..data.len()).collect(),
            diff_from_fresh: OnceLock::new(),
            file: LazyImageFile::default(),
        };
    };
    let mut read_from = 0;
    // Where an image is mapped (the module's data at instantiation, or a
    // snapshot's memory on the fresh path), a page no one wrote since still
    // holds the image's bytes (a copy-on-write file page, mapped or not), so
    // take it from the image rather than reading — and thereby mapping — it.
    let backing = live.regions[index].as_ref().and_then(|r| r.backing());
    if let (Some(image), Ok(tracker)) = (backing, PageScan::get()) {
        let extent = image.len().min(data.len());
        let base = memory.data_ptr(&live.store) as usize;
        if let Ok(written) = tracker.anonymous(base, extent) {
            if image.read_into(&mut bytes[..extent]).is_ok() {
                for r in written.ranges {
                    // A scan reports whole host pages; a memory may end
                    // inside one (custom page sizes). A written page may
                    // have zeroed data: copied whole.
                    let r = r.start..r.end.min(extent);
                    bytes[r.clone()].copy_from_slice(&data[r]);
                }
                read_from = extent;
            } else {
                bytes[..extent].fill(0);
            }
        }
    }
    // Beyond `read_from` the image is still all zero.
    for r in &populated {
        let r = r.start.max(read_from)..r.end;
        if !r.is_empty() {
            copy_nonzero_pages(&mut bytes[r.clone()], &data[r]);
        }
    }
    MemoryImage {
        bytes,
        populated,
        diff_from_fresh: OnceLock::new(),
        file: LazyImageFile::default(),
    }
}

/// Copy `src` into the zeroed `dst` one host page at a time, skipping pages
/// that are all zero: writing zeros would give every such page of `dst`
/// host memory of its own.
fn copy_nonzero_pages(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.chunks_mut(HOST_PAGE).zip(src.chunks(HOST_PAGE)) {
        if s.iter().any(|b| *b != 0) {
            d.copy_from_slice(s);
        }
    }
}

/// The byte ranges of memory `index` of `live` that can hold non-zero
/// bytes: the part active data segments initialise, and every page mapped
/// to a page of its own. Everywhere else the memory is untouched anonymous
/// memory and reads as zero — and is not read here, because reading maps
/// pages, and every mapped page costs scan time at every later reset.
/// `None` when that cannot be established (no page scan on this machine, or
/// data segments at computed offsets): then the whole memory must be read.
pub(crate) fn possibly_nonzero(
    module: &Module,
    index: usize,
    live: &LiveInstance,
) -> Option<Vec<Range<usize>>> {
    let memory = live.memories[index];
    let len = memory.data_size(&live.store);
    // An image mapped over the memory's start may hold data anywhere in it;
    // else only the data segments (applied by the engine) can.
    let mapped = live.regions[index].as_ref().and_then(|r| r.backing());
    let extent = match mapped {
        Some(image) => image.len() as u64,
        None => module.inner.layout.memories.get(index)?.data_extent?,
    };
    let extent = (extent as usize).next_multiple_of(HOST_PAGE).min(len);
    let tracker = PageScan::get().ok()?;
    let base = memory.data_ptr(&live.store) as usize;
    let present = tracker.present(base + extent, len - extent).ok()?;
    let mut ranges: Vec<Range<usize>> = Vec::with_capacity(present.ranges.len() + 1);
    if extent > 0 {
        ranges.push(0..extent);
    }
    for r in present.ranges {
        // Page-granular, but a memory may end inside a host page (custom
        // page sizes): nothing past its end is part of it.
        let r = (r.start + extent)..(r.end + extent).min(len);
        if r.is_empty() {
            continue;
        }
        match ranges.last_mut() {
            Some(last) if last.end == r.start => last.end = r.end,
            _ => ranges.push(r),
        }
    }
    Some(ranges)
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

/// The null value of table `i`'s own element type (funcref, externref,
/// exnref, ...): a null of another type would not type-check.
pub(crate) fn table_null(live: &LiveInstance, i: usize) -> Ref {
    let ty = live.tables[i].ty(&live.store);
    Ref::null(ty.element().heap_type())
}

/// Table slot `slot` as the image records it: `Ok(None)` for any null,
/// `Ok(Some(index))` for a function; `Err(())` for a non-null reference an
/// image cannot hold (an exception object a call left there).
pub(crate) fn table_slot(live: &mut LiveInstance, i: usize, slot: u64) -> Result<Option<u32>, ()> {
    // Reading a GC reference (an exnref) roots it in the store until the
    // innermost root scope ends; the store outlives every in-place reset,
    // so without this scope each read would leak a root for good.
    let element = {
        let mut scope = wasmtime::RootScope::new(&mut live.store);
        match live.tables[i].get(&mut scope, slot) {
            Some(Ref::Func(f)) => Ok(f),
            Some(r) if r.is_null() => Ok(None),
            _ => Err(()),
        }
    };
    funcref_index(live, element?.as_ref()).map_err(|_| ())
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
            GlobalValue::FuncRef(f) => WasmVal::FuncRef(
                live.function_ref(f)
                    .map_err(|e| format!("global {index}: {e}"))?,
            ),
            // The null of the global's own reference type (externref,
            // exnref, ...): a null of another type would not type-check.
            GlobalValue::NullRef => match global.ty(&live.store).content() {
                wasmtime::ValType::Ref(r) => WasmVal::null_ref(r.heap_type()),
                _ => WasmVal::ExternRef(None),
            },
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
