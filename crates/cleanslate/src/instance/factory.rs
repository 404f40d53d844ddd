//! Stamping out identical fresh instances of a module, each in its own
//! store, with handles to every piece of state the reset restores.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use wasmtime::{InstancePre, ModuleExport, Store};

use super::{LiveInstance, StoreData};
use crate::abi::ALLOC_EXPORT;
use crate::engine::limits::{GrowthLimiter, Limits};
use crate::error::{Error, ErrorKind};
use crate::instance::interrupt::{InterruptState, Interruption};
use crate::instance::wasi::WasiConfig;
use crate::memory::{self, ImageFile, MemoryRegion};
use crate::module::Module;
use crate::tracking::PageScan;

/// Everything needed to stamp out identical fresh instances.
pub(crate) struct InstanceFactory {
    pub module: Module,
    pub engine: wasmtime::Engine,
    pub pre: InstancePre<StoreData>,
    pub limits: Limits,
    pub interrupt: Arc<InterruptState>,
    /// Set when the module imports WASI.
    pub wasi: Option<WasiConfig>,
    /// The memories of the instance the fresh-instance path last replaced.
    pub spare_regions: SpareRegions,
    /// The rewrite's exports, resolved once: looking each up by name at
    /// every instantiation costs milliseconds for a module with thousands
    /// of functions.
    pub export_handles: OnceLock<ExportHandles>,
}

/// Handles on the exports the load-time rewrite added, in the order of
/// the module's hooks.
pub(crate) struct ExportHandles {
    memories: Vec<ModuleExport>,
    tables: Vec<ModuleExport>,
    globals: Vec<(u32, ModuleExport)>,
    functions: Vec<(u32, ModuleExport)>,
    alloc: Option<ModuleExport>,
}

/// The memory regions of an instance the fresh-instance path replaced,
/// kept so the next instance of the same snapshot takes them over instead
/// of reserving and mapping new ones (and faulting every page in again):
/// what wasmtime's pooling allocator does with its slots.
#[derive(Debug, Default)]
pub(crate) struct SpareRegions {
    /// One region per memory, in memory order; empty when there are none.
    regions: Mutex<Vec<Arc<MemoryRegion>>>,
    /// The engine once gave an offered region to something other than the
    /// memory it was offered for (a GC heap): never offer again.
    refused: AtomicBool,
}

/// A new instance, and whether its memories are the recycled regions of an
/// earlier one (then each still holds what that instance left, and must be
/// restored before guest code runs).
pub(crate) struct Instantiated {
    pub live: LiveInstance,
    pub recycled: bool,
}

impl InstanceFactory {
    /// The rewrite's exports, resolved on first use.
    ///
    /// # Errors
    /// An export the rewrite adds is missing (an internal error).
    fn export_handles(&self) -> Result<&ExportHandles, Error> {
        if let Some(handles) = self.export_handles.get() {
            return Ok(handles);
        }
        let module = self.pre.module();
        let hooks = &self.module.inner.hooks;
        let find = |name: &str| {
            module.get_export_index(name).ok_or_else(|| {
                Error::new(
                    ErrorKind::Instantiation,
                    format!("internal error: the rewritten module lacks its {name} export"),
                )
            })
        };
        let handles = ExportHandles {
            memories: hooks
                .memories
                .iter()
                .map(|n| find(n))
                .collect::<Result<_, _>>()?,
            tables: hooks
                .tables
                .iter()
                .map(|n| find(n))
                .collect::<Result<_, _>>()?,
            globals: hooks
                .globals
                .iter()
                .map(|(i, n)| Ok((*i, find(n)?)))
                .collect::<Result<_, Error>>()?,
            functions: hooks
                .functions
                .iter()
                .map(|(i, n)| Ok((*i, find(n)?)))
                .collect::<Result<_, Error>>()?,
            alloc: module.get_export_index(ALLOC_EXPORT),
        };
        Ok(self.export_handles.get_or_init(|| handles))
    }
}

impl SpareRegions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<MemoryRegion>>> {
        self.regions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Fuel given to internal helper calls (start, probes), which are either
/// tiny or the module's own initialisation.
pub(super) const INTERNAL_FUEL: u64 = u64::MAX / 2;

impl InstanceFactory {
    /// A fresh instance in a fresh store: the module's initial state, with
    /// no start function run.
    pub(crate) fn instantiate(&self) -> Result<LiveInstance, Error> {
        Ok(self.instantiate_offering(Vec::new())?.live)
    }

    /// A fresh instance to be brought to a snapshot whose memories have the
    /// images `images`: it takes over the regions of the instance replaced
    /// last when each still maps its memory's image (`recycled`); else it
    /// is as [`instantiate`](Self::instantiate) makes it.
    pub(crate) fn instantiate_for(
        &self,
        images: &[Option<&Arc<ImageFile>>],
    ) -> Result<Instantiated, Error> {
        let spare = std::mem::take(&mut *self.spare_regions.lock());
        let fits = !spare.is_empty()
            && spare.len() == images.len()
            && spare
                .iter()
                .zip(images)
                .all(|(region, image)| image.is_some_and(|image| region.recyclable_for(image)));
        if !fits || self.spare_regions.refused.load(Ordering::Relaxed) {
            return self.instantiate_offering(Vec::new());
        }
        let made = self.instantiate_offering(spare)?;
        if made.recycled || !self.spare_regions.refused.load(Ordering::Relaxed) {
            return Ok(made);
        }
        // An offered region went elsewhere: that instance is discarded
        // unused (no guest code ran in it) and a clean one made.
        drop(made);
        self.instantiate_offering(Vec::new())
    }

    /// Keep the memories of `live`, which the fresh-instance path is
    /// replacing, for the next instance (when every memory has a region no
    /// one else holds, and this machine can scan pages, which restoring
    /// them needs). Everything else of `live` is dropped now.
    pub(crate) fn retire(&self, live: LiveInstance) {
        let LiveInstance { store, regions, .. } = live;
        // The engine's handles on the regions go with the store.
        drop(store);
        if PageScan::get().is_err() || self.spare_regions.refused.load(Ordering::Relaxed) {
            return;
        }
        let mut spare = Vec::with_capacity(regions.len());
        for region in regions {
            match region {
                Some(region) if Arc::strong_count(&region) == 1 => spare.push(region),
                _ => return,
            }
        }
        *self.spare_regions.lock() = spare;
    }

    fn instantiate_offering(&self, offered: Vec<Arc<MemoryRegion>>) -> Result<Instantiated, Error> {
        let data = StoreData {
            limiter: GrowthLimiter::new(&self.limits),
            interrupt: self.interrupt.clone(),
            deadline: None,
            generation: 0,
            cancel: None,
            current_export: String::new(),
            output_limit: self.limits.output,
            memory: None,
            memories: Vec::new(),
            alloc: None,
            wasi: None,
            stdio: None,
        };
        let mut store = Store::new(&self.engine, data);
        store.limiter(|data| &mut data.limiter);
        store.epoch_deadline_callback(|ctx| {
            let data = ctx.data();
            if let Some(why) = data.interrupt.requested(data.generation) {
                return Err(wasmtime::Error::new(why));
            }
            if data.cancel.as_ref().is_some_and(|t| t.is_cancelled()) {
                return Err(wasmtime::Error::new(Interruption::CancelledByToken));
            }
            if data.deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(wasmtime::Error::new(Interruption::Timeout));
            }
            Ok(wasmtime::UpdateDeadline::Continue(1))
        });
        store.set_epoch_deadline(1);
        if self.limits.fuel.is_some() {
            store
                .set_fuel(INTERNAL_FUEL)
                .map_err(|e| Error::new(ErrorKind::Instantiation, format!("{e:#}")))?;
        }
        let expected = offered.clone();
        let (instance, created, unused) =
            memory::record_created(offered, || self.pre.instantiate(&mut store));
        let taken = unused.len() < expected.len();
        drop(unused);
        let instance = instance.map_err(|e| {
            if let Some(refused) = store.data().limiter.refused_memory {
                return Error::new(
                    ErrorKind::OutOfMemory,
                    format!(
                        "the module's initial memory ({} bytes) exceeds the sandbox's memory limit ({} bytes): raise the limit",
                        refused.desired, refused.limit
                    ),
                );
            }
            Error::new(ErrorKind::Instantiation, format!("cannot instantiate the module: {e:#}"))
        })?;
        let handles = self.export_handles()?;
        let missing = |what: &str| {
            Error::new(
                ErrorKind::Instantiation,
                format!("internal error: the new instance lacks its {what} export"),
            )
        };
        let mut memories = Vec::with_capacity(handles.memories.len());
        for handle in &handles.memories {
            memories.push(
                instance
                    .get_module_export(&mut store, handle)
                    .and_then(wasmtime::Extern::into_memory)
                    .ok_or_else(|| missing("memory"))?,
            );
        }
        let mut tables = Vec::with_capacity(handles.tables.len());
        for handle in &handles.tables {
            tables.push(
                instance
                    .get_module_export(&mut store, handle)
                    .and_then(wasmtime::Extern::into_table)
                    .ok_or_else(|| missing("table"))?,
            );
        }
        let mut globals = Vec::with_capacity(handles.globals.len());
        for (index, handle) in &handles.globals {
            globals.push((
                *index,
                instance
                    .get_module_export(&mut store, handle)
                    .and_then(wasmtime::Extern::into_global)
                    .ok_or_else(|| missing("global"))?,
            ));
        }
        // Each memory's region: the one created at its base address (a GC
        // heap's region matches no memory).
        let regions: Vec<Option<Arc<MemoryRegion>>> = memories
            .iter()
            .map(|m| {
                let base = m.data_ptr(&store);
                created.iter().find(|r| r.base() == base).cloned()
            })
            .collect();
        // Recycled only if every memory got the region offered for it, in
        // order; a region taken by anything else (a GC heap the engine made
        // first) stops all offers, and the caller discards this instance.
        let recycled = taken
            && expected.len() == regions.len()
            && expected
                .iter()
                .zip(&regions)
                .all(|(offer, got)| got.as_ref().is_some_and(|got| Arc::ptr_eq(offer, got)));
        if taken && !recycled {
            self.spare_regions.refused.store(true, Ordering::Relaxed);
        }
        drop(expected);
        if !recycled {
            for (i, memory) in memories.iter().enumerate() {
                self.place_initial_image(i, regions[i].as_deref(), memory.data_mut(&mut store))?;
            }
        }
        store.data_mut().memory = memories.first().copied();
        store.data_mut().memories = memories.clone();
        store.data_mut().alloc = handles
            .alloc
            .as_ref()
            .and_then(|handle| instance.get_module_export(&mut store, handle))
            .and_then(wasmtime::Extern::into_func)
            .and_then(|func| func.typed::<i32, i32>(&store).ok());
        let mut functions = HashMap::with_capacity(handles.functions.len());
        let mut function_indices = HashMap::with_capacity(handles.functions.len());
        for (index, handle) in &handles.functions {
            let func = instance
                .get_module_export(&mut store, handle)
                .and_then(wasmtime::Extern::into_func)
                .ok_or_else(|| missing("function"))?;
            function_indices.insert(func.to_raw(&mut store) as usize, *index);
            functions.insert(*index, func);
        }
        let live = LiveInstance {
            store,
            instance,
            memories,
            tables,
            globals,
            functions,
            function_indices,
            regions,
            tracking: None,
            tables_touched: Some(BTreeSet::new()),
        };
        Ok(Instantiated { live, recycled })
    }

    /// Give memory `index` its initial content when the load-time rewrite
    /// moved its data segments into an image (else the engine applied
    /// them): map the image copy-on-write into the memory's region, or,
    /// for a memory that is not ours, copy it in.
    fn place_initial_image(
        &self,
        index: usize,
        region: Option<&MemoryRegion>,
        data: &mut [u8],
    ) -> Result<(), Error> {
        let module = &self.module.inner;
        if !module
            .hooks
            .memory_images
            .get(index)
            .copied()
            .unwrap_or(false)
        {
            return Ok(());
        }
        let failed = |why: String| {
            Error::new(
                ErrorKind::Instantiation,
                format!("cannot place the initial contents of memory {index}: {why}"),
            )
        };
        let Some(initial) = module.initial_memory.get(index).and_then(Option::as_ref) else {
            return Err(failed(
                "internal error: the module has no image of it".into(),
            ));
        };
        if initial.len() == 0 {
            return Ok(());
        }
        match (region, initial.file()) {
            (Some(region), Ok(file)) => region.map_image(file).map_err(|e| failed(e.to_string())),
            // No region of ours, or no file to map (the system refused one
            // for now): the bytes are copied in, as the engine would.
            _ => {
                initial.write_to(data);
                Ok(())
            }
        }
    }
}
