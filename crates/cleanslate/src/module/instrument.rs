//! The load-time rewrite that makes every piece of instance state reachable
//! from the host.
//!
//! A guest's state lives in memories, globals, tables and passive segments,
//! most of which a module does not export (a Rust guest's `__stack_pointer`
//! is the classic case). Without access, a snapshot cannot capture them and a
//! reset cannot restore them. The rewrite therefore, without touching any
//! existing code or index:
//! - exports every defined memory, table and mutable global under a reserved
//!   name;
//! - exports every function that can become a funcref, so table contents can
//!   be recorded as function indices and rebuilt in another instance;
//! - removes the start section and exports the start function instead, so a
//!   fresh instance can be created *without* re-running initialisation;
//! - where code can drop passive segments, adds tiny helper functions that
//!   drop a segment (to re-create a snapshot's dropped state) and that probe
//!   whether one is dropped (by a zero-length `memory.init`/`table.init` at
//!   the segment's end, which traps only on a dropped segment).
//!
//! - moves the active data segments of each defined memory whose data all
//!   sits at constant offsets inside its initial size out of the module:
//!   each becomes an empty passive segment (which behaves exactly as the
//!   dropped segment an active one is after instantiation), and its bytes
//!   go into the memory's initial image, which instantiation maps
//!   copy-on-write (instance/factory.rs) instead of the engine copying them.
//!
//! Everything else is appended: existing sections are copied byte for byte
//! and only vector sections gain entries at their end, so no index shifts.

use wasm_encoder::{Encode, Function, RawSection};
use wasmparser::{Parser, Payload};

use super::layout::{MemoryLayout, ModuleLayout, PassiveSegment, TableLayout};
use crate::error::Error;

/// The reserved export names the rewrite added, by what they reach.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Hooks {
    /// Export name per defined memory, in index order.
    pub memories: Vec<String>,
    /// Export name per defined table, in index order.
    pub tables: Vec<String>,
    /// (global index, export name) for every mutable defined global.
    pub globals: Vec<(u32, String)>,
    /// (function index, export name) for every function that can be a funcref.
    pub functions: Vec<(u32, String)>,
    /// The start function, exported instead of run at instantiation.
    pub start: Option<String>,
    pub data_segments: Vec<SegmentHooks>,
    pub element_segments: Vec<SegmentHooks>,
    /// Per defined memory, in index order: whether its active data segments
    /// were moved into its initial image, which instantiation must then
    /// place itself.
    pub memory_images: Vec<bool>,
    /// Every export name the rewrite added (never callable by users).
    pub reserved: std::collections::BTreeSet<String>,
}

/// Helpers for one passive segment.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct SegmentHooks {
    pub segment: u32,
    /// Drops the segment.
    pub drop: String,
    /// Traps if and only if the segment is dropped. `None` when no
    /// instruction could observe the difference (no memory or matching table,
    /// or an empty segment), so the state needs no tracking.
    pub probe: Option<String>,
}

/// Rewrite `wasm` (already validated into `layout`) and return the new bytes
/// with the names of what was added.
pub(crate) fn instrument(wasm: &[u8], layout: &ModuleLayout) -> Result<(Vec<u8>, Hooks), Error> {
    let prefix = reserved_prefix(layout);
    let mut hooks = Hooks::default();
    let mut exports: Vec<(String, wasm_encoder::ExportKind, u32)> = Vec::new();
    let mut add_export = |hooks: &mut Hooks, name: String, kind, index| {
        hooks.reserved.insert(name.clone());
        exports.push((name, kind, index));
    };

    for memory in &layout.memories {
        let name = format!("{prefix}memory:{}", memory.index);
        add_export(
            &mut hooks,
            name.clone(),
            wasm_encoder::ExportKind::Memory,
            memory.index,
        );
        hooks.memories.push(name);
    }
    for table in &layout.tables {
        let name = format!("{prefix}table:{}", table.index);
        add_export(
            &mut hooks,
            name.clone(),
            wasm_encoder::ExportKind::Table,
            table.index,
        );
        hooks.tables.push(name);
    }
    for global in layout.globals.iter().filter(|g| g.mutable) {
        let name = format!("{prefix}global:{}", global.index);
        add_export(
            &mut hooks,
            name.clone(),
            wasm_encoder::ExportKind::Global,
            global.index,
        );
        hooks.globals.push((global.index, name));
    }
    // Funcrefs only matter where they can be stored: in tables or globals.
    let funcref_globals = layout
        .globals
        .iter()
        .any(|g| g.mutable && g.ty == crate::value::ValType::FuncRef);
    if !layout.tables.is_empty() || funcref_globals {
        for &func in &layout.referenceable_functions {
            let name = format!("{prefix}func:{func}");
            add_export(
                &mut hooks,
                name.clone(),
                wasm_encoder::ExportKind::Func,
                func,
            );
            hooks.functions.push((func, name));
        }
    }
    if let Some(start) = layout.start {
        let name = format!("{prefix}start");
        add_export(
            &mut hooks,
            name.clone(),
            wasm_encoder::ExportKind::Func,
            start,
        );
        hooks.start = Some(name);
    }

    // Helper functions, all of type [] -> [], appended after every existing
    // function and type.
    let helper_type = layout.type_count;
    let mut helper_bodies: Vec<Vec<u8>> = Vec::new();
    let mut next_function = layout.imported_functions() + layout.defined_functions;
    let mut add_helper = |hooks: &mut Hooks, name: String, body: Function| {
        let index = next_function;
        next_function += 1;
        let mut bytes = Vec::new();
        body.encode(&mut bytes);
        helper_bodies.push(bytes);
        add_export(hooks, name, wasm_encoder::ExportKind::Func, index);
    };
    if layout.mutations.data_drop {
        let memory = layout.memories.iter().find(|m| m.index == 0);
        for segment in &layout.passive_data {
            let drop = format!("{prefix}data_drop:{}", segment.index);
            let mut f = Function::new([]);
            f.instructions().data_drop(segment.index).end();
            add_helper(&mut hooks, drop.clone(), f);
            let probe = match memory {
                Some(memory) if segment.len > 0 => {
                    let name = format!("{prefix}data_probe:{}", segment.index);
                    let mut f = Function::new([]);
                    let mut ins = f.instructions();
                    if memory.memory64 {
                        ins.i64_const(0);
                    } else {
                        ins.i32_const(0);
                    }
                    ins.i32_const(segment.len as i32)
                        .i32_const(0)
                        .memory_init(0, segment.index)
                        .end();
                    add_helper(&mut hooks, name.clone(), f);
                    Some(name)
                }
                _ => None,
            };
            hooks.data_segments.push(SegmentHooks {
                segment: segment.index,
                drop,
                probe,
            });
        }
    }
    if layout.mutations.elem_drop {
        for segment in &layout.passive_elements {
            let drop = format!("{prefix}elem_drop:{}", segment.index);
            let mut f = Function::new([]);
            f.instructions().elem_drop(segment.index).end();
            add_helper(&mut hooks, drop.clone(), f);
            // Any reference type: a dropped externref or exnref segment is
            // as observable (`table.init` traps) as a funcref one.
            let probe = match probe_table(layout, segment) {
                Some(table) if segment.len > 0 => {
                    let name = format!("{prefix}elem_probe:{}", segment.index);
                    let mut f = Function::new([]);
                    let mut ins = f.instructions();
                    if table.table64 {
                        ins.i64_const(0);
                    } else {
                        ins.i32_const(0);
                    }
                    ins.i32_const(segment.len as i32)
                        .i32_const(0)
                        .table_init(table.index, segment.index)
                        .end();
                    add_helper(&mut hooks, name.clone(), f);
                    Some(name)
                }
                _ => None,
            };
            hooks.element_segments.push(SegmentHooks {
                segment: segment.index,
                drop,
                probe,
            });
        }
    }

    let mut additions = Additions::default();
    if !helper_bodies.is_empty() {
        // One new type, `(func)`: 0x60, zero params, zero results.
        additions.push(TYPE, vec![vec![0x60, 0x00, 0x00]]);
        let mut decl = Vec::new();
        helper_type.encode(&mut decl);
        additions.push(FUNCTION, vec![decl; helper_bodies.len()]);
        additions.push(CODE, helper_bodies);
    }
    let export_entries = exports
        .iter()
        .map(|(name, kind, index)| {
            let mut bytes = Vec::new();
            name.as_str().encode(&mut bytes);
            kind.encode(&mut bytes);
            index.encode(&mut bytes);
            bytes
        })
        .collect();
    additions.push(EXPORT, export_entries);

    hooks.memory_images = layout.memories.iter().map(takes_image).collect();
    // Data segments name memories in the module's index space, where
    // imported memories come first.
    let imported = layout
        .other_imports
        .iter()
        .filter(|i| i.what == "memory")
        .count() as u32;
    let moved: Vec<u32> = layout
        .memories
        .iter()
        .filter(|m| takes_image(m))
        .map(|m| imported + m.index)
        .collect();
    Ok((rewrite(wasm, additions, &moved)?, hooks))
}

/// Whether a memory's active data segments can move into its initial
/// image: all at constant offsets and inside the memory's initial size.
/// (A segment out of bounds must keep failing instantiation, so such a
/// memory keeps its segments and the engine applies them.)
fn takes_image(memory: &MemoryLayout) -> bool {
    memory
        .data_extent
        .is_some_and(|end| end <= memory.initial_bytes)
}

/// The data section with each active segment of a memory in `moved`
/// replaced by an empty passive one; every other segment copied as is.
fn data_section(
    wasm: &[u8],
    reader: wasmparser::DataSectionReader<'_>,
    moved: &[u32],
) -> Result<Vec<u8>, Error> {
    let invalid =
        |e: wasmparser::BinaryReaderError| Error::invalid_module(e.message(), Some(e.offset()));
    let mut data = Vec::new();
    reader.count().encode(&mut data);
    for segment in reader {
        let segment = segment.map_err(invalid)?;
        match segment.kind {
            wasmparser::DataKind::Active { memory_index, .. } if moved.contains(&memory_index) => {
                // Flag 1 (passive), then a vector of no bytes.
                data.extend_from_slice(&[0x01, 0x00]);
            }
            _ => data.extend_from_slice(&wasm[segment.range.clone()]),
        }
    }
    Ok(data)
}

/// A table a zero-length `table.init` of element `segment` validates
/// against: the one the module's own code initialises from it, else any
/// table whose element type accepts the segment's. `None` only when no
/// table can take the segment, so no instruction can observe its drop.
fn probe_table<'a>(layout: &'a ModuleLayout, segment: &PassiveSegment) -> Option<&'a TableLayout> {
    let used = layout
        .mutations
        .segment_tables
        .get(&segment.index)
        .and_then(|t| layout.tables.iter().find(|table| table.index == *t));
    let element = segment.element?;
    used.or_else(|| {
        layout
            .tables
            .iter()
            .find(|table| accepts(table.element, element))
    })
}

/// Whether a table of element type `table` can hold references of type
/// `element`. Without the GC proposal the only subtyping among reference
/// types is non-null into nullable of the same heap type.
fn accepts(table: wasmparser::RefType, element: wasmparser::RefType) -> bool {
    table.heap_type() == element.heap_type() && (table.is_nullable() || !element.is_nullable())
}

/// A prefix that no existing export name starts with.
fn reserved_prefix(layout: &ModuleLayout) -> String {
    let mut prefix = String::from("cleanslate#");
    while layout.export_names.iter().any(|n| n.starts_with(&prefix)) {
        prefix.push('#');
    }
    prefix
}

const TYPE: u8 = 1;
const FUNCTION: u8 = 3;
const EXPORT: u8 = 7;
const START: u8 = 8;
const CODE: u8 = 10;

/// Entries to append, per vector section id.
#[derive(Default)]
struct Additions {
    pending: Vec<(u8, Vec<Vec<u8>>)>,
}

impl Additions {
    fn push(&mut self, id: u8, entries: Vec<Vec<u8>>) {
        if !entries.is_empty() {
            self.pending.push((id, entries));
        }
    }

    fn take(&mut self, id: u8) -> Option<Vec<Vec<u8>>> {
        let at = self.pending.iter().position(|(i, _)| *i == id)?;
        Some(self.pending.remove(at).1)
    }

    /// Remove and return the additions whose section must come before a
    /// section of order `rank` (they have no section of their own to join).
    fn take_before(&mut self, rank: u8) -> Vec<(u8, Vec<Vec<u8>>)> {
        let mut out: Vec<_> = Vec::new();
        self.pending.retain(|(id, entries)| {
            if section_rank(*id) < rank {
                out.push((*id, entries.clone()));
                false
            } else {
                true
            }
        });
        out.sort_by_key(|(id, _)| section_rank(*id));
        out
    }
}

/// The position of a known section in the module's required order.
fn section_rank(id: u8) -> u8 {
    match id {
        1..=5 => id,     // type, import, function, table, memory
        13 => 6,         // tag
        6..=9 => id + 1, // global, export, start, element
        12 => 11,        // data count
        10 => 12,        // code
        11 => 13,        // data
        _ => 0,
    }
}

fn rewrite(wasm: &[u8], mut additions: Additions, moved: &[u32]) -> Result<Vec<u8>, Error> {
    let mut out = wasm_encoder::Module::new();
    let emit_new = |out: &mut wasm_encoder::Module, id: u8, entries: &[Vec<u8>]| {
        let mut data = Vec::new();
        (entries.len() as u32).encode(&mut data);
        for entry in entries {
            data.extend_from_slice(entry);
        }
        out.section(&RawSection { id, data: &data });
    };
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| Error::invalid_module(e.message(), Some(e.offset())))?;
        if matches!(payload, Payload::End(_)) {
            break;
        }
        let Some((id, range)) = payload.as_section() else {
            continue;
        };
        let contents = &wasm[range];
        if id != 0 {
            for (missing, entries) in additions.take_before(section_rank(id)) {
                emit_new(&mut out, missing, &entries);
            }
        }
        if id == START {
            continue;
        }
        if let Payload::DataSection(reader) = payload
            && !moved.is_empty()
        {
            let data = data_section(wasm, reader, moved)?;
            out.section(&RawSection { id, data: &data });
            continue;
        }
        match additions.take(id) {
            Some(extra) => {
                let (count, rest) = split_count(contents)?;
                let mut data = Vec::new();
                (count + extra.len() as u32).encode(&mut data);
                data.extend_from_slice(rest);
                for entry in &extra {
                    data.extend_from_slice(entry);
                }
                out.section(&RawSection { id, data: &data });
            }
            None => {
                out.section(&RawSection { id, data: contents });
            }
        }
    }
    for (missing, entries) in additions.take_before(u8::MAX) {
        emit_new(&mut out, missing, &entries);
    }
    Ok(out.finish())
}

/// Split a vector section's contents into its element count and the bytes
/// of its elements.
fn split_count(contents: &[u8]) -> Result<(u32, &[u8]), Error> {
    let mut reader = wasmparser::BinaryReader::new(contents, 0);
    let count = reader
        .read_var_u32()
        .map_err(|e| Error::invalid_module(e.message(), Some(e.offset())))?;
    Ok((count, &contents[reader.original_position()..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::layout::analyse;

    fn rewritten(wat: &str) -> (Vec<u8>, Hooks, ModuleLayout) {
        let wasm = wat::parse_str(wat).unwrap();
        let layout = analyse(&wasm).unwrap();
        let (bytes, hooks) = instrument(&wasm, &layout).unwrap();
        // The result must itself be valid and keep every original export.
        let again = analyse(&bytes).unwrap();
        for export in &layout.exports {
            assert!(
                again.function(&export.name).is_some(),
                "lost export {}",
                export.name
            );
        }
        (bytes, hooks, again)
    }

    #[test]
    fn exports_hidden_state_and_strips_start() {
        let (_, hooks, after) = rewritten(
            r#"(module
                (memory 1)
                (table 1 funcref)
                (global $sp (mut i32) (i32.const 1024))
                (global $k i32 (i32.const 5))
                (elem (i32.const 0) $f)
                (func $f (export "f") (result i32) (global.get $sp))
                (func $init (global.set $sp (i32.const 2048)))
                (start $init))"#,
        );
        assert_eq!(hooks.memories.len(), 1);
        assert_eq!(hooks.tables.len(), 1);
        assert_eq!(hooks.globals.len(), 1, "only the mutable global");
        assert_eq!(
            hooks.functions.iter().map(|f| f.0).collect::<Vec<_>>(),
            vec![0]
        );
        assert!(hooks.start.is_some());
        assert_eq!(after.start, None);
    }

    #[test]
    fn adds_drop_and_probe_helpers_to_a_module_without_code_sections_order_issues() {
        let (_, hooks, after) = rewritten(
            r#"(module
                (memory 1)
                (table 2 funcref)
                (data $d "hello")
                (elem $e func $g)
                (func $g)
                (func (export "drop_both") (data.drop $d) (elem.drop $e)))"#,
        );
        assert_eq!(hooks.data_segments.len(), 1);
        assert!(hooks.data_segments[0].probe.is_some());
        assert_eq!(hooks.element_segments.len(), 1);
        assert!(hooks.element_segments[0].probe.is_some());
        // 2 original functions + 4 helpers.
        assert_eq!(after.defined_functions, 6);
    }

    #[test]
    fn probes_element_segments_of_every_reference_type() {
        let (_, hooks, _) = rewritten(
            r#"(module
                (table $f 1 funcref)
                (table $x 4 externref)
                (table $n i64 4 exnref)
                (elem $ext externref (ref.null extern) (ref.null extern))
                (elem $exn exnref (ref.null exn))
                (elem $fun func $g)
                (elem $orphan externref)
                (func $g)
                (func (export "drop") (elem.drop $ext) (elem.drop $exn) (elem.drop $fun)))"#,
        );
        let probed: Vec<(u32, bool)> = hooks
            .element_segments
            .iter()
            .map(|s| (s.segment, s.probe.is_some()))
            .collect();
        // The empty segment's drop is unobservable (a zero-length init of
        // an empty segment succeeds either way).
        assert_eq!(probed, [(0, true), (1, true), (2, true), (3, false)]);
    }

    #[test]
    fn a_segment_no_table_accepts_needs_no_probe() {
        let (_, hooks, _) = rewritten(
            r#"(module
                (table 1 funcref)
                (elem $ext externref (ref.null extern))
                (func (export "drop") (elem.drop $ext)))"#,
        );
        assert!(hooks.element_segments[0].probe.is_none());
    }

    #[test]
    fn inserts_missing_sections_in_order() {
        // No type, function, export or code section at all.
        let (_, hooks, _) = rewritten("(module (memory 1) (global (mut i64) (i64.const 0)))");
        assert_eq!(hooks.memories.len(), 1);
        assert_eq!(hooks.globals.len(), 1);
    }

    #[test]
    fn reserved_names_never_collide_with_user_exports() {
        let (_, hooks, _) = rewritten(r#"(module (memory (export "cleanslate#memory:0") 1))"#);
        assert_eq!(hooks.memories[0], "cleanslate##memory:0");
    }
}
