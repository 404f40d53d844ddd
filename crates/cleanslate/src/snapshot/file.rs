//! Snapshots saved to a file and loaded in another process: the setup a
//! sandbox took seconds to reach (an interpreter started, its libraries
//! imported) is then built once per machine instead of once per process.
//!
//! # Format
//!
//! ```text
//! MAGIC                      16 bytes
//! header length              u64, little endian
//! header                     postcard: Header
//! header digest              BLAKE3 of the header, 32 bytes
//! memory bytes               each memory's populated ranges, in order
//! digest                     BLAKE3 of everything before it, 32 bytes
//! ```
//!
//! The header has a digest of its own so that nothing it says (a memory's
//! length, which sizes an allocation) is used before it is known whole.
//!
//! Only the populated ranges are stored (a memory's untouched pages are
//! zero), so a 64 MiB memory that holds 20 MiB of data takes 20 MiB.
//!
//! # Trust
//!
//! A file is accepted only if its digest matches (no torn or truncated
//! write), it was saved by this version of Cleanslate for a module with the
//! same bytes, and every part of it fits that module: memory sizes within
//! the declared limits and on page boundaries, the mutable globals with
//! their types, table sizes within limits and function references to
//! functions a table can hold, dropped segments that exist. So a restored
//! file gives a state a call of that module could have reached in shape;
//! what the bytes mean to the guest is the guest's business, as with any
//! snapshot.

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::image::{GlobalValue, MemoryImage, SnapshotImage, TableImage};
use super::{ModuleIdentity, Snapshot};
use crate::error::{Error, ErrorKind};
use crate::memory::HOST_PAGE;
use crate::module::{Module, SegmentHooks};
use crate::value::ValType;

const MAGIC: &[u8; 16] = b"cleanslate-snap\x01";
const DIGEST_LEN: usize = 32;
/// Far more than any real header (a table of a million elements is about
/// 3 MB, 8 MB decoded); a larger length is a damaged file, not an
/// allocation to try.
const MAX_HEADER: u64 = 64 << 20;

/// Everything but the memory bytes.
#[derive(Serialize, Deserialize)]
struct Header {
    /// The Cleanslate version that wrote the file: the rewrite's hooks,
    /// which the layout of globals and tables follows, may change between
    /// versions.
    version: String,
    /// The module's digest ([`crate::module::ModuleInner::digest`]).
    module: [u8; DIGEST_LEN],
    memories: Vec<MemoryHeader>,
    globals: Vec<(u32, GlobalValue)>,
    tables: Vec<Vec<Option<u32>>>,
    dropped_data: Vec<u32>,
    dropped_elements: Vec<u32>,
}

#[derive(Serialize, Deserialize)]
struct MemoryHeader {
    len: u64,
    /// Where the bytes may be non-zero; the file holds exactly these.
    populated: Vec<(u64, u64)>,
}

impl Snapshot {
    /// Save the snapshot to `path`, for [`Snapshot::load`] in this or
    /// another process. The file is written next to `path` and renamed into
    /// place, so a reader sees the old file or the whole new one; it is
    /// readable by this user only (memory images hold whatever the guest
    /// held: environment variables, data, keys).
    ///
    /// ```
    /// use cleanslate::{Runtime, Sandbox, Snapshot};
    /// let runtime = Runtime::new()?;
    /// let module = runtime.load_bytes(r#"(module (global $n (export "n") (mut i32) (i32.const 0))
    ///     (func (export "bump") (result i32)
    ///         (global.set $n (i32.add (global.get $n) (i32.const 1))) (global.get $n)))"#)?;
    /// let mut sandbox = Sandbox::builder(&module).build()?;
    /// let bumped = {
    ///     let mut session = sandbox.session();
    ///     session.call("bump", &[])?;
    ///     session.snapshot()?
    /// };
    /// let dir = std::env::temp_dir().join(format!("cleanslate-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// bumped.save(dir.join("bumped.snapshot"))?;
    ///
    /// // Later, perhaps in another process, with the same module:
    /// let loaded = Snapshot::load(&module, dir.join("bumped.snapshot"))?;
    /// assert_eq!(loaded, bumped);
    /// sandbox.restore(&loaded)?;
    /// assert_eq!(sandbox.call("bump", &[])?, [cleanslate::Val::I32(2)]);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidSnapshot`] when the file cannot be written (the
    /// message has the system's reason), or when the snapshot's module has
    /// been dropped (its identity is gone with it).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        let path = path.as_ref();
        let failed = |e: io::Error| {
            Error::new(
                ErrorKind::InvalidSnapshot,
                format!("cannot save the snapshot to {}: {e}", path.display()),
            )
        };
        crate::atomic_file::write_atomically(path, |out| {
            self.write_to(out)
                .map_err(|e| io::Error::other(e.message().to_string()))
        })
        .map_err(failed)
    }

    /// Load a snapshot [`save`](Snapshot::save)d from a sandbox of a module
    /// with the same bytes as `module`, to [`restore`](crate::Sandbox::restore)
    /// in sandboxes of `module`. See [`Snapshot::save`] for an example.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidSnapshot`] when the file cannot be read, is not a
    /// snapshot, is damaged or truncated, was saved by another version of
    /// Cleanslate, belongs to another module, or does not fit `module`.
    /// Take the snapshot again then.
    pub fn load(module: &Module, path: impl AsRef<Path>) -> Result<Snapshot, Error> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| {
            Error::new(
                ErrorKind::InvalidSnapshot,
                format!("cannot read the snapshot {}: {e}", path.display()),
            )
        })?;
        Snapshot::read_from(module, io::BufReader::with_capacity(1 << 20, file)).map_err(|e| {
            Error::new(
                ErrorKind::InvalidSnapshot,
                format!("{}: {}", path.display(), e.message()),
            )
        })
    }

    /// Write the snapshot in the format [`Snapshot::read_from`] reads (the
    /// one [`save`](Snapshot::save) writes to a file).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidSnapshot`] when `out` fails, or when the
    /// snapshot's module has been dropped.
    pub fn write_to(&self, out: impl Write) -> Result<(), Error> {
        let Some(module) = self.module_id.module() else {
            return Err(Error::new(
                ErrorKind::InvalidSnapshot,
                "the snapshot's module has been dropped: keep the Module to save its snapshots",
            ));
        };
        let image = &*self.image;
        let header = Header {
            version: env!("CARGO_PKG_VERSION").to_string(),
            module: module.digest,
            memories: image
                .memories
                .iter()
                .map(|m| MemoryHeader {
                    len: m.bytes.len() as u64,
                    populated: m
                        .populated
                        .iter()
                        .map(|r| (r.start as u64, r.end as u64))
                        .collect(),
                })
                .collect(),
            globals: image.globals.clone(),
            tables: image.tables.iter().map(|t| t.elements.clone()).collect(),
            dropped_data: image.dropped_data.clone(),
            dropped_elements: image.dropped_elements.clone(),
        };
        let encoded = postcard::to_allocvec(&header).map_err(|e| {
            Error::new(
                ErrorKind::InvalidSnapshot,
                format!("cannot encode the snapshot: {e}"),
            )
        })?;
        let mut out = HashingWriter {
            inner: out,
            hasher: blake3::Hasher::new(),
        };
        let written = (|| -> io::Result<()> {
            out.write_all(MAGIC)?;
            out.write_all(&(encoded.len() as u64).to_le_bytes())?;
            out.write_all(&encoded)?;
            out.write_all(blake3::hash(&encoded).as_bytes())?;
            for memory in &image.memories {
                for range in &memory.populated {
                    out.write_all(&memory.bytes[range.clone()])?;
                }
            }
            let digest = out.hasher.finalize();
            out.inner.write_all(digest.as_bytes())?;
            out.inner.flush()
        })();
        written.map_err(|e| {
            Error::new(
                ErrorKind::InvalidSnapshot,
                format!("cannot write the snapshot: {e}"),
            )
        })
    }

    /// Read a snapshot that [`write_to`](Snapshot::write_to) wrote, for
    /// sandboxes of `module`.
    ///
    /// # Errors
    ///
    /// As for [`Snapshot::load`].
    pub fn read_from(module: &Module, input: impl Read) -> Result<Snapshot, Error> {
        let invalid = |why: String| Error::new(ErrorKind::InvalidSnapshot, why);
        let mut input = HashingReader {
            inner: input,
            hasher: blake3::Hasher::new(),
        };
        let truncated = |e: io::Error| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                invalid("the snapshot is truncated".into())
            } else {
                invalid(format!("cannot read the snapshot: {e}"))
            }
        };
        let mut magic = [0u8; 16];
        input.read_exact(&mut magic).map_err(truncated)?;
        if &magic != MAGIC {
            return Err(invalid(
                "not a Cleanslate snapshot (or one of another format version)".into(),
            ));
        }
        let mut len = [0u8; 8];
        input.read_exact(&mut len).map_err(truncated)?;
        let len = u64::from_le_bytes(len);
        if len > MAX_HEADER {
            return Err(invalid(format!(
                "the snapshot's header length {len} is impossible"
            )));
        }
        let mut encoded = Vec::new();
        (&mut input)
            .take(len)
            .read_to_end(&mut encoded)
            .map_err(truncated)?;
        if encoded.len() as u64 != len {
            return Err(invalid("the snapshot is truncated".into()));
        }
        let mut header_digest = [0u8; DIGEST_LEN];
        input.read_exact(&mut header_digest).map_err(truncated)?;
        if blake3::hash(&encoded).as_bytes() != &header_digest {
            return Err(invalid(
                "the snapshot is damaged (its header's digest does not match)".into(),
            ));
        }
        let header: Header = postcard::from_bytes(&encoded)
            .map_err(|e| invalid(format!("the snapshot's header is damaged: {e}")))?;
        check_identity(module, &header)?;
        let mut memories = Vec::with_capacity(header.memories.len());
        let limits = memory_limits(module)?;
        if header.memories.len() != limits.len() {
            return Err(invalid(format!(
                "the snapshot has {} memories, the module defines {}",
                header.memories.len(),
                limits.len()
            )));
        }
        for (i, (memory, limit)) in header.memories.iter().zip(&limits).enumerate() {
            let stored = check_memory(i, memory, limit).map_err(invalid)?;
            // Zeroed pages are not committed until written: only the
            // populated ranges cost memory.
            let mut bytes = vec![0u8; memory.len as usize];
            for range in &stored {
                input
                    .read_exact(&mut bytes[range.clone()])
                    .map_err(truncated)?;
            }
            let populated = with_data_extent(module, i, stored, bytes.len());
            memories.push(MemoryImage::new(bytes, populated));
        }
        let computed = input.hasher.finalize();
        let mut stored = [0u8; DIGEST_LEN];
        input.inner.read_exact(&mut stored).map_err(truncated)?;
        if computed.as_bytes() != &stored {
            return Err(invalid(
                "the snapshot is damaged (its digest does not match)".into(),
            ));
        }
        if input.inner.read(&mut [0u8; 1]).map_err(truncated)? != 0 {
            return Err(invalid("the snapshot has bytes after its end".into()));
        }
        let functions = referenceable(module);
        check_globals(module, &header.globals, &functions).map_err(invalid)?;
        check_tables(module, &header.tables, &functions).map_err(invalid)?;
        check_segments(module, &header).map_err(invalid)?;
        let image = SnapshotImage {
            memories,
            globals: header.globals,
            tables: header
                .tables
                .into_iter()
                .map(|elements| TableImage { elements })
                .collect(),
            dropped_data: header.dropped_data,
            dropped_elements: header.dropped_elements,
        };
        Ok(Snapshot {
            image: Arc::new(image),
            module_id: ModuleIdentity::of(module),
        })
    }
}

fn check_identity(module: &Module, header: &Header) -> Result<(), Error> {
    let version = env!("CARGO_PKG_VERSION");
    if header.version != version {
        return Err(Error::new(
            ErrorKind::InvalidSnapshot,
            format!(
                "the snapshot was saved by Cleanslate {}, this is {version}: take it again",
                header.version
            ),
        ));
    }
    if header.module != module.inner.digest {
        return Err(Error::new(
            ErrorKind::InvalidSnapshot,
            "the snapshot belongs to another module (its bytes differ)",
        ));
    }
    Ok(())
}

/// `stored` widened to every byte a fresh instance of `module` may hold
/// non-zero in memory `i` (its data extent; all of it when unknown): the
/// fresh-instance path compares a fresh instance with the image only
/// inside the populated ranges, as a captured image always covers them.
fn with_data_extent(
    module: &Module,
    i: usize,
    stored: Vec<Range<usize>>,
    len: usize,
) -> Vec<Range<usize>> {
    let data_extent = module
        .inner
        .layout
        .memories
        .get(i)
        .and_then(|m| m.data_extent);
    let extent = match data_extent {
        Some(extent) => usize::try_from(extent)
            .ok()
            .and_then(|e| e.checked_next_multiple_of(HOST_PAGE))
            .map_or(len, |e| e.min(len)),
        None => len,
    };
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(stored.len() + 1);
    let head = (extent > 0).then_some(0..extent);
    for range in head.into_iter().chain(stored) {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    merged
}

/// A defined memory's limits in bytes, and its page size.
struct MemoryLimits {
    minimum: u64,
    maximum: Option<u64>,
    page: u64,
}

fn memory_limits(module: &Module) -> Result<Vec<MemoryLimits>, Error> {
    let pages = module.memory_page_sizes()?;
    Ok(module
        .inner
        .layout
        .memories
        .iter()
        .zip(pages)
        .map(|(layout, page)| MemoryLimits {
            minimum: layout.initial_bytes,
            maximum: layout.maximum_bytes,
            page,
        })
        .collect())
}

/// The memory's populated ranges, if its size and ranges fit `limit`.
fn check_memory(
    i: usize,
    memory: &MemoryHeader,
    limit: &MemoryLimits,
) -> Result<Vec<Range<usize>>, String> {
    let len = memory.len;
    // The reservation a memory lives in holds at most 4 GiB plus its guard
    // for 32-bit memories; 64-bit ones are capped at the same reservation.
    let fits_here = len <= (4 << 30) && usize::try_from(len).is_ok();
    if len < limit.minimum
        || limit.maximum.is_some_and(|max| len > max)
        || !len.is_multiple_of(limit.page)
        || !fits_here
    {
        return Err(format!(
            "memory {i} is {len} bytes, which its type does not allow (at least {}, at most {}, in pages of {})",
            limit.minimum,
            limit.maximum.map_or("any".to_string(), |m| m.to_string()),
            limit.page
        ));
    }
    let mut end_of_last = 0;
    let mut ranges = Vec::with_capacity(memory.populated.len());
    for &(start, end) in &memory.populated {
        let aligned = start.is_multiple_of(HOST_PAGE as u64)
            && (end.is_multiple_of(HOST_PAGE as u64) || end == len);
        if start < end_of_last || start >= end || end > len || !aligned {
            return Err(format!(
                "memory {i}'s populated range {start:#x}..{end:#x} is out of order or bounds"
            ));
        }
        end_of_last = end;
        ranges.push(start as usize..end as usize);
    }
    Ok(ranges)
}

/// The functions a snapshot of `module` can hold references to.
fn referenceable(module: &Module) -> HashSet<u32> {
    module
        .inner
        .hooks
        .functions
        .iter()
        .map(|(i, _)| *i)
        .collect()
}

fn check_globals(
    module: &Module,
    globals: &[(u32, GlobalValue)],
    referenceable: &HashSet<u32>,
) -> Result<(), String> {
    let inner = &module.inner;
    if globals.len() != inner.hooks.globals.len() {
        return Err(format!(
            "the snapshot has {} mutable globals, the module {}",
            globals.len(),
            inner.hooks.globals.len()
        ));
    }
    for ((index, value), (expected, _)) in globals.iter().zip(&inner.hooks.globals) {
        let ty = inner
            .layout
            .globals
            .iter()
            .find(|g| g.index == *expected)
            .map(|g| g.ty);
        let fits = match (value, ty) {
            _ if index != expected => false,
            (GlobalValue::I32(_), Some(ValType::I32))
            | (GlobalValue::I64(_), Some(ValType::I64))
            | (GlobalValue::F32(_), Some(ValType::F32))
            | (GlobalValue::F64(_), Some(ValType::F64))
            | (GlobalValue::V128(_), Some(ValType::V128))
            | (GlobalValue::FuncRef(None), Some(ValType::FuncRef))
            | (GlobalValue::NullRef, Some(ValType::OtherRef)) => true,
            (GlobalValue::FuncRef(Some(f)), Some(ValType::FuncRef)) => referenceable.contains(f),
            _ => false,
        };
        if !fits {
            return Err(format!(
                "global {index} holds {value:?}, which global {expected} of the module cannot"
            ));
        }
    }
    Ok(())
}

fn check_tables(
    module: &Module,
    tables: &[Vec<Option<u32>>],
    referenceable: &HashSet<u32>,
) -> Result<(), String> {
    let layout = &module.inner.layout.tables;
    if tables.len() != layout.len() {
        return Err(format!(
            "the snapshot has {} tables, the module defines {}",
            tables.len(),
            layout.len()
        ));
    }
    for (i, (elements, table)) in tables.iter().zip(layout).enumerate() {
        let size = elements.len() as u64;
        if size < table.initial_elements || table.maximum_elements.is_some_and(|max| size > max) {
            return Err(format!(
                "table {i} has {size} elements, which its type does not allow"
            ));
        }
        for (slot, element) in elements.iter().enumerate() {
            if let Some(f) = element
                && !(table.funcref && referenceable.contains(f))
            {
                return Err(format!(
                    "table {i} slot {slot} holds function {f}, which it cannot"
                ));
            }
        }
    }
    Ok(())
}

fn check_segments(module: &Module, header: &Header) -> Result<(), String> {
    let hooks = &module.inner.hooks;
    // In the order a capture lists them (the hooks'), each once: the
    // order is part of what comparing two snapshots compares.
    let known = |segments: &[SegmentHooks], dropped: &[u32]| {
        let mut observable = segments
            .iter()
            .filter(|s| s.probe.is_some())
            .map(|s| s.segment);
        dropped.iter().all(|d| observable.any(|s| s == *d))
    };
    if !known(&hooks.data_segments, &header.dropped_data)
        || !known(&hooks.element_segments, &header.dropped_elements)
    {
        return Err("the snapshot drops segments the module does not have".into());
    }
    Ok(())
}

/// Hashes what passes through, for the trailing digest.
struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Runtime, Sandbox};

    /// A module with one memory (1 to 4 pages), a mutable i32 and a funcref
    /// global, a funcref table (2 to 3 elements) and a passive segment.
    fn module() -> Module {
        Runtime::new()
            .unwrap()
            .load_bytes(
                r#"(module (memory 1 4)
                  (global (mut i32) (i32.const 0))
                  (global (mut funcref) (ref.null func))
                  (table 2 3 funcref) (elem declare func $f)
                  (data $d "x") (data $e "y")
                  (func $f)
                  (func (export "probe") (memory.init $d (i32.const 0) (i32.const 0) (i32.const 1))
                    (memory.init $e (i32.const 0) (i32.const 0) (i32.const 1)))
                  (func (export "drop") (data.drop $d) (data.drop $e)))"#,
            )
            .unwrap()
    }

    /// The file of `module`'s fresh snapshot, and its decoded header.
    fn saved(module: &Module) -> (Vec<u8>, Header) {
        let snapshot = Sandbox::builder(module)
            .build()
            .unwrap()
            .snapshot()
            .unwrap();
        let mut file = Vec::new();
        snapshot.write_to(&mut file).unwrap();
        let len = u64::from_le_bytes(file[16..24].try_into().unwrap()) as usize;
        let header = postcard::from_bytes(&file[24..24 + len]).unwrap();
        (file, header)
    }

    /// A well-framed file (right magic, version, module and digest) around
    /// whatever `edit` makes of the header of `module`'s fresh snapshot.
    fn framed(module: &Module, edit: impl FnOnce(&mut Header)) -> Vec<u8> {
        let (_, mut header) = saved(module);
        edit(&mut header);
        let encoded = postcard::to_allocvec(&header).unwrap();
        let mut out = Vec::from(&MAGIC[..]);
        out.extend_from_slice(&(encoded.len() as u64).to_le_bytes());
        out.extend_from_slice(&encoded);
        out.extend_from_slice(blake3::hash(&encoded).as_bytes());
        for memory in &header.memories {
            for (start, end) in &memory.populated {
                out.extend(std::iter::repeat_n(0u8, (end - start) as usize));
            }
        }
        let digest = blake3::hash(&out);
        out.extend_from_slice(digest.as_bytes());
        out
    }

    fn refused(module: &Module, file: &[u8], why: &str) {
        let err = Snapshot::read_from(module, file).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSnapshot, "{err}");
        assert!(err.to_string().contains(why), "wanted {why:?}: {err}");
    }

    #[test]
    fn the_unedited_frame_loads() {
        let module = module();
        Snapshot::read_from(&module, &framed(&module, |_| {})[..]).unwrap();
    }

    #[test]
    fn a_memory_its_type_does_not_allow_is_refused() {
        let module = module();
        let sizes: [u64; 3] = [0, 5 << 16, (1 << 16) + 4096];
        for len in sizes {
            let file = framed(&module, |h| {
                h.memories[0] = MemoryHeader {
                    len,
                    populated: vec![],
                }
            });
            refused(&module, &file, "does not allow");
        }
        let file = framed(&module, |h| h.memories.clear());
        refused(&module, &file, "memories");
    }

    #[test]
    fn populated_ranges_out_of_order_or_bounds_are_refused() {
        let module = module();
        let ranges: [&[(u64, u64)]; 4] = [
            &[(4096, 8192), (0, 4096)],
            &[(0, 0)],
            &[(0, (1 << 16) + 4096)],
            &[(100, 4096)],
        ];
        for populated in ranges {
            let file = framed(&module, |h| h.memories[0].populated = populated.to_vec());
            refused(&module, &file, "out of order or bounds");
        }
    }

    #[test]
    fn globals_of_the_wrong_type_or_function_are_refused() {
        let module = module();
        let cases: [Vec<(u32, GlobalValue)>; 4] = [
            vec![(0, GlobalValue::I64(1)), (1, GlobalValue::FuncRef(None))],
            vec![
                (0, GlobalValue::I32(1)),
                (1, GlobalValue::FuncRef(Some(99))),
            ],
            vec![(1, GlobalValue::I32(1)), (0, GlobalValue::FuncRef(None))],
            vec![(0, GlobalValue::I32(1))],
        ];
        for globals in cases {
            let file = framed(&module, |h| h.globals = globals);
            refused(&module, &file, "global");
        }
        let file = framed(&module, |h| {
            h.globals = vec![
                (0, GlobalValue::I32(-3)),
                (1, GlobalValue::FuncRef(Some(0))),
            ]
        });
        Snapshot::read_from(&module, &file[..]).unwrap();
    }

    #[test]
    fn tables_of_the_wrong_size_or_function_are_refused() {
        let module = module();
        let cases: [Vec<Vec<Option<u32>>>; 4] = [
            vec![vec![None]],
            vec![vec![None; 4]],
            vec![vec![None, Some(7)]],
            vec![],
        ];
        for tables in cases {
            let file = framed(&module, |h| h.tables = tables);
            refused(&module, &file, "table");
        }
    }

    #[test]
    fn unknown_repeated_or_reordered_dropped_segments_are_refused() {
        let module = module();
        let cases: [Vec<u32>; 4] = [vec![5], vec![0, 0], vec![1, 0], vec![0, 1, 1]];
        for dropped in cases {
            let file = framed(&module, |h| h.dropped_data = dropped);
            refused(&module, &file, "segments");
        }
        for dropped in [vec![0], vec![1], vec![0, 1]] {
            let file = framed(&module, |h| h.dropped_data = dropped.clone());
            let loaded = Snapshot::read_from(&module, &file[..]).unwrap();
            assert_eq!(loaded.image.dropped_data, dropped);
        }
        let file = framed(&module, |h| h.dropped_elements = vec![0]);
        refused(&module, &file, "segments");
    }

    #[test]
    fn another_version_is_refused() {
        let module = module();
        let file = framed(&module, |h| h.version = "0.0.0-elsewhere".into());
        refused(&module, &file, "saved by Cleanslate 0.0.0-elsewhere");
    }

    #[test]
    fn an_impossible_header_length_is_refused_before_allocating() {
        let module = module();
        let mut file = framed(&module, |_| {});
        file[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        refused(&module, &file, "impossible");
    }

    /// A memory length changed by a bit flip (still a page multiple the
    /// type allows) must not size an allocation: the header's own digest
    /// refuses it first.
    #[test]
    fn a_damaged_header_is_refused_before_its_lengths_are_used() {
        let module = module();
        let (mut file, mut header) = saved(&module);
        let len = u64::from_le_bytes(file[16..24].try_into().unwrap()) as usize;
        header.memories[0].len = 4 << 16;
        let encoded = postcard::to_allocvec(&header).unwrap();
        assert_eq!(encoded.len(), len, "the edit keeps the header's length");
        file[24..24 + len].copy_from_slice(&encoded);
        refused(&module, &file, "header's digest");
    }

    /// The module's table is written by no instruction, so restores never
    /// write it: a file that changes it loads (it fits the table's type)
    /// but is refused by restore, which changes nothing.
    #[test]
    fn a_table_no_instruction_writes_cannot_be_restored_to_other_contents() {
        let module = module();
        let mut sandbox = Sandbox::builder(&module).build().unwrap();
        let before = sandbox.snapshot().unwrap();
        let file = framed(&module, |h| h.tables = vec![vec![None, Some(0)]]);
        let loaded = Snapshot::read_from(&module, &file[..]).unwrap();
        let err = sandbox.restore(&loaded).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSnapshot, "{err}");
        assert_eq!(
            sandbox.snapshot().unwrap().differences(&before),
            Vec::<String>::new()
        );
        let same = framed(&module, |_| {});
        sandbox
            .restore(&Snapshot::read_from(&module, &same[..]).unwrap())
            .unwrap();
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // lists of one range each
    fn stored_ranges_are_widened_to_the_data_extent() {
        let module = Runtime::new()
            .unwrap()
            .load_bytes(r#"(module (memory 2) (data (i32.const 70000) "x"))"#)
            .unwrap();
        let widened = with_data_extent(&module, 0, vec![8192..12288], 2 << 16);
        // 70001 rounded up to a host page: 73728.
        assert_eq!(widened, vec![0..73728]);
        let apart = with_data_extent(&module, 0, vec![81920..86016], 2 << 16);
        assert_eq!(apart, vec![0..73728, 81920..86016]);
    }
}
