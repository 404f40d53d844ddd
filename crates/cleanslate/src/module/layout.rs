//! What a module contains and what its code can change: the facts a reset
//! and a snapshot are planned from.
//!
//! The scan is static: it reads every function body once at load time and
//! records which kinds of state any instruction could touch. "No instruction
//! can do X" lets a reset skip X entirely with a proof rather than a hope.

use std::collections::{BTreeMap, BTreeSet};

use wasmparser::{
    DataKind, ElementKind, ExternalKind, FuncValidatorAllocations, Operator, Parser, Payload,
    RefType, TypeRef, Validator, WasmFeatures,
};

use crate::error::Error;
use crate::value::{Signature, ValType};

/// A memory defined (not imported) by the module.
#[derive(Clone, Debug)]
pub(crate) struct MemoryLayout {
    /// Index in the module's memory index space.
    pub index: u32,
    pub memory64: bool,
    /// Initial and maximum size in bytes (the maximum as declared, if any).
    pub initial_bytes: u64,
    pub maximum_bytes: Option<u64>,
    /// The end of the last byte active data segments initialise, when every
    /// segment for this memory has a constant offset. Beyond it, a fresh
    /// instance's memory is zero.
    pub data_extent: Option<u64>,
}

/// An active data segment at a constant offset: where it lands and where its
/// bytes are in the module binary.
#[derive(Clone, Debug)]
pub(crate) struct ActiveData {
    /// Index among the module's defined memories.
    pub memory: usize,
    pub offset: u64,
    pub bytes: std::ops::Range<usize>,
}

/// A table defined by the module.
#[derive(Clone, Debug)]
pub(crate) struct TableLayout {
    pub index: u32,
    pub table64: bool,
    /// Holds funcrefs (as opposed to another reference type).
    pub funcref: bool,
    /// The element type (funcref, externref, exnref, ...).
    pub element: RefType,
    pub initial_elements: u64,
    pub maximum_elements: Option<u64>,
}

/// A global defined by the module.
#[derive(Clone, Debug)]
pub(crate) struct GlobalLayout {
    pub index: u32,
    pub mutable: bool,
    pub ty: ValType,
}

/// A function import the host must satisfy.
#[derive(Clone, Debug)]
pub(crate) struct FunctionImport {
    pub module: String,
    pub name: String,
    pub signature: Signature,
}

/// An import of something other than a function. Sandboxes own all their
/// state, so these can never be satisfied.
#[derive(Clone, Debug)]
pub(crate) struct OtherImport {
    pub module: String,
    pub name: String,
    pub what: &'static str,
}

/// An exported function a caller may invoke.
#[derive(Clone, Debug)]
pub(crate) struct ExportedFunction {
    pub name: String,
    pub signature: Signature,
}

/// A passive segment, which `data.drop`/`elem.drop` can drop.
#[derive(Clone, Debug)]
pub(crate) struct PassiveSegment {
    /// Index in the data or element segment index space.
    pub index: u32,
    /// Length in bytes (data) or elements (element segments).
    pub len: u32,
    /// For element segments: the element type; `None` for data segments.
    pub element: Option<RefType>,
}

/// Which kinds of state some instruction in the module can change.
#[derive(Clone, Debug, Default)]
pub(crate) struct Mutations {
    /// Indices of globals targeted by `global.set`.
    pub globals_set: BTreeSet<u32>,
    pub memory_grow: bool,
    pub data_drop: bool,
    pub elem_drop: bool,
    /// `table.set`, `table.grow`, `table.fill`, `table.copy` or `table.init`.
    pub table_write: bool,
    /// Indices of the tables those instructions can change (the destination
    /// of `table.copy`; its source is only read). A table outside this set
    /// keeps its instantiation contents for ever.
    pub tables_written: BTreeSet<u32>,
    /// Element segment -> a table some `table.init` copies it into: a table
    /// that certainly accepts the segment's element type.
    pub segment_tables: BTreeMap<u32, u32>,
    /// Per exported function: the tables a call of it can write, through
    /// its own code and everything it can call (an indirect call may reach
    /// any function that can become a funcref; a host function may call
    /// the guest's allocator, whose tables are included everywhere). An
    /// export missing here may write any table `tables_written` names.
    pub export_tables: BTreeMap<String, BTreeSet<u32>>,
}

/// What one defined function's own code does, for the call-graph closure.
#[derive(Debug, Default)]
struct FunctionEffects {
    tables: BTreeSet<u32>,
    calls: BTreeSet<u32>,
    /// `call_indirect`, `call_ref` or their tail-call forms.
    indirect: bool,
}

/// Everything the sandbox needs to know about a module's shape.
#[derive(Clone, Debug, Default)]
pub(crate) struct ModuleLayout {
    /// Number of types in the type index space (not rec groups).
    pub type_count: u32,
    pub function_imports: Vec<FunctionImport>,
    pub other_imports: Vec<OtherImport>,
    /// Number of functions defined in the module (not imported).
    pub defined_functions: u32,
    pub memories: Vec<MemoryLayout>,
    pub tables: Vec<TableLayout>,
    pub globals: Vec<GlobalLayout>,
    pub exports: Vec<ExportedFunction>,
    /// All export names (of any kind), to avoid collisions when adding ours.
    pub export_names: BTreeSet<String>,
    pub start: Option<u32>,
    pub passive_data: Vec<PassiveSegment>,
    /// Active data segments with constant offsets, in order.
    pub active_data: Vec<ActiveData>,
    pub passive_elements: Vec<PassiveSegment>,
    /// Functions that can become funcref values: those named in element
    /// segments or by `ref.func`, or exported.
    pub referenceable_functions: BTreeSet<u32>,
    pub mutations: Mutations,
}

impl ModuleLayout {
    /// Number of imported functions, which come first in the function space.
    pub fn imported_functions(&self) -> u32 {
        self.function_imports.len() as u32
    }

    /// Whether some instruction can change defined table `defined` (its
    /// position among the module's defined tables).
    pub fn table_writable(&self, defined: usize) -> bool {
        // Instructions index tables imported ones first; a module importing
        // one never builds a sandbox, but stay conservative anyway.
        if self.other_imports.iter().any(|i| i.what == "table") {
            return true;
        }
        self.tables
            .get(defined)
            .is_none_or(|t| self.mutations.tables_written.contains(&t.index))
    }

    pub fn function(&self, name: &str) -> Option<&ExportedFunction> {
        self.exports.iter().find(|f| f.name == name)
    }
}

/// Bytes per page of `memory` (64 KiB unless custom page sizes say otherwise).
fn page_size(memory: &wasmparser::MemoryType) -> u64 {
    1u64 << memory.page_size_log2.unwrap_or(16)
}

/// The WebAssembly features Cleanslate accepts.
pub(crate) fn features() -> WasmFeatures {
    // The standard set that wasmtime supports without a GC heap: what
    // mainstream toolchains emit today.
    let mut f = WasmFeatures::WASM2
        | WasmFeatures::TAIL_CALL
        | WasmFeatures::EXTENDED_CONST
        | WasmFeatures::MULTI_MEMORY
        | WasmFeatures::MEMORY64
        | WasmFeatures::RELAXED_SIMD
        | WasmFeatures::CUSTOM_PAGE_SIZES
        | WasmFeatures::WIDE_ARITHMETIC
        | WasmFeatures::EXCEPTIONS;
    // Reference types are part of WASM2. Of the GC proposal's types only
    // what exception handling needs is accepted: exception objects live
    // while a call throws and catches them; a global or table slot that
    // still holds one after the call is reset to its snapshot's null.
    f.remove(WasmFeatures::GC);
    f
}

/// The proposals beyond WebAssembly 1.0 that Cleanslate accepts, by name,
/// with the feature flags that make them up. (Import and export of mutable
/// globals is left out: the reset's rewrite exports every mutable global,
/// so every such module would seem to use it.)
pub(crate) const PROPOSALS: &[(&str, WasmFeatures)] = &[
    ("sign-extension", WasmFeatures::SIGN_EXTENSION),
    (
        "nontrapping-float-to-int",
        WasmFeatures::SATURATING_FLOAT_TO_INT,
    ),
    ("multi-value", WasmFeatures::MULTI_VALUE),
    ("bulk-memory", WasmFeatures::BULK_MEMORY),
    ("reference-types", WasmFeatures::REFERENCE_TYPES),
    ("simd", WasmFeatures::SIMD),
    ("relaxed-simd", WasmFeatures::RELAXED_SIMD),
    ("tail-call", WasmFeatures::TAIL_CALL),
    ("extended-const", WasmFeatures::EXTENDED_CONST),
    ("multi-memory", WasmFeatures::MULTI_MEMORY),
    ("memory64", WasmFeatures::MEMORY64),
    ("custom-page-sizes", WasmFeatures::CUSTOM_PAGE_SIZES),
    ("wide-arithmetic", WasmFeatures::WIDE_ARITHMETIC),
    ("exception-handling", WasmFeatures::EXCEPTIONS),
];

/// Which of [`PROPOSALS`] `wasm` uses: those without which it does not
/// validate.
pub(crate) fn proposals_used(wasm: &[u8]) -> Vec<&'static str> {
    PROPOSALS
        .iter()
        .filter(|(_, feature)| {
            let mut without = features();
            without.remove(*feature);
            Validator::new_with_features(without)
                .validate_all(wasm)
                .is_err()
        })
        .map(|(name, _)| *name)
        .collect()
}

/// Validate `wasm` and record its layout.
pub(crate) fn analyse(wasm: &[u8]) -> Result<ModuleLayout, Error> {
    let mut validator = Validator::new_with_features(features());
    let mut layout = ModuleLayout::default();
    let mut func_types: Vec<Option<Signature>> = Vec::new();
    let mut defined_function_types: Vec<u32> = Vec::new();
    let mut allocs = FuncValidatorAllocations::default();
    let mut pending_exports: Vec<(String, u32)> = Vec::new();
    let mut effects: Vec<FunctionEffects> = Vec::new();
    let invalid = |e: wasmparser::BinaryReaderError| {
        Error::invalid_module(e.message().to_string(), Some(e.offset()))
    };

    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(invalid)?;
        match &payload {
            Payload::TypeSection(reader) => {
                for group in reader.clone() {
                    for sub in group.map_err(invalid)?.into_types() {
                        let sig = match &sub.composite_type.inner {
                            wasmparser::CompositeInnerType::Func(f) => Some(Signature::new(
                                f.params()
                                    .iter()
                                    .map(|t| ValType::from_wasmparser(*t))
                                    .collect(),
                                f.results()
                                    .iter()
                                    .map(|t| ValType::from_wasmparser(*t))
                                    .collect(),
                            )),
                            _ => None,
                        };
                        func_types.push(sig);
                    }
                }
                layout.type_count = func_types.len() as u32;
            }
            Payload::ImportSection(reader) => {
                for import in reader.clone().into_imports() {
                    let import = import.map_err(invalid)?;
                    let what = match import.ty {
                        TypeRef::Func(ty) | TypeRef::FuncExact(ty) => {
                            let signature = func_types
                                .get(ty as usize)
                                .cloned()
                                .flatten()
                                .unwrap_or_else(|| Signature::new(vec![], vec![]));
                            layout.function_imports.push(FunctionImport {
                                module: import.module.to_string(),
                                name: import.name.to_string(),
                                signature,
                            });
                            continue;
                        }
                        TypeRef::Memory(_) => "memory",
                        TypeRef::Table(_) => "table",
                        TypeRef::Global(_) => "global",
                        TypeRef::Tag(_) => "tag",
                    };
                    layout.other_imports.push(OtherImport {
                        module: import.module.to_string(),
                        name: import.name.to_string(),
                        what,
                    });
                }
            }
            Payload::FunctionSection(reader) => {
                for ty in reader.clone() {
                    defined_function_types.push(ty.map_err(invalid)?);
                }
                layout.defined_functions = defined_function_types.len() as u32;
            }
            Payload::TableSection(reader) => {
                for table in reader.clone() {
                    let table = table.map_err(invalid)?;
                    if let wasmparser::TableInit::Expr(init) = &table.init {
                        note_function_references(init, &mut layout).map_err(invalid)?;
                    }
                    layout.tables.push(TableLayout {
                        index: layout.tables.len() as u32,
                        table64: table.ty.table64,
                        funcref: table.ty.element_type.is_func_ref(),
                        element: table.ty.element_type,
                        initial_elements: table.ty.initial,
                        maximum_elements: table.ty.maximum,
                    });
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader.clone() {
                    let memory = memory.map_err(invalid)?;
                    layout.memories.push(MemoryLayout {
                        index: layout.memories.len() as u32,
                        memory64: memory.memory64,
                        initial_bytes: memory.initial.saturating_mul(page_size(&memory)),
                        maximum_bytes: memory.maximum.map(|m| m.saturating_mul(page_size(&memory))),
                        data_extent: Some(0),
                    });
                }
            }
            Payload::GlobalSection(reader) => {
                for global in reader.clone() {
                    let global = global.map_err(invalid)?;
                    // A global may start out holding a function no export,
                    // element or code names (found by the load_module
                    // fuzz target): snapshots must be able to name it.
                    note_function_references(&global.init_expr, &mut layout).map_err(invalid)?;
                    layout.globals.push(GlobalLayout {
                        index: layout.globals.len() as u32,
                        mutable: global.ty.mutable,
                        ty: ValType::from_wasmparser(global.ty.content_type),
                    });
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader.clone() {
                    let export = export.map_err(invalid)?;
                    layout.export_names.insert(export.name.to_string());
                    if export.kind == ExternalKind::Func {
                        pending_exports.push((export.name.to_string(), export.index));
                        layout.referenceable_functions.insert(export.index);
                    }
                }
            }
            Payload::StartSection { func, .. } => layout.start = Some(*func),
            Payload::ElementSection(reader) => {
                for (index, element) in reader.clone().into_iter().enumerate() {
                    let element = element.map_err(invalid)?;
                    let (len, ty) = match &element.items {
                        wasmparser::ElementItems::Functions(funcs) => {
                            for f in funcs.clone() {
                                layout.referenceable_functions.insert(f.map_err(invalid)?);
                            }
                            (funcs.count(), RefType::FUNCREF)
                        }
                        wasmparser::ElementItems::Expressions(ty, exprs) => {
                            for expr in exprs.clone() {
                                note_function_references(&expr.map_err(invalid)?, &mut layout)
                                    .map_err(invalid)?;
                            }
                            (exprs.count(), *ty)
                        }
                    };
                    if matches!(element.kind, ElementKind::Passive) {
                        layout.passive_elements.push(PassiveSegment {
                            index: index as u32,
                            len,
                            element: Some(ty),
                        });
                    }
                }
            }
            Payload::DataSection(reader) => {
                for (index, data) in reader.clone().into_iter().enumerate() {
                    let data = data.map_err(invalid)?;
                    if let DataKind::Active {
                        memory_index,
                        offset_expr,
                    } = &data.kind
                    {
                        let offset = constant_offset(offset_expr);
                        let imported = layout
                            .other_imports
                            .iter()
                            .filter(|i| i.what == "memory")
                            .count() as u32;
                        let defined = memory_index.checked_sub(imported);
                        if let (Some(defined), Some(offset)) = (defined, offset) {
                            layout.active_data.push(ActiveData {
                                memory: defined as usize,
                                offset,
                                bytes: (data.range.end - data.data.len())..data.range.end,
                            });
                        }
                        if let Some(memory) =
                            defined.and_then(|i| layout.memories.get_mut(i as usize))
                        {
                            memory.data_extent = match (memory.data_extent, offset) {
                                (Some(extent), Some(offset)) => {
                                    Some(extent.max(offset.saturating_add(data.data.len() as u64)))
                                }
                                _ => None,
                            };
                        }
                    }
                    if matches!(data.kind, DataKind::Passive) {
                        layout.passive_data.push(PassiveSegment {
                            index: index as u32,
                            len: data.data.len() as u32,
                            element: None,
                        });
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                effects.push(scan_body(body, &mut layout).map_err(invalid)?);
            }
            _ => {}
        }

        match validator.payload(&payload).map_err(invalid)? {
            wasmparser::ValidPayload::Func(to_validate, body) => {
                let mut func = to_validate.into_validator(std::mem::take(&mut allocs));
                func.validate(&body).map_err(invalid)?;
                allocs = func.into_allocations();
            }
            wasmparser::ValidPayload::End(_) => break,
            _ => {}
        }
    }

    layout.mutations.export_tables = export_tables(&layout, &effects, &pending_exports);
    let imported = layout.imported_functions();
    for (name, index) in pending_exports {
        let signature = if index < imported {
            layout.function_imports[index as usize].signature.clone()
        } else {
            let ty = defined_function_types[(index - imported) as usize];
            func_types
                .get(ty as usize)
                .cloned()
                .flatten()
                .unwrap_or_else(|| Signature::new(vec![], vec![]))
        };
        layout.exports.push(ExportedFunction { name, signature });
    }
    Ok(layout)
}

/// The value of a data segment's offset expression when it is a plain
/// constant (`i32.const` / `i64.const`).
fn constant_offset(expr: &wasmparser::ConstExpr<'_>) -> Option<u64> {
    let mut ops = expr.get_operators_reader();
    let value = match ops.read().ok()? {
        Operator::I32Const { value } => value as u32 as u64,
        Operator::I64Const { value } => value as u64,
        _ => return None,
    };
    matches!(ops.read().ok()?, Operator::End).then_some(value)
}

/// Work allowed for the call-graph closure (edges visited over all
/// exports); a module beyond it gets no per-export sets, so every call
/// checks every writable table.
const CLOSURE_BUDGET: usize = 50_000_000;

/// The tables each export can write (see [`Mutations::export_tables`]).
fn export_tables(
    layout: &ModuleLayout,
    effects: &[FunctionEffects],
    exports: &[(String, u32)],
) -> BTreeMap<String, BTreeSet<u32>> {
    let mut out = BTreeMap::new();
    if layout.mutations.tables_written.is_empty() {
        return out;
    }
    let imported = layout.imported_functions();
    let defined = |f: u32| {
        f.checked_sub(imported)
            .and_then(|i| effects.get(i as usize))
    };
    let mut budget = CLOSURE_BUDGET;
    // Every function reachable from `roots`, depth first; `None` once the
    // budget is spent.
    let mut closure = |roots: &mut dyn Iterator<Item = u32>| -> Option<BTreeSet<u32>> {
        let mut tables = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut stack: Vec<u32> = roots.collect();
        let mut indirect_added = false;
        while let Some(f) = stack.pop() {
            if !seen.insert(f) {
                continue;
            }
            let Some(e) = defined(f) else { continue };
            budget = budget.checked_sub(1 + e.calls.len())?;
            tables.extend(&e.tables);
            stack.extend(&e.calls);
            if e.indirect && !indirect_added {
                indirect_added = true;
                budget = budget.checked_sub(layout.referenceable_functions.len())?;
                stack.extend(&layout.referenceable_functions);
            }
        }
        Some(tables)
    };
    let alloc = exports
        .iter()
        .find(|(name, _)| name == crate::abi::ALLOC_EXPORT)
        .map(|(_, f)| *f);
    for (name, f) in exports {
        let mut roots = std::iter::once(*f).chain(alloc);
        match closure(&mut roots) {
            Some(tables) => {
                out.insert(name.clone(), tables);
            }
            None => return BTreeMap::new(),
        }
    }
    out
}

fn scan_body(
    body: &wasmparser::FunctionBody<'_>,
    layout: &mut ModuleLayout,
) -> wasmparser::Result<FunctionEffects> {
    let mut ops = body.get_operators_reader()?;
    let m = &mut layout.mutations;
    let mut own = FunctionEffects::default();
    while !ops.eof() {
        match ops.read()? {
            Operator::GlobalSet { global_index } => {
                m.globals_set.insert(global_index);
            }
            Operator::MemoryGrow { .. } => m.memory_grow = true,
            Operator::DataDrop { .. } => m.data_drop = true,
            Operator::ElemDrop { .. } => m.elem_drop = true,
            Operator::TableSet { table }
            | Operator::TableGrow { table }
            | Operator::TableFill { table } => {
                m.table_write = true;
                m.tables_written.insert(table);
                own.tables.insert(table);
            }
            Operator::TableCopy { dst_table, .. } => {
                m.table_write = true;
                m.tables_written.insert(dst_table);
                own.tables.insert(dst_table);
            }
            Operator::TableInit { elem_index, table } => {
                m.table_write = true;
                m.tables_written.insert(table);
                m.segment_tables.entry(elem_index).or_insert(table);
                own.tables.insert(table);
            }
            Operator::Call { function_index } | Operator::ReturnCall { function_index } => {
                own.calls.insert(function_index);
            }
            Operator::CallIndirect { .. }
            | Operator::ReturnCallIndirect { .. }
            | Operator::CallRef { .. }
            | Operator::ReturnCallRef { .. } => own.indirect = true,
            Operator::RefFunc { function_index } => {
                layout.referenceable_functions.insert(function_index);
            }
            _ => {}
        }
    }
    Ok(own)
}

/// Record the functions a constant expression takes a reference to.
fn note_function_references(
    expr: &wasmparser::ConstExpr<'_>,
    layout: &mut ModuleLayout,
) -> Result<(), wasmparser::BinaryReaderError> {
    let mut ops = expr.get_operators_reader();
    while !ops.eof() {
        if let Operator::RefFunc { function_index } = ops.read()? {
            layout.referenceable_functions.insert(function_index);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(wat: &str) -> ModuleLayout {
        analyse(&wat::parse_str(wat).unwrap()).unwrap()
    }

    #[test]
    fn records_state_and_what_code_can_change() {
        let l = layout(
            r#"(module
                (import "env" "log" (func $log (param i32)))
                (memory 1 4)
                (table 2 funcref)
                (global $g (mut i32) (i32.const 0))
                (global $c i64 (i64.const 1))
                (data $d "abc")
                (elem $e func $f)
                (func $f (export "f") (param i32) (result i32)
                    (global.set $g (local.get 0))
                    (drop (memory.grow (i32.const 1)))
                    (data.drop $d)
                    (local.get 0)))"#,
        );
        assert_eq!(l.function_imports.len(), 1);
        assert_eq!(l.memories.len(), 1);
        assert_eq!(l.memories[0].data_extent, Some(0), "no active data");
        assert_eq!(l.globals.len(), 2);
        assert!(l.globals[0].mutable && !l.globals[1].mutable);
        assert!(l.mutations.globals_set.contains(&0));
        assert!(l.mutations.memory_grow && l.mutations.data_drop);
        assert!(!l.mutations.elem_drop && !l.mutations.table_write);
        assert_eq!(l.passive_data.len(), 1);
        assert_eq!(l.passive_elements.len(), 1);
        assert!(l.referenceable_functions.contains(&1));
        assert_eq!(
            l.function("f").unwrap().signature.to_string(),
            "(i32) -> i32"
        );
    }

    #[test]
    fn data_extent_is_known_only_for_constant_offsets() {
        let l =
            layout(r#"(module (memory 2) (data (i32.const 100) "abc") (data (i32.const 10) "x"))"#);
        assert_eq!(l.memories[0].data_extent, Some(103));
        let l = layout(r#"(module (memory 1) (data (i32.add (i32.const 1) (i32.const 2)) "abc"))"#);
        assert_eq!(l.memories[0].data_extent, None);
    }

    #[test]
    fn invalid_code_is_reported_with_offset() {
        let wasm = wat::parse_str("(module (func (result i32)))").unwrap();
        let err = analyse(&wasm).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidModule);
        assert!(err.offset().is_some());
    }
}
