//! The benchmark guests: a memory of a given size whose first 16 MiB are
//! initialised by a data segment, and `dirty(k, stride)`, which writes one
//! byte into each of `k` host pages spread `stride` pages apart; and the
//! growing guest, the same memory able to grow, whose `grow(n)` grows it by
//! `n` wasm pages and writes one byte into each host page of the new part.

use wasm_encoder::{
    CodeSection, ConstExpr, DataSection, ExportKind, ExportSection, Function, FunctionSection,
    Instruction, MemArg, MemorySection, MemoryType, Module, TypeSection, ValType,
};

pub const HOST_PAGE: u64 = 4096;
pub const WASM_PAGE: u64 = 65536;
/// How much of the memory the data segment initialises.
pub const INITIALISED: u64 = 16 << 20;

/// A module with `memory_bytes` of memory (fixed size).
pub fn module(memory_bytes: u64) -> Vec<u8> {
    let pages = memory_bytes / WASM_PAGE;
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32, ValType::I32], []);
    types.ty().function([], []);
    let mut functions = FunctionSection::new();
    functions.function(0); // dirty
    functions.function(1); // noop
    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum: pages,
        maximum: Some(pages),
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    let mut exports = ExportSection::new();
    exports.export("dirty", ExportKind::Func, 0);
    exports.export("noop", ExportKind::Func, 1);
    exports.export("memory", ExportKind::Memory, 0);

    // for (i = 0; i < k; i++) mem[(i * stride) * 4096 + 8] = 0xab
    let mut dirty = Function::new([(1, ValType::I32)]);
    let (k, stride, i) = (0, 1, 2);
    let store = MemArg {
        offset: 8,
        align: 0,
        memory_index: 0,
    };
    dirty
        .instructions()
        .block(wasm_encoder::BlockType::Empty)
        .loop_(wasm_encoder::BlockType::Empty)
        .local_get(i)
        .local_get(k)
        .i32_ge_u()
        .br_if(1)
        .local_get(i)
        .local_get(stride)
        .i32_mul()
        .i32_const(HOST_PAGE as i32)
        .i32_mul()
        .i32_const(0xab)
        .i32_store8(store)
        .local_get(i)
        .i32_const(1)
        .i32_add()
        .local_set(i)
        .br(0)
        .end()
        .end()
        .end();
    let mut noop = Function::new([]);
    noop.instruction(&Instruction::End);
    let mut code = CodeSection::new();
    code.function(&dirty);
    code.function(&noop);

    assemble(&types, &functions, &memories, &exports, &code, memory_bytes)
}

/// A guest's sections in order, with the data segment every guest has.
fn assemble(
    types: &TypeSection,
    functions: &FunctionSection,
    memories: &MemorySection,
    exports: &ExportSection,
    code: &CodeSection,
    memory_bytes: u64,
) -> Vec<u8> {
    let mut module = Module::new();
    module
        .section(types)
        .section(functions)
        .section(memories)
        .section(exports)
        .section(code)
        .section(&data(memory_bytes));
    module.finish()
}

/// The data segment: the first 16 MiB (or all) of the memory, non-zero.
fn data(memory_bytes: u64) -> DataSection {
    let initialised = INITIALISED.min(memory_bytes) as usize;
    let pattern: Vec<u8> = (0..initialised).map(|b| (b % 251) as u8 | 1).collect();
    let mut data = DataSection::new();
    data.active(0, &ConstExpr::i32_const(0), pattern);
    data
}

/// A module with `memory_bytes` of memory that may grow by `max_grow` wasm
/// pages, exporting `grow(n)`: `memory.grow(n)` (trapping if it fails),
/// then one byte written at the start of each 4 KiB host page of the grown
/// region, so every new page is touched.
pub fn growing_module(memory_bytes: u64, max_grow: u64) -> Vec<u8> {
    let pages = memory_bytes / WASM_PAGE;
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], []);
    let mut functions = FunctionSection::new();
    functions.function(0); // grow
    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum: pages,
        maximum: Some(pages + max_grow),
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    let mut exports = ExportSection::new();
    exports.export("grow", ExportKind::Func, 0);
    exports.export("memory", ExportKind::Memory, 0);

    // old = memory.grow(n); if old == -1 trap;
    // for (a = old * 65536; a < (old + n) * 65536; a += 4096) mem[a] = 0xcd
    let (n, at, end) = (0, 1, 2);
    let mut grow = Function::new([(2, ValType::I32)]);
    let store = MemArg {
        offset: 0,
        align: 0,
        memory_index: 0,
    };
    grow.instructions()
        .local_get(n)
        .memory_grow(0)
        .local_tee(at)
        .i32_const(-1)
        .i32_eq()
        .if_(wasm_encoder::BlockType::Empty)
        .unreachable()
        .end()
        .local_get(at)
        .local_get(n)
        .i32_add()
        .i32_const(WASM_PAGE as i32)
        .i32_mul()
        .local_set(end)
        .local_get(at)
        .i32_const(WASM_PAGE as i32)
        .i32_mul()
        .local_set(at)
        .block(wasm_encoder::BlockType::Empty)
        .loop_(wasm_encoder::BlockType::Empty)
        .local_get(at)
        .local_get(end)
        .i32_ge_u()
        .br_if(1)
        .local_get(at)
        .i32_const(0xcd)
        .i32_store8(store)
        .local_get(at)
        .i32_const(HOST_PAGE as i32)
        .i32_add()
        .local_set(at)
        .br(0)
        .end()
        .end()
        .end();
    let mut code = CodeSection::new();
    code.function(&grow);

    assemble(&types, &functions, &memories, &exports, &code, memory_bytes)
}

/// The stride that spreads `k` pages over the whole memory.
pub fn stride(memory_bytes: u64, k: u64) -> u64 {
    (memory_bytes / HOST_PAGE)
        .checked_div(k)
        .unwrap_or(1)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::{Engine, Instance, Store, TypedFunc};

    fn instance(wasm: &[u8]) -> (Store<()>, Instance) {
        let engine = Engine::default();
        let module = wasmtime::Module::new(&engine, wasm).unwrap();
        let mut store = Store::new(&engine, ());
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        (store, instance)
    }

    #[test]
    fn grow_adds_n_pages_and_writes_each_new_host_page() {
        let bytes = 1 << 20;
        let (mut store, instance) = instance(&growing_module(bytes, 16));
        let grow: TypedFunc<i32, ()> = instance.get_typed_func(&mut store, "grow").unwrap();
        let memory = instance.get_memory(&mut store, "memory").unwrap();
        grow.call(&mut store, 3).unwrap();
        let data = memory.data(&store);
        assert_eq!(data.len() as u64, bytes + 3 * WASM_PAGE);
        let grown = &data[bytes as usize..];
        for (i, page) in grown.chunks(HOST_PAGE as usize).enumerate() {
            assert_eq!(page[0], 0xcd, "host page {i} of the grown region");
            assert!(page[1..].iter().all(|&b| b == 0));
        }
        assert_eq!(grown.len() as u64 / HOST_PAGE, 3 * WASM_PAGE / HOST_PAGE);
        // The data segment is still there, untouched.
        assert_eq!(data[5], 5 | 1);
    }

    #[test]
    fn grow_past_the_maximum_traps() {
        let (mut store, instance) = instance(&growing_module(1 << 20, 16));
        let grow: TypedFunc<i32, ()> = instance.get_typed_func(&mut store, "grow").unwrap();
        grow.call(&mut store, 16).unwrap();
        assert!(grow.call(&mut store, 1).is_err());
    }
}
