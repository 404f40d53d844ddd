//! Setup snapshots kept on disk: a setup that imports numpy and pandas
//! takes seconds of interpreter work, the same every time for the same
//! guest, code and configuration. The first build saves the snapshot it
//! took; later builds, in any process, restore it instead of running the
//! setup again.
//!
//! An entry is keyed by everything the setup's outcome depends on: the
//! guest module's digest and files, the setup code, the tools offered (the
//! prelude lists them), the environment, the folders mounted (the input
//! folder's listing: names, sizes, times) and the limits that shape the
//! setup's buffers. A setup is stored only when it depended on nothing
//! else: one that called a tool (whose answer may change) or left files in
//! /tmp is not. An entry that does not load (damaged, another version) is
//! rebuilt; the cache never makes a build fail.
//!
//! An entry holds the guest's memory, and so whatever the setup put there
//! (the environment's values too): files are readable by their owner only,
//! in a folder only the owner can enter. An entry is used only if it and
//! its folder belong to this user and no one else can write them, and only
//! whole: the buffers' record has its own digest, the snapshot its own
//! checks (`Snapshot::read_from`), and the buffers must lie in its memory.

use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use cleanslate::{Module, Snapshot};
use serde::{Deserialize, Serialize};

use crate::guest::Guest;

/// Entries kept; the least recently used beyond these are removed.
const KEEP: usize = 8;
/// Bytes the entries may hold together (beyond, the least recently used
/// go, though never the one just stored).
const KEEP_BYTES: u64 = 4 << 30;
/// An input folder whose files hold more bytes than this is not keyed (its
/// contents are digested for the key): the setup is then not cached.
const MAX_INPUT_BYTES: u64 = 256 << 20;
/// A listing of more entries than this is not fingerprinted: the setup is
/// then not cached.
const MAX_LISTED: usize = 10_000;
const MAGIC: &[u8; 16] = b"cleanslate-setup";

/// Partial files older than this are litter of a writer that died.
const PARTIAL_AGE: std::time::Duration = std::time::Duration::from_secs(600);

/// What a setup leaves besides the snapshot: where its buffers are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SetupBuffers {
    /// The buffer runs' code is written into.
    pub code_buffer: u32,
    /// The tool answer blocks, and their size.
    pub blocks: Vec<u32>,
    pub block_size: u32,
}

impl SetupBuffers {
    /// Whether the buffers are what this configuration reserves (`blocks`
    /// blocks of `block_size` bytes, a code buffer of `code_size` bytes),
    /// each inside a memory of `memory_size` bytes.
    pub(crate) fn fit(
        &self,
        memory_size: usize,
        code_size: u32,
        blocks: usize,
        block_size: u32,
    ) -> bool {
        let inside =
            |at: u32, len: u32| at != 0 && (u64::from(at) + u64::from(len)) <= memory_size as u64;
        inside(self.code_buffer, code_size)
            && self.blocks.len() == blocks
            && (blocks == 0 || self.block_size == block_size)
            && self.blocks.iter().all(|b| inside(*b, self.block_size))
    }
}

/// One setup's place in the cache.
pub(crate) struct SetupCache {
    path: PathBuf,
    /// The key, also stored in the entry: an entry copied or renamed to
    /// another key's name is not that key's.
    key: String,
}

/// The entry's record before the snapshot.
#[derive(Serialize, Deserialize)]
struct Record {
    key: String,
    buffers: SetupBuffers,
}

/// What the key is made of (see the module's documentation).
pub(crate) struct SetupKey<'a> {
    pub module: &'a Module,
    pub guest: &'a Guest,
    pub setup: Option<&'a str>,
    pub tools: Vec<(&'a str, &'a str)>,
    /// The turns run before the setup code.
    pub preludes: Vec<(&'a str, &'a str)>,
    pub env: &'a [(String, String)],
    pub input_dir: Option<&'a Path>,
    pub output_mounted: bool,
    /// The limits and buffer sizes, as numbers.
    pub shape: Vec<u64>,
}

impl SetupCache {
    /// The entry for `key` in `dir`, or `None` when the setup cannot be
    /// keyed (a mounted folder too large to list, or unreadable).
    pub(crate) fn new(dir: &Path, key: &SetupKey<'_>) -> Option<SetupCache> {
        let mut hasher = blake3::Hasher::new_derive_key("cleanslate-exec setup snapshot key");
        // Every item length-prefixed and every list counted, so that no
        // two different keys make the same stream.
        let mut add = |bytes: &[u8]| {
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        add(env!("CARGO_PKG_VERSION").as_bytes());
        add(&key.module.digest());
        add(format!("{:?}", key.guest).as_bytes());
        // The interpreter's arguments, environment and mounts.
        add(format!("{:?}", key.guest.wasi()).as_bytes());
        let mounted = key.guest.mounted_dirs();
        add(&(mounted.len() as u64).to_le_bytes());
        for dir in mounted {
            add(&listing(dir, false)?);
        }
        add(&[u8::from(key.setup.is_some())]);
        add(key.setup.unwrap_or("").as_bytes());
        add(&(key.tools.len() as u64).to_le_bytes());
        for (name, description) in &key.tools {
            add(name.as_bytes());
            add(description.as_bytes());
        }
        add(&(key.preludes.len() as u64).to_le_bytes());
        for (what, code) in &key.preludes {
            add(what.as_bytes());
            add(code.as_bytes());
        }
        add(&(key.env.len() as u64).to_le_bytes());
        for (name, value) in key.env {
            add(name.as_bytes());
            add(value.as_bytes());
        }
        match key.input_dir {
            Some(input) => {
                add(b"input");
                add(&listing(input, true)?);
            }
            None => add(b"no input"),
        }
        add(&[u8::from(key.output_mounted)]);
        add(&(key.shape.len() as u64).to_le_bytes());
        for n in &key.shape {
            add(&n.to_le_bytes());
        }
        let key = hasher.finalize().to_hex().to_string();
        Some(SetupCache {
            path: dir.join(format!("{key}.setup")),
            key,
        })
    }

    /// The stored setup, if there is one that loads for `module`.
    pub(crate) fn load(&self, module: &Module) -> Option<(Snapshot, SetupBuffers)> {
        let file = open_private(&self.path)?;
        let mut input = BufReader::with_capacity(1 << 20, file);
        let loaded = (|| -> Result<_, String> {
            let mut magic = [0u8; 16];
            input.read_exact(&mut magic).map_err(|e| e.to_string())?;
            if &magic != MAGIC {
                return Err("not a setup entry".into());
            }
            let mut len = [0u8; 4];
            input.read_exact(&mut len).map_err(|e| e.to_string())?;
            let len = u32::from_le_bytes(len) as usize;
            if len > 1 << 20 {
                return Err("damaged".into());
            }
            let mut buffers = vec![0u8; len];
            input.read_exact(&mut buffers).map_err(|e| e.to_string())?;
            let mut digest = [0u8; 32];
            input.read_exact(&mut digest).map_err(|e| e.to_string())?;
            if blake3::hash(&buffers).as_bytes() != &digest {
                return Err("damaged".into());
            }
            let record: Record = serde_json::from_slice(&buffers).map_err(|e| e.to_string())?;
            if record.key != self.key {
                return Err("stored for another key".into());
            }
            let buffers = record.buffers;
            let snapshot = Snapshot::read_from(module, &mut input).map_err(|e| e.to_string())?;
            Ok((snapshot, buffers))
        })();
        match loaded {
            Ok(found) => {
                // Used now: the last to be evicted.
                let _ = input.get_ref().set_modified(std::time::SystemTime::now());
                Some(found)
            }
            Err(_) => {
                // Damaged or from another version: this build replaces it.
                let _ = fs::remove_file(&self.path);
                None
            }
        }
    }

    /// Remove the entry (it loaded but did not work).
    pub(crate) fn forget(&self) {
        let _ = fs::remove_file(&self.path);
    }

    /// Store a setup: written aside and renamed into place, so a reader sees
    /// a whole entry or none. Failing to store only costs the next build
    /// its time.
    pub(crate) fn store(&self, snapshot: &Snapshot, buffers: &SetupBuffers) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir)?;
        if !private_dir(dir) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is not private to this user", dir.display()),
            ));
        }
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let partial = self.path.with_extension(format!(
            "partial-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let written = (|| -> io::Result<()> {
            let mut options = fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut out = BufWriter::with_capacity(1 << 20, options.open(&partial)?);
            let record = Record {
                key: self.key.clone(),
                buffers: buffers.clone(),
            };
            let encoded = serde_json::to_vec(&record).map_err(io::Error::other)?;
            out.write_all(MAGIC)?;
            out.write_all(&(encoded.len() as u32).to_le_bytes())?;
            out.write_all(&encoded)?;
            out.write_all(blake3::hash(&encoded).as_bytes())?;
            snapshot
                .write_to(&mut out)
                .map_err(|e| io::Error::other(e.to_string()))?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            fs::rename(&partial, &self.path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&partial);
        }
        written?;
        evict(dir, &self.path);
        Ok(())
    }
}

/// The folder, readable by its owner only (entries hold guest memory).
fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// `path` opened for reading if it is a regular file (not a link) that
/// this user owns and no one else can write, in a folder of which the same
/// holds: else another user could have put guest state there.
fn open_private(path: &Path) -> Option<fs::File> {
    if !private_dir(path.parent()?) {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let file = fs::OpenOptions::new()
            .read(true)
            // Not a link; and a FIFO put there does not block the open
            // (it is refused below as not a regular file).
            .custom_flags(
                (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32,
            )
            .open(path)
            .ok()?;
        let meta = file.metadata().ok()?;
        (meta.is_file() && private(&meta)).then_some(file)
    }
    #[cfg(not(unix))]
    {
        fs::File::open(path).ok()
    }
}

/// Whether `dir` is a folder (not a link) this user owns and no one else
/// can write.
fn private_dir(dir: &Path) -> bool {
    fs::symlink_metadata(dir).is_ok_and(|meta| meta.is_dir() && private(&meta))
}

/// Owned by this user and writable by no one else.
#[cfg(unix)]
fn private(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.uid() == rustix::process::geteuid().as_raw() && meta.mode() & 0o022 == 0
}

#[cfg(not(unix))]
fn private(_: &fs::Metadata) -> bool {
    true
}

/// Remove the least recently used entries beyond [`KEEP`] or
/// [`KEEP_BYTES`] (never `stored`, the one just written), and partial files
/// a writer that died left behind. A time in the future counts as now, so
/// that entries stamped ahead by a skewed clock cannot crowd out new ones.
fn evict(dir: &Path, stored: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let now = std::time::SystemTime::now();
    let mut setups: Vec<(std::time::SystemTime, u64, PathBuf)> = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let Ok(modified) = meta.modified() else {
            continue;
        };
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".setup") && meta.is_file() && path != stored {
            setups.push((modified.min(now), meta.len(), path));
        } else if name.contains(".partial-")
            && meta.is_file()
            && now
                .duration_since(modified)
                .is_ok_and(|age| age > PARTIAL_AGE)
        {
            let _ = fs::remove_file(&path);
        }
    }
    let stored_bytes = fs::metadata(stored).map_or(0, |m| m.len());
    // Newest first: keep while within both limits.
    setups.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    let mut kept = 1;
    let mut bytes = stored_bytes;
    for (_, len, path) in setups {
        if kept < KEEP && bytes + len <= KEEP_BYTES {
            kept += 1;
            bytes += len;
        } else {
            let _ = fs::remove_file(path);
        }
    }
}

/// A folder's listing (relative names, kinds, sizes, modification times,
/// and with `contents` the BLAKE3 digest of every file's bytes), as bytes;
/// `None` when it cannot be read or is too large.
fn listing(root: &Path, contents: bool) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut pending = vec![PathBuf::new()];
    let mut listed = 0;
    let mut digested = 0u64;
    while let Some(relative) = pending.pop() {
        let mut entries: Vec<fs::DirEntry> = fs::read_dir(root.join(&relative))
            .ok()?
            .collect::<Result<_, _>>()
            .ok()?;
        entries.sort_by_key(fs::DirEntry::file_name);
        for entry in entries {
            listed += 1;
            if listed > MAX_LISTED {
                return None;
            }
            let meta = entry.metadata().ok()?;
            let name = relative.join(entry.file_name());
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            out.extend_from_slice(name.as_os_str().as_encoded_bytes());
            out.push(0);
            out.extend_from_slice(&meta.len().to_le_bytes());
            out.extend_from_slice(&modified.to_le_bytes());
            out.push(u8::from(meta.is_dir()));
            if meta.is_dir() {
                pending.push(name);
            } else if contents && meta.is_file() {
                digested += meta.len();
                if digested > MAX_INPUT_BYTES {
                    return None;
                }
                let mut hasher = blake3::Hasher::new();
                hasher
                    .update_reader(fs::File::open(root.join(&name)).ok()?)
                    .ok()?;
                out.extend_from_slice(hasher.finalize().as_bytes());
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_changes_with_a_file_and_is_refused_when_too_large() {
        let dir = std::env::temp_dir().join(format!("cleanslate-listing-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/a"), b"one").unwrap();
        let before = listing(&dir, true).unwrap();
        assert_eq!(listing(&dir, true).unwrap(), before, "a listing is stable");
        fs::write(dir.join("sub/a"), b"three").unwrap();
        assert_ne!(
            listing(&dir, true).unwrap(),
            before,
            "a file's size is in it"
        );
        // The same size and modification time, other bytes: only the
        // contents tell them apart.
        let same_size = listing(&dir, true).unwrap();
        let time = fs::metadata(dir.join("sub/a")).unwrap().modified().unwrap();
        fs::write(dir.join("sub/a"), b"THREE").unwrap();
        fs::File::options()
            .write(true)
            .open(dir.join("sub/a"))
            .unwrap()
            .set_modified(time)
            .unwrap();
        assert_ne!(
            listing(&dir, true).unwrap(),
            same_size,
            "contents are in it"
        );
        for i in 0..MAX_LISTED {
            fs::write(dir.join(format!("f{i}")), b"").unwrap();
        }
        assert_eq!(listing(&dir, false), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_the_most_recently_used_entries_and_fresh_partial_files_are_kept() {
        let dir = std::env::temp_dir().join(format!("cleanslate-evict-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let start = std::time::SystemTime::now() - std::time::Duration::from_secs(1000);
        for i in 0..KEEP + 3 {
            let path = dir.join(format!("{i:02}.setup"));
            fs::write(&path, b"").unwrap();
            let file = fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(start + std::time::Duration::from_secs(i as u64))
                .unwrap();
        }
        fs::write(dir.join("other"), b"").unwrap();
        let stale = dir.join("00.partial-1-0");
        fs::write(&stale, b"").unwrap();
        fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(start)
            .unwrap();
        fs::write(dir.join("00.partial-2-0"), b"being written").unwrap();
        evict(&dir, &dir.join(format!("{:02}.setup", KEEP + 2)));
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut expected: Vec<String> = (3..KEEP + 3).map(|i| format!("{i:02}.setup")).collect();
        expected.push("other".into());
        expected.insert(0, "00.partial-2-0".into());
        assert_eq!(left, expected);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Entries stamped in the future (a skewed clock, or on purpose) count
    /// as used now: the entry just stored is never the one evicted.
    #[test]
    fn entries_from_the_future_do_not_crowd_out_the_one_just_stored() {
        let dir = std::env::temp_dir().join(format!("cleanslate-future-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let future = std::time::SystemTime::now() + std::time::Duration::from_secs(1 << 28);
        for i in 0..KEEP {
            let path = dir.join(format!("junk{i}.setup"));
            fs::write(&path, b"j").unwrap();
            let file = fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(future).unwrap();
        }
        // A folder with the suffix is no entry (and cannot be removed).
        fs::create_dir(dir.join("folder.setup")).unwrap();
        let stored = dir.join("stored.setup");
        fs::write(&stored, b"s").unwrap();
        evict(&dir, &stored);
        assert!(stored.exists(), "the entry just stored was evicted");
        let entries = fs::read_dir(&dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().is_file())
            .count();
        assert_eq!(entries, KEEP);
        fs::remove_dir_all(&dir).unwrap();
    }
}
