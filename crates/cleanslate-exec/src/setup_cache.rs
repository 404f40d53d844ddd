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
//! in a folder only the owner can enter.

use std::fs;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use cleanslate::{Module, Snapshot};
use serde::{Deserialize, Serialize};

use crate::guest::Guest;

/// Entries kept; the least recently used beyond these are removed.
const KEEP: usize = 8;
/// A listing of more entries than this is not fingerprinted: the setup is
/// then not cached.
const MAX_LISTED: usize = 10_000;
const MAGIC: &[u8; 16] = b"cleanslate-setup";

/// What a setup leaves besides the snapshot: where its buffers are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SetupBuffers {
    /// The buffer runs' code is written into.
    pub code_buffer: u32,
    /// The tool answer blocks, and their size.
    pub blocks: Vec<u32>,
    pub block_size: u32,
}

/// One setup's place in the cache.
pub(crate) struct SetupCache {
    path: PathBuf,
}

/// What the key is made of (see the module's documentation).
pub(crate) struct SetupKey<'a> {
    pub module: &'a Module,
    pub guest: &'a Guest,
    pub setup: Option<&'a str>,
    pub tools: Vec<(&'a str, &'a str)>,
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
        let mut add = |bytes: &[u8]| {
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        add(env!("CARGO_PKG_VERSION").as_bytes());
        add(&key.module.digest());
        add(format!("{:?}", key.guest).as_bytes());
        for dir in key.guest.mounted_dirs() {
            add(&listing(dir)?);
        }
        add(key.setup.unwrap_or("").as_bytes());
        add(&[u8::from(key.setup.is_some())]);
        for (name, description) in &key.tools {
            add(name.as_bytes());
            add(description.as_bytes());
        }
        add(b"env");
        for (name, value) in key.env {
            add(name.as_bytes());
            add(value.as_bytes());
        }
        match key.input_dir {
            Some(input) => add(&listing(input)?),
            None => add(b"no input"),
        }
        add(&[u8::from(key.output_mounted)]);
        for n in &key.shape {
            add(&n.to_le_bytes());
        }
        let name = format!("{}.setup", hasher.finalize().to_hex());
        Some(SetupCache {
            path: dir.join(name),
        })
    }

    /// The stored setup, if there is one that loads for `module`.
    pub(crate) fn load(&self, module: &Module) -> Option<(Snapshot, SetupBuffers)> {
        let file = fs::File::open(&self.path).ok()?;
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
            let buffers: SetupBuffers =
                serde_json::from_slice(&buffers).map_err(|e| e.to_string())?;
            let snapshot = Snapshot::read_from(module, &mut input).map_err(|e| e.to_string())?;
            Ok((snapshot, buffers))
        })();
        match loaded {
            Ok(found) => {
                // Used now: the last to be evicted.
                let _ = fs::File::open(&self.path)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
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
        let partial = self
            .path
            .with_extension(format!("partial-{}", std::process::id()));
        let written = (|| -> io::Result<()> {
            let mut options = fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut out = BufWriter::with_capacity(1 << 20, options.open(&partial)?);
            let encoded = serde_json::to_vec(buffers).map_err(io::Error::other)?;
            out.write_all(MAGIC)?;
            out.write_all(&(encoded.len() as u32).to_le_bytes())?;
            out.write_all(&encoded)?;
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
        evict(dir);
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

/// Remove the least recently used entries beyond [`KEEP`].
fn evict(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut setups: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "setup"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if setups.len() <= KEEP {
        return;
    }
    setups.sort();
    for (_, path) in &setups[..setups.len() - KEEP] {
        let _ = fs::remove_file(path);
    }
}

/// A folder's listing (relative names, kinds, sizes, modification times),
/// as bytes; `None` when it cannot be read or is too large.
fn listing(root: &Path) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut pending = vec![PathBuf::new()];
    let mut listed = 0;
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
        let before = listing(&dir).unwrap();
        assert_eq!(listing(&dir).unwrap(), before, "a listing is stable");
        fs::write(dir.join("sub/a"), b"three").unwrap();
        assert_ne!(listing(&dir).unwrap(), before, "a file's size is in it");
        for i in 0..MAX_LISTED {
            fs::write(dir.join(format!("f{i}")), b"").unwrap();
        }
        assert_eq!(listing(&dir), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_the_most_recently_used_entries_are_kept() {
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
        evict(&dir);
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut expected: Vec<String> = (3..KEEP + 3).map(|i| format!("{i:02}.setup")).collect();
        expected.push("other".into());
        assert_eq!(left, expected);
        fs::remove_dir_all(&dir).unwrap();
    }
}
