//! The ways of running one call and getting back to a clean state that the
//! harness compares: Cleanslate's two paths, wasmtime's recommended
//! fresh-instance-per-call configurations, and two floors (the call alone
//! with no reset; a plain copy of the dirty pages).

use cleanslate::{ResetStrategy, Runtime, Sandbox, Val};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, Store, TypedFunc,
};

use crate::guest::HOST_PAGE;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    CleanslateInPlace,
    CleanslateFresh,
    WasmtimePooling,
    WasmtimePoolingKeepResident,
    WasmtimeOnDemand,
    CallOnly,
    Memcpy,
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
            let strategy = if method == Method::CleanslateInPlace {
                ResetStrategy::Auto
            } else {
                ResetStrategy::FreshInstance
            };
            let runtime = Runtime::new().map_err(|e| e.to_string())?;
            let module = runtime.load_bytes(wasm).map_err(|e| e.to_string())?;
            let mut sandbox = Sandbox::builder(&module)
                .memory_limit(memory_bytes)
                .reset_strategy(strategy)
                .build()
                .map_err(|e| e.to_string())?;
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
    }
}
