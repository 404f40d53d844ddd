//! The ways of running one call and getting back to a clean state that the
//! harness compares: Cleanslate's two paths, wasmtime's recommended
//! fresh-instance-per-call configurations, and two floors (the call alone
//! with no reset; a plain copy of the dirty pages).

use std::cell::RefCell;
use std::rc::Rc;

use cleanslate::{ResetPath, ResetStrategy, Runtime, Sandbox, Val};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, Store, TypedFunc,
};

use crate::guest::{HOST_PAGE, WASM_PAGE};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    CleanslateInPlace,
    CleanslateFresh,
    WasmtimePooling,
    WasmtimePoolingKeepResident,
    WasmtimeOnDemand,
    CallOnly,
    Memcpy,
    /// Growing guest only: write one byte in each host page of the grown
    /// size and zero it again, in an ordinary resident buffer.
    ZeroGrown,
}

pub const ALL: [Method; 7] = [
    Method::CleanslateInPlace,
    Method::CleanslateFresh,
    Method::WasmtimePooling,
    Method::WasmtimePoolingKeepResident,
    Method::WasmtimeOnDemand,
    Method::CallOnly,
    Method::Memcpy,
];

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::CleanslateInPlace => "cleanslate in place",
            Method::CleanslateFresh => "cleanslate fresh instance",
            Method::WasmtimePooling => "wasmtime fresh, pooling + CoW",
            Method::WasmtimePoolingKeepResident => {
                "wasmtime fresh, pooling + keep_resident + pagemap_scan"
            }
            Method::WasmtimeOnDemand => "wasmtime fresh, on-demand + CoW",
            Method::CallOnly => "call alone, no reset (floor)",
            Method::Memcpy => "memcpy of the dirty pages (floor)",
            Method::ZeroGrown => "write + zero the grown pages, no engine (floor)",
        }
    }

    /// A fresh-instance-per-call wasmtime baseline.
    pub fn is_wasmtime_fresh(self) -> bool {
        matches!(
            self,
            Method::WasmtimePooling
                | Method::WasmtimePoolingKeepResident
                | Method::WasmtimeOnDemand
        )
    }
}

/// The engine of a wasmtime fresh-instance baseline, for memories of up to
/// `max_memory` bytes.
pub fn wasmtime_engine(method: Method, max_memory: u64) -> Result<Engine, String> {
    let mut config = Config::new();
    if method != Method::WasmtimeOnDemand {
        let mut pooling = PoolingAllocationConfig::new();
        pooling
            .total_memories(4)
            .total_core_instances(4)
            .total_tables(4)
            .max_memory_size(max_memory as usize);
        if method == Method::WasmtimePoolingKeepResident {
            pooling
                .linear_memory_keep_resident(16 << 20)
                .table_keep_resident(1 << 16)
                .pagemap_scan(Enabled::Yes);
        }
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    }
    Engine::new(&config).map_err(|e| format!("{e:#}"))
}

/// One prepared call: run it to perform call + reset once.
pub type Call = Box<dyn FnMut()>;

pub fn prepare(
    method: Method,
    wasm: &[u8],
    memory_bytes: u64,
    k: u64,
    stride: u64,
) -> Result<Call, String> {
    let (k32, stride32) = (k as i32, stride as i32);
    match method {
        Method::CleanslateInPlace | Method::CleanslateFresh => {
            let mut sandbox = cleanslate_sandbox(method, wasm, memory_bytes)?;
            let args = [Val::I32(k32), Val::I32(stride32)];
            Ok(Box::new(move || {
                sandbox.call("dirty", &args).expect("dirty succeeds");
            }))
        }
        Method::WasmtimePooling
        | Method::WasmtimePoolingKeepResident
        | Method::WasmtimeOnDemand => {
            let engine = wasmtime_engine(method, memory_bytes)?;
            let module = Module::new(&engine, wasm).map_err(|e| format!("{e:#}"))?;
            let pre: InstancePre<()> = Linker::new(&engine)
                .instantiate_pre(&module)
                .map_err(|e| format!("{e:#}"))?;
            Ok(Box::new(move || {
                let mut store = Store::new(&engine, ());
                let instance = pre.instantiate(&mut store).expect("instantiate");
                let dirty: TypedFunc<(i32, i32), ()> =
                    instance.get_typed_func(&mut store, "dirty").expect("dirty");
                dirty
                    .call(&mut store, (k32, stride32))
                    .expect("dirty succeeds");
                drop(store);
            }))
        }
        Method::CallOnly => {
            let engine = Engine::default();
            let module = Module::new(&engine, wasm).map_err(|e| format!("{e:#}"))?;
            let mut store = Store::new(&engine, ());
            let instance = Linker::new(&engine)
                .instantiate(&mut store, &module)
                .map_err(|e| format!("{e:#}"))?;
            let dirty: TypedFunc<(i32, i32), ()> = instance
                .get_typed_func(&mut store, "dirty")
                .map_err(|e| format!("{e:#}"))?;
            Ok(Box::new(move || {
                dirty
                    .call(&mut store, (k32, stride32))
                    .expect("dirty succeeds")
            }))
        }
        Method::Memcpy => {
            let image = vec![7u8; memory_bytes as usize];
            let mut live = vec![0u8; memory_bytes as usize];
            Ok(Box::new(move || {
                for i in 0..k {
                    let at = (i * stride * HOST_PAGE) as usize;
                    let page = at..at + HOST_PAGE as usize;
                    live[page.clone()].copy_from_slice(&image[page]);
                }
                std::hint::black_box(&live);
            }))
        }
        Method::ZeroGrown => Err("only measured for the growing guest".into()),
    }
}

/// The methods measured on the growing guest: Cleanslate's two strategies,
/// the wasmtime fresh-instance baselines, and a floor: the guest's writes and
/// the zeroing any reset of the grown pages needs, in a plain buffer (no
/// protection changes). The other floors do not apply: a call without a
/// reset would grow the memory to its maximum.
pub const GROWTH: [Method; 6] = [
    Method::CleanslateInPlace,
    Method::CleanslateFresh,
    Method::WasmtimePooling,
    Method::WasmtimePoolingKeepResident,
    Method::WasmtimeOnDemand,
    Method::ZeroGrown,
];

/// The reset paths a Cleanslate sandbox took while measured.
#[derive(Clone, Debug, Default)]
pub struct Paths {
    pub in_place: u64,
    pub fresh: u64,
    /// The last reset's path and, if it went fresh, why.
    pub last: Option<(ResetPath, Option<&'static str>)>,
    /// Each reset's own duration, as it reported it (nanoseconds).
    pub reset_ns: Vec<u64>,
    /// Resets that walked the page tables (`PAGEMAP_SCAN`).
    pub scanned: u64,
    /// Host pages written back by the last reset.
    pub last_pages: u64,
    /// The growth each reset should undo, in bytes.
    pub grown_bytes: u64,
    /// In-place resets that did not lower the memory by `grown_bytes`.
    pub lowered_wrong: u64,
}

impl Paths {
    /// "in_place (3030 of 3030)" or with the fallback reason.
    pub fn describe(&self) -> String {
        let total = self.in_place + self.fresh;
        match self.last {
            None => "–".into(),
            Some((path, reason)) => {
                let count = match path {
                    ResetPath::FreshInstance => self.fresh,
                    _ => self.in_place,
                };
                let reason = reason.map(|r| format!(", {r}")).unwrap_or_default();
                let lowered = if self.in_place == 0 {
                    String::new()
                } else if self.lowered_wrong == 0 {
                    format!(
                        ", each lowering the memory by {} KiB",
                        self.grown_bytes >> 10
                    )
                } else {
                    format!(
                        ", {} of them not lowering the memory by {} KiB",
                        self.lowered_wrong,
                        self.grown_bytes >> 10
                    )
                };
                format!("{path}{reason} ({count} of {total}{lowered})")
            }
        }
    }

    /// The median reset alone, in microseconds.
    pub fn reset_median_us(&self) -> Option<f64> {
        let mut ns = self.reset_ns.clone();
        ns.sort_unstable();
        ns.get(ns.len() / 2).map(|&n| n as f64 / 1000.0)
    }

    /// Every reset measured took the in-place path and undid the growth.
    pub fn all_in_place(&self) -> bool {
        self.fresh == 0 && self.in_place > 0 && self.lowered_wrong == 0
    }
}

/// The reset paths of a prepared Cleanslate call, shared with its closure.
pub type PathTally = Rc<RefCell<Paths>>;

/// One call of `grow(n)` and its reset (Cleanslate) or a fresh instance
/// that runs it and is dropped (wasmtime). The memory starts at
/// `memory_bytes` and may grow by `max_grow` wasm pages. For Cleanslate,
/// also the tally of reset paths, updated after every call.
pub fn prepare_growing(
    method: Method,
    wasm: &[u8],
    memory_bytes: u64,
    max_grow: u64,
    n: u64,
) -> Result<(Call, Option<PathTally>), String> {
    let limit = memory_bytes + max_grow * WASM_PAGE;
    let n32 = n as i32;
    match method {
        Method::CleanslateInPlace | Method::CleanslateFresh => {
            let mut sandbox = cleanslate_sandbox(method, wasm, limit)?;
            let paths = Rc::new(RefCell::new(Paths {
                grown_bytes: n * WASM_PAGE,
                ..Paths::default()
            }));
            let tally = paths.clone();
            let args = [Val::I32(n32)];
            Ok((
                Box::new(move || {
                    sandbox.call("grow", &args).expect("grow succeeds");
                    let report = sandbox.last_reset().expect("a call resets");
                    let mut tally = tally.borrow_mut();
                    match report.path() {
                        ResetPath::FreshInstance => tally.fresh += 1,
                        _ => {
                            tally.in_place += 1;
                            if report.memory_lowered_bytes() != tally.grown_bytes {
                                tally.lowered_wrong += 1;
                            }
                        }
                    }
                    tally.last =
                        Some((report.path(), report.fallback_reason().map(|r| r.as_str())));
                    tally.reset_ns.push(report.duration().as_nanos() as u64);
                    tally.scanned += u64::from(report.scanned_page_tables());
                    tally.last_pages = report.dirty_pages();
                }),
                Some(paths),
            ))
        }
        Method::WasmtimePooling
        | Method::WasmtimePoolingKeepResident
        | Method::WasmtimeOnDemand => {
            let engine = wasmtime_engine(method, limit)?;
            let module = Module::new(&engine, wasm).map_err(|e| format!("{e:#}"))?;
            let pre: InstancePre<()> = Linker::new(&engine)
                .instantiate_pre(&module)
                .map_err(|e| format!("{e:#}"))?;
            Ok((
                Box::new(move || {
                    let mut store = Store::new(&engine, ());
                    let instance = pre.instantiate(&mut store).expect("instantiate");
                    let grow: TypedFunc<i32, ()> =
                        instance.get_typed_func(&mut store, "grow").expect("grow");
                    grow.call(&mut store, n32).expect("grow succeeds");
                    drop(store);
                }),
                None,
            ))
        }
        Method::ZeroGrown => {
            let mut grown = vec![0u8; (n * WASM_PAGE) as usize];
            Ok((
                Box::new(move || {
                    for page in grown.chunks_mut(HOST_PAGE as usize) {
                        page[0] = 0xcd;
                    }
                    std::hint::black_box(&mut grown);
                    grown.fill(0);
                    std::hint::black_box(&grown);
                }),
                None,
            ))
        }
        Method::CallOnly | Method::Memcpy => {
            Err(format!("{} does not apply to growing calls", method.name()))
        }
    }
}

/// A Cleanslate sandbox of `wasm` for one of its two methods: the default
/// strategy (in place where it covers the call) or fresh instances only.
fn cleanslate_sandbox(method: Method, wasm: &[u8], memory_limit: u64) -> Result<Sandbox, String> {
    let strategy = if method == Method::CleanslateInPlace {
        ResetStrategy::Auto
    } else {
        ResetStrategy::FreshInstance
    };
    let runtime = Runtime::new().map_err(|e| e.to_string())?;
    let module = runtime.load_bytes(wasm).map_err(|e| e.to_string())?;
    Sandbox::builder(&module)
        .memory_limit(memory_limit)
        .reset_strategy(strategy)
        .build()
        .map_err(|e| e.to_string())
}
