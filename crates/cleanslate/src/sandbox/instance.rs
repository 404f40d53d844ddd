//! One live wasmtime instance in its own store, with handles to every piece
//! of its state (reached through the exports the load-time rewrite added).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use wasmtime::{AsContextMut, Func, Global, Instance, InstancePre, Memory, Store, Table};

use crate::abi::ALLOC_EXPORT;
use crate::error::{Captured, Error, ErrorKind};
use crate::limits::{GrowthLimiter, Limits};
use crate::module::Module;
use crate::reset::dirty::{DirtyTracker, FaultWindow, PAGE, PageHeat};
use crate::sandbox::interrupt::{InterruptState, Interruption};
use crate::wasi::{CallStdio, WasiConfig};

/// Per-store host state.
pub(crate) struct StoreData {
    pub limiter: GrowthLimiter,
    pub interrupt: Arc<InterruptState>,
    /// When the running call must stop; `None` for no timeout.
    pub deadline: Option<Instant>,
    /// The call generation the interrupt state must match to cancel.
    pub generation: u64,
    /// The running call's cancel token, if it carries one.
    pub cancel: Option<crate::CancelToken>,
    /// The export the running call entered (for host functions' context).
    pub current_export: String,
    /// Cap on data the guest hands the host in one piece.
    pub output_limit: usize,
    /// The guest's first memory, through which data crosses the boundary.
    pub memory: Option<Memory>,
    /// All the guest's memories, in index order (host functions reach them
    /// through [`HostContext`](crate::HostContext)).
    pub memories: Vec<Memory>,
    /// The guest's `cleanslate_alloc`, if it exports one of the right type.
    pub alloc: Option<wasmtime::TypedFunc<i32, i32>>,
    /// This call's WASI context (WASI guests only; a fresh one per call).
    pub wasi: Option<wasmtime_wasi::p1::WasiP1Ctx>,
    /// Where this call's stdout and stderr go.
    pub stdio: Option<CallStdio>,
}

impl StoreData {
    /// The WASI context, for wasmtime-wasi; an empty one if a WASI function
    /// is somehow reached before a call installed its context.
    pub(crate) fn wasi_context(&mut self) -> &mut wasmtime_wasi::p1::WasiP1Ctx {
        self.wasi
            .get_or_insert_with(|| wasmtime_wasi::WasiCtxBuilder::new().build_p1())
    }

    /// What the finished call wrote to stdout and stderr, clearing it.
    pub(crate) fn take_captured(&mut self) -> Captured {
        self.wasi = None;
        self.stdio
            .take()
            .map(|stdio| stdio.captured())
            .unwrap_or_default()
    }
}

/// Everything needed to stamp out identical fresh instances.
pub(crate) struct InstanceFactory {
    pub module: Module,
    pub engine: wasmtime::Engine,
    pub pre: InstancePre<StoreData>,
    pub limits: Limits,
    pub interrupt: Arc<InterruptState>,
    /// Set when the module imports WASI.
    pub wasi: Option<WasiConfig>,
}

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
    function_indices: HashMap<usize, u32>,
    /// Whether writes to every memory are being tracked (in-place resets
    /// are possible).
    pub tracked: bool,
    /// Per tracked memory: which pages are left unprotected.
    pub heat: Vec<PageHeat>,
    /// Since the last in-place reset: whether a fault-free single thread
    /// ran the calls, so the next reset may skip the scan. `None`: scan.
    pub fault_window: Option<FaultWindow>,
    /// The tables (module indices) the calls since the last reset could
    /// have written, from the exports they entered; `None`: any table some
    /// instruction can write.
    pub tables_touched: Option<BTreeSet<u32>>,
}

/// Fuel given to internal helper calls (start, probes), which are either
/// tiny or the module's own initialisation.
const INTERNAL_FUEL: u64 = u64::MAX / 2;

impl InstanceFactory {
    /// A fresh instance in a fresh store: the module's initial state, with
    /// no start function run.
    pub(crate) fn instantiate(&self) -> Result<LiveInstance, Error> {
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
        let instance = self.pre.instantiate(&mut store).map_err(|e| {
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
        let hooks = &self.module.inner.hooks;
        let missing = |what: &str| {
            Error::new(
                ErrorKind::Instantiation,
                format!("internal error: the rewritten module lacks its {what} export"),
            )
        };
        let mut memories = Vec::new();
        for name in &hooks.memories {
            memories.push(
                instance
                    .get_memory(&mut store, name)
                    .ok_or_else(|| missing(name))?,
            );
        }
        let mut tables = Vec::new();
        for name in &hooks.tables {
            tables.push(
                instance
                    .get_table(&mut store, name)
                    .ok_or_else(|| missing(name))?,
            );
        }
        let mut globals = Vec::new();
        for (index, name) in &hooks.globals {
            globals.push((
                *index,
                instance
                    .get_global(&mut store, name)
                    .ok_or_else(|| missing(name))?,
            ));
        }
        store.data_mut().memory = memories.first().copied();
        store.data_mut().memories = memories.clone();
        store.data_mut().alloc = instance
            .get_typed_func::<i32, i32>(&mut store, ALLOC_EXPORT)
            .ok();
        let mut functions = HashMap::new();
        let mut function_indices = HashMap::new();
        for (index, name) in &hooks.functions {
            let func = instance
                .get_func(&mut store, name)
                .ok_or_else(|| missing(name))?;
            function_indices.insert(func.to_raw(&mut store) as usize, *index);
            functions.insert(*index, func);
        }
        Ok(LiveInstance {
            store,
            instance,
            memories,
            tables,
            globals,
            functions,
            function_indices,
            tracked: false,
            heat: Vec::new(),
            fault_window: None,
            tables_touched: Some(BTreeSet::new()),
        })
    }
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
        let Ok(tracker) = DirtyTracker::get() else {
            return;
        };
        let mut heat = Vec::with_capacity(self.memories.len());
        for memory in &self.memories {
            let base = memory.data_ptr(&self.store) as usize;
            let len = memory.data_size(&self.store);
            if let Err(e) = tracker.track(base, len) {
                tracing::warn!(error = %e, "cannot track memory writes; resets will replace the instance");
                return;
            }
            heat.push(PageHeat::new(len / PAGE));
        }
        self.heat = heat;
        self.tracked = true;
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
