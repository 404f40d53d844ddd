//! Segment bookkeeping: which element and data segments are passive (and
//! so can be dropped), where active data lands, and how far into each
//! memory a fresh instance's data reaches.

use wasmparser::{
    DataKind, DataSectionReader, ElementKind, ElementSectionReader, Operator, RefType,
};

use super::mutations::note_function_references;
use super::{ActiveData, ModuleLayout, PassiveSegment};

/// Record the passive element segments, and the functions any segment makes
/// referenceable.
pub(super) fn read_elements(
    reader: ElementSectionReader<'_>,
    layout: &mut ModuleLayout,
) -> wasmparser::Result<()> {
    for (index, element) in reader.into_iter().enumerate() {
        let element = element?;
        let (len, ty) = match &element.items {
            wasmparser::ElementItems::Functions(funcs) => {
                for f in funcs.clone() {
                    layout.referenceable_functions.insert(f?);
                }
                (funcs.count(), RefType::FUNCREF)
            }
            wasmparser::ElementItems::Expressions(ty, exprs) => {
                for expr in exprs.clone() {
                    note_function_references(&expr?, layout)?;
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
    Ok(())
}

/// Record the passive data segments, the active ones at constant offsets,
/// and each defined memory's data extent.
pub(super) fn read_data(
    reader: DataSectionReader<'_>,
    layout: &mut ModuleLayout,
) -> wasmparser::Result<()> {
    for (index, data) in reader.into_iter().enumerate() {
        let data = data?;
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
            if let Some(memory) = defined.and_then(|i| layout.memories.get_mut(i as usize)) {
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
    Ok(())
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
