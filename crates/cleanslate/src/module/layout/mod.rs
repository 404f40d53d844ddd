//! What a module contains and what its code can change: the facts a reset
//! and a snapshot are planned from, and [`analyse`], which validates a
//! module and reads them from it.

mod mutations;
mod sections;
mod segments;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use wasmparser::{FuncValidatorAllocations, Parser, Payload, RefType, ValidPayload, Validator};

use crate::engine::features;
use crate::error::Error;
use crate::value::{Signature, ValType};

/// A memory defined (not imported) by the module.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
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
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct ActiveData {
    /// Index among the module's defined memories.
    pub memory: usize,
    pub offset: u64,
    pub bytes: std::ops::Range<usize>,
}

/// A table defined by the module.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct TableLayout {
    pub index: u32,
    pub table64: bool,
    /// Holds funcrefs (as opposed to another reference type).
    pub funcref: bool,
    /// The element type (funcref, externref, exnref, ...).
    #[serde(with = "crate::module::wire::ref_type")]
    pub element: RefType,
    pub initial_elements: u64,
    pub maximum_elements: Option<u64>,
}

/// A global defined by the module.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct GlobalLayout {
    pub index: u32,
    pub mutable: bool,
    #[serde(with = "crate::module::wire::valtype")]
    pub ty: ValType,
}

/// A function import the host must satisfy.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct FunctionImport {
    pub module: String,
    pub name: String,
    #[serde(with = "crate::module::wire::signature")]
    pub signature: Signature,
}

/// An import of something other than a function. Sandboxes own all their
/// state, so these can never be satisfied.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct OtherImport {
    pub module: String,
    pub name: String,
    pub what: &'static str,
}

/// An exported function a caller may invoke.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct ExportedFunction {
    pub name: String,
    #[serde(with = "crate::module::wire::signature")]
    pub signature: Signature,
}

/// A passive segment, which `data.drop`/`elem.drop` can drop.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct PassiveSegment {
    /// Index in the data or element segment index space.
    pub index: u32,
    /// Length in bytes (data) or elements (element segments).
    pub len: u32,
    /// For element segments: the element type; `None` for data segments.
    #[serde(with = "crate::module::wire::option_ref_type")]
    pub element: Option<RefType>,
}

/// Which kinds of state some instruction in the module can change.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
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

/// Everything the sandbox needs to know about a module's shape.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
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

/// Validate `wasm` and record its layout.
pub(crate) fn analyse(wasm: &[u8]) -> Result<ModuleLayout, Error> {
    let invalid = |e: wasmparser::BinaryReaderError| {
        Error::invalid_module(e.message().to_string(), Some(e.offset()))
    };
    let mut validator = Validator::new_with_features(features::ACCEPTED);
    let mut allocs = FuncValidatorAllocations::default();
    let mut sections = sections::SectionReader::default();
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(invalid)?;
        sections.read(&payload).map_err(invalid)?;
        if validate(&mut validator, &payload, &mut allocs)
            .map_err(invalid)?
            .is_break()
        {
            break;
        }
    }
    Ok(sections.finish())
}

/// Validate one payload, function bodies included; `Break` once the module
/// has ended.
fn validate(
    validator: &mut Validator,
    payload: &Payload<'_>,
    allocs: &mut FuncValidatorAllocations,
) -> wasmparser::Result<ControlFlow<()>> {
    match validator.payload(payload)? {
        ValidPayload::Func(to_validate, body) => {
            // One set of allocations serves every function body in turn.
            let mut func = to_validate.into_validator(std::mem::take(allocs));
            func.validate(&body)?;
            *allocs = func.into_allocations();
        }
        ValidPayload::End(_) => return Ok(ControlFlow::Break(())),
        _ => {}
    }
    Ok(ControlFlow::Continue(()))
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
        assert_eq!(err.kind(), crate::error::ErrorKind::InvalidModule);
        assert!(err.offset().is_some());
    }
}
