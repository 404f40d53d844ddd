//! One live wasmtime instance in its own store, with handles to every piece
//! of its state (reached through the exports the load-time rewrite added).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use wasmtime::{AsContextMut, Func, Global, Instance, Memory, Store, Table};

use super::StoreData;
use super::factory::INTERNAL_FUEL;
use crate::error::{Error, ErrorKind};
use crate::memory::MemoryRegion;
use crate::module::Module;
use crate::tracking::TrackedMemories;

/// A live instance and handles to its state.
pub(crate) struct LiveInstance {
    pub store: Store<StoreData>,
    pub instance: Instance,
    /// Defined memories, in index order.
    pub memories: Vec<Memory>,
    /// Defined tables, in index order.
    pub tables: Vec<Table>,
    /// Mutable defined globals with their indices.
    pub globals: Vec<(u32, Global)>,
    /// Function index -> function, for rebuilding funcrefs.
    pub functions: HashMap<u32, Func>,
    /// Funcref identity -> function index, for recording funcrefs.
    pub(super) function_indices: HashMap<usize, u32>,
    /// Per memory, in index order: its region, through which a reset
    /// lowers a grown memory and maps a snapshot (`None`: a memory the
    /// engine made itself, which only a fresh instance can undo growth of).
    pub regions: Vec<Option<Arc<MemoryRegion>>>,
    /// Write tracking of every memory; `None`: untracked, so in-place
    /// resets are impossible.
    pub tracking: Option<TrackedMemories>,
    /// The tables (module indices) the calls since the last reset could
    /// have written, from the exports they entered; `None`: any table some
    /// instruction can write.
    pub tables_touched: Option<BTreeSet<u32>>,
}

impl LiveInstance {
    /// The function with module index `index` in this instance, for a funcref
    /// recorded by index (`None` is a null reference).
    pub(crate) fn function_ref(&self, index: Option<u32>) -> Result<Option<Func>, String> {
        match index {
            None => Ok(None),
            Some(i) => self
                .functions
                .get(&i)
                .copied()
                .map(Some)
                .ok_or_else(|| format!("function {i} of the snapshot is not reachable")),
        }
    }

    /// Start tracking writes to every memory, from the current contents on.
    /// Where the machine cannot, the instance stays untracked and resets
    /// take the fresh-instance path.
    pub(crate) fn start_tracking(&mut self) {
        let regions = self.memories.iter().zip(&self.regions).map(|(m, region)| {
            let size = m.data_size(&self.store);
            let reach = region.as_ref().map_or(size, |r| r.capacity());
            (m.data_ptr(&self.store) as usize, size, reach)
        });
        match TrackedMemories::start(regions) {
            Ok(tracking) => self.tracking = Some(tracking),
            Err(e) => {
                tracing::warn!(error = %e, "cannot track memory writes; resets will replace the instance")
            }
        }
    }

    /// Guest code is about to run on the current thread (see
    /// [`TrackedMemories::begin_call`]).
    pub(crate) fn begin_call(&mut self) {
        if let Some(tracking) = self.tracking.as_mut() {
            tracking.begin_call();
        }
    }

    /// The module function index behind a funcref of this instance.
    pub(crate) fn function_index(&mut self, func: &Func) -> Option<u32> {
        let raw = func.to_raw(self.store.as_context_mut()) as usize;
        self.function_indices.get(&raw).copied()
    }

    /// How many LIFO GC roots the store holds (tests of root leaks only).
    /// wasmtime offers no count; a root made inside a fresh scope takes the
    /// next position in the store's LIFO root list, which its `Debug` form
    /// names (`PackedIndex::Lifo(n)`), so `n` is the number held below it.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn lifo_gc_roots(&mut self) -> Option<usize> {
        let mut scope = wasmtime::RootScope::new(&mut self.store);
        let marker = wasmtime::ExternRef::new(&mut scope, ()).ok()?;
        let text = format!("{marker:?}");
        let digits = text.split("Lifo(").nth(1)?.split(')').next()?;
        digits.parse().ok()
    }

    /// Guest code is entered through export `name`: widen the tables the
    /// next reset must examine by those it can write.
    pub(crate) fn note_entered(&mut self, module: &Module, name: &str) {
        let mutations = &module.inner.layout.mutations;
        if mutations.tables_written.is_empty() {
            return;
        }
        match (mutations.export_tables.get(name), &mut self.tables_touched) {
            (Some(tables), Some(touched)) => touched.extend(tables),
            (Some(_), None) => {}
            (None, _) => self.tables_touched = None,
        }
    }

    /// Whether defined table `defined` (position among the module's
    /// defined tables) can have changed since the last reset.
    pub(crate) fn table_maybe_touched(&self, module: &Module, defined: usize) -> bool {
        let layout = &module.inner.layout;
        if !layout.table_writable(defined) {
            return false;
        }
        match (&self.tables_touched, layout.tables.get(defined)) {
            (Some(touched), Some(table)) => touched.contains(&table.index),
            _ => true,
        }
    }

    /// Call an internal helper export (start, probe, drop) with no arguments.
    /// Returns whether it trapped.
    pub(crate) fn call_helper(&mut self, name: &str) -> Result<bool, Error> {
        let func = self
            .instance
            .get_typed_func::<(), ()>(&mut self.store, name)
            .map_err(|e| {
                Error::new(
                    ErrorKind::Instantiation,
                    format!("internal error: helper `{name}` missing: {e:#}"),
                )
            })?;
        self.prepare_internal_call()?;
        Ok(func.call(&mut self.store, ()).is_err())
    }

    /// Arm the store for a call the sandbox itself makes (no user limits on
    /// time; fuel topped up so metering cannot refuse it).
    pub(crate) fn prepare_internal_call(&mut self) -> Result<(), Error> {
        let data = self.store.data_mut();
        data.deadline = None;
        data.generation = 0;
        self.store.set_epoch_deadline(1);
        if self.store.get_fuel().is_ok() {
            self.store
                .set_fuel(INTERNAL_FUEL)
                .map_err(|e| Error::new(ErrorKind::Instantiation, format!("{e:#}")))?;
        }
        Ok(())
    }
}
