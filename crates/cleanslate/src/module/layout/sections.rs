//! Reading a module's sections into its [`ModuleLayout`], one section at a
//! time, in the order the binary holds them.

use wasmparser::{
    ExportSectionReader, ExternalKind, FunctionSectionReader, GlobalSectionReader,
    ImportSectionReader, MemorySectionReader, Payload, TableSectionReader, TypeRef,
    TypeSectionReader,
};

use super::mutations::{self, FunctionEffects};
use super::segments;
use super::{
    ExportedFunction, FunctionImport, GlobalLayout, MemoryLayout, ModuleLayout, OtherImport,
    TableLayout,
};
use crate::value::{Signature, ValType};

/// The layout as far as the sections read so far describe it, and what
/// later sections need from earlier ones.
#[derive(Default)]
pub(super) struct SectionReader {
    layout: ModuleLayout,
    /// Per type index: the signature, for function types.
    func_types: Vec<Option<Signature>>,
    /// Per defined function: its type index.
    defined_function_types: Vec<u32>,
    /// Exported functions (name, function index). Their signatures and the
    /// tables they reach are worked out in [`finish`](Self::finish): by
    /// then the code has been scanned, and validation has vouched for every
    /// index (a section is read before the validator sees it).
    exports: Vec<(String, u32)>,
    /// Per defined function: what its own code does.
    effects: Vec<FunctionEffects>,
}

impl SectionReader {
    /// Take in what `payload` says about the module.
    pub fn read(&mut self, payload: &Payload<'_>) -> wasmparser::Result<()> {
        match payload {
            Payload::TypeSection(reader) => self.types(reader.clone()),
            Payload::ImportSection(reader) => self.imports(reader.clone()),
            Payload::FunctionSection(reader) => self.functions(reader.clone()),
            Payload::TableSection(reader) => self.tables(reader.clone()),
            Payload::MemorySection(reader) => self.memories(reader.clone()),
            Payload::GlobalSection(reader) => self.globals(reader.clone()),
            Payload::ExportSection(reader) => self.exports(reader.clone()),
            Payload::StartSection { func, .. } => {
                self.layout.start = Some(*func);
                Ok(())
            }
            Payload::ElementSection(reader) => {
                segments::read_elements(reader.clone(), &mut self.layout)
            }
            Payload::DataSection(reader) => segments::read_data(reader.clone(), &mut self.layout),
            Payload::CodeSectionEntry(body) => {
                let effects = mutations::scan_body(body, &mut self.layout)?;
                self.effects.push(effects);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The layout of a module whose every payload has been read and
    /// validated.
    pub fn finish(self) -> ModuleLayout {
        let SectionReader {
            mut layout,
            func_types,
            defined_function_types,
            exports,
            effects,
        } = self;
        layout.mutations.export_tables = mutations::export_tables(&layout, &effects, &exports);
        let imported = layout.imported_functions();
        for (name, index) in exports {
            let signature = if index < imported {
                layout.function_imports[index as usize].signature.clone()
            } else {
                let ty = defined_function_types[(index - imported) as usize];
                signature_of(&func_types, ty)
            };
            layout.exports.push(ExportedFunction { name, signature });
        }
        layout
    }

    fn types(&mut self, reader: TypeSectionReader<'_>) -> wasmparser::Result<()> {
        for group in reader {
            for sub in group?.into_types() {
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
                self.func_types.push(sig);
            }
        }
        self.layout.type_count = self.func_types.len() as u32;
        Ok(())
    }

    fn imports(&mut self, reader: ImportSectionReader<'_>) -> wasmparser::Result<()> {
        let layout = &mut self.layout;
        for import in reader.into_imports() {
            let import = import?;
            let what = match import.ty {
                TypeRef::Func(ty) | TypeRef::FuncExact(ty) => {
                    layout.function_imports.push(FunctionImport {
                        module: import.module.to_string(),
                        name: import.name.to_string(),
                        signature: signature_of(&self.func_types, ty),
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
        Ok(())
    }

    fn functions(&mut self, reader: FunctionSectionReader<'_>) -> wasmparser::Result<()> {
        for ty in reader {
            self.defined_function_types.push(ty?);
        }
        self.layout.defined_functions = self.defined_function_types.len() as u32;
        Ok(())
    }

    fn tables(&mut self, reader: TableSectionReader<'_>) -> wasmparser::Result<()> {
        let layout = &mut self.layout;
        for table in reader {
            let table = table?;
            if let wasmparser::TableInit::Expr(init) = &table.init {
                mutations::note_function_references(init, layout)?;
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
        Ok(())
    }

    fn memories(&mut self, reader: MemorySectionReader<'_>) -> wasmparser::Result<()> {
        let memories = &mut self.layout.memories;
        for memory in reader {
            let memory = memory?;
            memories.push(MemoryLayout {
                index: memories.len() as u32,
                memory64: memory.memory64,
                initial_bytes: memory.initial.saturating_mul(page_size(&memory)),
                maximum_bytes: memory.maximum.map(|m| m.saturating_mul(page_size(&memory))),
                data_extent: Some(0),
            });
        }
        Ok(())
    }

    fn globals(&mut self, reader: GlobalSectionReader<'_>) -> wasmparser::Result<()> {
        let layout = &mut self.layout;
        for global in reader {
            let global = global?;
            // A global may start out holding a function no export,
            // element or code names (found by the load_module
            // fuzz target): snapshots must be able to name it.
            mutations::note_function_references(&global.init_expr, layout)?;
            layout.globals.push(GlobalLayout {
                index: layout.globals.len() as u32,
                mutable: global.ty.mutable,
                ty: ValType::from_wasmparser(global.ty.content_type),
            });
        }
        Ok(())
    }

    fn exports(&mut self, reader: ExportSectionReader<'_>) -> wasmparser::Result<()> {
        for export in reader {
            let export = export?;
            self.layout.export_names.insert(export.name.to_string());
            if export.kind == ExternalKind::Func {
                self.exports.push((export.name.to_string(), export.index));
                self.layout.referenceable_functions.insert(export.index);
            }
        }
        Ok(())
    }
}

/// The signature of function type `ty`; a type that is not a function type
/// (which validation refuses where a function's type is needed) reads as
/// `() -> ()`.
fn signature_of(func_types: &[Option<Signature>], ty: u32) -> Signature {
    func_types
        .get(ty as usize)
        .cloned()
        .flatten()
        .unwrap_or_else(|| Signature::new(vec![], vec![]))
}

/// Bytes per page of `memory` (64 KiB unless custom page sizes say otherwise).
fn page_size(memory: &wasmparser::MemoryType) -> u64 {
    1u64 << memory.page_size_log2.unwrap_or(16)
}
