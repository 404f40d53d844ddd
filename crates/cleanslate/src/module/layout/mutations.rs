//! The mutation analysis: which globals, tables, memories and segments some
//! instruction can change, and which tables each export can reach.
//!
//! The scan is static: it reads every function body once at load time and
//! records which kinds of state any instruction could touch. "No instruction
//! can do X" lets a reset skip X entirely with a proof rather than a hope.

use std::collections::{BTreeMap, BTreeSet};

use wasmparser::Operator;

use super::ModuleLayout;

/// What one defined function's own code does, for the call-graph closure.
#[derive(Debug, Default)]
pub(super) struct FunctionEffects {
    tables: BTreeSet<u32>,
    calls: BTreeSet<u32>,
    /// `call_indirect`, `call_ref` or their tail-call forms.
    indirect: bool,
}

/// Work allowed for the call-graph closure (edges visited over all
/// exports); a module beyond it gets no per-export sets, so every call
/// checks every writable table.
const CLOSURE_BUDGET: usize = 50_000_000;

/// The tables each export can write (see [`super::Mutations::export_tables`]).
pub(super) fn export_tables(
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

/// What a function body can change, recorded in `layout.mutations`; what it
/// calls and writes itself is returned for the call-graph closure.
pub(super) fn scan_body(
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
pub(super) fn note_function_references(
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
