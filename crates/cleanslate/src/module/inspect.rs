//! What a module holds and what a reset of it must cover, for tools
//! (`cleanslate inspect`) and embedders deciding how to run it.

use crate::module::Module;
use crate::value::ValType;

/// The import module name of WASI preview 1.
pub(crate) const WASI_PREVIEW1: &str = "wasi_snapshot_preview1";

/// Whether `module` (an import's module name) is WASI preview 1.
pub(crate) fn is_wasi_module(module: &str) -> bool {
    module == WASI_PREVIEW1
}

/// A memory the module defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryInfo {
    /// Size at instantiation, in bytes.
    pub initial_bytes: u64,
    /// The declared maximum, in bytes (the sandbox's memory limit applies
    /// on top of it).
    pub maximum_bytes: Option<u64>,
    /// A 64-bit memory (memory64).
    pub memory64: bool,
    /// How far active data segments initialise it, in bytes, when known.
    pub data_bytes: Option<u64>,
}

/// A table the module defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableInfo {
    /// Elements at instantiation.
    pub initial_elements: u64,
    /// The declared maximum.
    pub maximum_elements: Option<u64>,
    /// Holds function references.
    pub funcref: bool,
}

/// A global the module defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalInfo {
    /// Its type.
    pub ty: ValType,
    /// Whether code can change it (every mutable global is restored).
    pub mutable: bool,
}

impl Module {
    /// The memories the module defines.
    pub fn memories(&self) -> Vec<MemoryInfo> {
        self.inner
            .layout
            .memories
            .iter()
            .map(|m| MemoryInfo {
                initial_bytes: m.initial_bytes,
                maximum_bytes: m.maximum_bytes,
                memory64: m.memory64,
                data_bytes: m.data_extent,
            })
            .collect()
    }

    /// The tables the module defines.
    pub fn tables(&self) -> Vec<TableInfo> {
        self.inner
            .layout
            .tables
            .iter()
            .map(|t| TableInfo {
                initial_elements: t.initial_elements,
                maximum_elements: t.maximum_elements,
                funcref: t.funcref,
            })
            .collect()
    }

    /// The globals the module defines.
    pub fn globals(&self) -> Vec<GlobalInfo> {
        self.inner
            .layout
            .globals
            .iter()
            .map(|g| GlobalInfo {
                ty: g.ty,
                mutable: g.mutable,
            })
            .collect()
    }

    /// The WebAssembly proposals (beyond 1.0) the module uses, by their
    /// usual names, e.g. `"bulk-memory"`, `"simd"`, `"exception-handling"`.
    /// Validates the module once per proposal Cleanslate accepts, so it
    /// costs several validations of the module.
    ///
    /// ```
    /// # let runtime = cleanslate::Runtime::new()?;
    /// let module = runtime.load_bytes(r#"(module
    ///     (memory 1)
    ///     (func (export "fill") (memory.fill (i32.const 0) (i32.const 0) (i32.const 8))))"#)?;
    /// assert_eq!(module.proposals(), ["bulk-memory"]);
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    pub fn proposals(&self) -> Vec<&'static str> {
        match self.inner.instrumented() {
            Ok(wasm) => crate::engine::features::proposals_used(wasm),
            Err(_) => Vec::new(),
        }
    }

    /// Whether the module imports WASI preview 1.
    pub fn uses_wasi(&self) -> bool {
        self.inner
            .layout
            .function_imports
            .iter()
            .any(|i| is_wasi_module(&i.module))
    }
}
