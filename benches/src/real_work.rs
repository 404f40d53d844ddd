//! The "real work" row: a Rust guest built with the guest SDK
//! (guests/rust/json-transform) parses a JSON order of 200 items with serde,
//! sums it and answers in JSON — through Cleanslate's `call_bytes` and
//! through the same data ABI driven by hand on plain wasmtime.

use std::path::PathBuf;
use std::process::Command;

use cleanslate::{ResetStrategy, Runtime, Sandbox};
use wasmtime::{Engine, InstancePre, Linker, Memory, Module, Store, TypedFunc};

use crate::methods::{Call, Method};

/// The methods that make sense for a data-ABI call (no memcpy floor: the
/// pages it dirties are the guest's business).
pub const METHODS: [Method; 6] = [
    Method::CleanslateInPlace,
    Method::CleanslateFresh,
    Method::WasmtimePooling,
    Method::WasmtimePoolingKeepResident,
    Method::WasmtimeOnDemand,
    Method::CallOnly,
];

/// Build the example Rust guests (cargo caches them) and return the module.
pub fn guest() -> Result<Vec<u8>, String> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = repo.join("target/guests");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-unknown-unknown",
        ])
        .arg("--manifest-path")
        .arg(repo.join("guests/rust/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(
            "building guests/rust failed (it needs the wasm32-unknown-unknown target: `rustup target add wasm32-unknown-unknown`)"
                .into(),
        );
    }
    std::fs::read(target.join("wasm32-unknown-unknown/release/json_transform.wasm"))
        .map_err(|e| e.to_string())
}

/// A 200-item order, about 10 KB of JSON.
pub fn input() -> Vec<u8> {
    let items: Vec<String> = (0..200)
        .map(|i| {
            format!(
                r#"{{"name":"item number {i}","cents":{},"quantity":{}}}"#,
                100 + i * 7,
                1 + i % 5
            )
        })
        .collect();
    format!(
        r#"{{"customer":"ada lovelace","items":[{}]}}"#,
        items.join(",")
    )
    .into_bytes()
}

pub fn prepare(method: Method, wasm: &[u8], input: Vec<u8>) -> Result<Call, String> {
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
                .reset_strategy(strategy)
                .build()
                .map_err(|e| e.to_string())?;
            Ok(Box::new(move || {
                let out = sandbox.call_bytes("summarise", &input).expect("summarise");
                std::hint::black_box(out);
            }))
        }
        Method::WasmtimePooling
        | Method::WasmtimePoolingKeepResident
        | Method::WasmtimeOnDemand => {
            let engine = crate::methods::wasmtime_engine(method, 64 << 20)?;
            let module = Module::new(&engine, wasm).map_err(|e| format!("{e:#}"))?;
            let pre: InstancePre<()> = sdk_linker(&engine)?
                .instantiate_pre(&module)
                .map_err(|e| format!("{e:#}"))?;
            Ok(Box::new(move || {
                let mut store = Store::new(&engine, ());
                let instance = pre.instantiate(&mut store).expect("instantiate");
                let out = call_by_hand(&mut store, &instance, &input);
                std::hint::black_box(out);
            }))
        }
        Method::CallOnly => {
            let engine = Engine::default();
            let module = Module::new(&engine, wasm).map_err(|e| format!("{e:#}"))?;
            let mut store = Store::new(&engine, ());
            let instance = sdk_linker(&engine)?
                .instantiate(&mut store, &module)
                .map_err(|e| format!("{e:#}"))?;
            // No reset: the bump allocator only moves forward, so a few
            // thousand calls fit in memory but the floor drifts upward a
            // little as the heap grows.
            Ok(Box::new(move || {
                let out = call_by_hand(&mut store, &instance, &input);
                std::hint::black_box(out);
            }))
        }
        Method::Memcpy | Method::ZeroGrown => Err("not measured for this guest".into()),
    }
}

/// The `cleanslate.*` imports an SDK guest has, as plain wasmtime
/// functions: a panic ends the call, logs go nowhere.
fn sdk_linker(engine: &Engine) -> Result<Linker<()>, String> {
    let mut linker = Linker::new(engine);
    linker
        .func_wrap(
            "cleanslate",
            "panic",
            |_: i32, _: i32| -> wasmtime::Result<()> {
                Err(wasmtime::Error::msg("the guest panicked"))
            },
        )
        .and_then(|l| l.func_wrap("cleanslate", "log", |_: i32, _: i32, _: i32| {}))
        .and_then(|l| {
            l.func_wrap(
                "cleanslate",
                "call_host",
                |_: i32, _: i32, _: i32, _: i32| -> i64 { 0 },
            )
        })
        .map_err(|e| format!("{e:#}"))?;
    Ok(linker)
}

/// The data ABI (docs/ABI.md) driven directly on wasmtime.
fn call_by_hand(store: &mut Store<()>, instance: &wasmtime::Instance, input: &[u8]) -> Vec<u8> {
    let alloc: TypedFunc<i32, i32> = instance
        .get_typed_func(&mut *store, "cleanslate_alloc")
        .expect("alloc");
    let summarise: TypedFunc<(i32, i32), i32> = instance
        .get_typed_func(&mut *store, "summarise")
        .expect("summarise");
    let memory: Memory = instance.get_memory(&mut *store, "memory").expect("memory");
    let ptr = alloc.call(&mut *store, input.len() as i32).expect("alloc") as usize;
    memory.data_mut(&mut *store)[ptr..ptr + input.len()].copy_from_slice(input);
    let record = summarise
        .call(&mut *store, (ptr as i32, input.len() as i32))
        .expect("summarise") as usize;
    let data = memory.data(&*store);
    let word = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
    assert_eq!(word(record), 0, "the guest succeeded");
    let (out, len) = (word(record + 4), word(record + 8));
    data[out..out + len].to_vec()
}
