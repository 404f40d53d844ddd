//! The compiled-module cache: compiled code on disk, so a module's second
//! load (in this process or a later one) skips the compiler.
//!
//! A cache file is machine code that wasmtime will run, so nothing in it is
//! trusted blindly:
//! - its name is a digest of everything that decides the code: the module
//!   as rewritten for the reset, wasmtime's version and its engine
//!   compatibility hash (compiler, target, settings), our own version;
//! - it starts with our magic and a SHA-256 of the rest, checked before
//!   wasmtime sees a byte (a truncated, corrupt or foreign file is ignored
//!   and rebuilt);
//! - it must be a regular file owned by this user and writable by no one
//!   else, in a directory likewise (the cache is exactly as trusted as the
//!   user's own files; the directory is created `0700`, files `0600`);
//! - wasmtime re-checks its own header, version and configuration.
//!
//! Writes go to a temporary file renamed into place, so a reader never sees
//! half a file, and concurrent writers of one key are harmless.

use std::fmt;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// The first bytes of every cache file (the trailing digit is the format).
const MAGIC: &[u8; 16] = b"cleanslate-cw01\n";
const DIGEST_LEN: usize = 32;

/// What the compiled-module cache did when a module was loaded.
///
/// ```
/// use cleanslate::{CacheStatus, Runtime, RuntimeConfig};
/// let dir = std::env::temp_dir().join(format!("cleanslate-doc-{}", std::process::id()));
/// let runtime = Runtime::with_config(RuntimeConfig::default().module_cache(&dir))?;
/// let wat = r#"(module (func (export "f")))"#;
/// assert_eq!(runtime.load_bytes(wat)?.cache_status(), &CacheStatus::Miss);
/// // A new runtime (as in a new process) finds the compiled code on disk.
/// let runtime = Runtime::with_config(RuntimeConfig::default().module_cache(&dir))?;
/// assert_eq!(runtime.load_bytes(wat)?.cache_status(), &CacheStatus::Hit);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), cleanslate::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheStatus {
    /// The runtime has no cache configured.
    Off,
    /// The compiled code came from the cache.
    Hit,
    /// Not in the cache: compiled, and stored for next time.
    Miss,
    /// A cache file was there but not usable (the reason says why): it was
    /// ignored, the module compiled, and the file replaced.
    Rebuilt(String),
    /// Compiled, but storing the result failed (the reason says why); the
    /// module works, the next load compiles again.
    NotStored(String),
}

impl fmt::Display for CacheStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheStatus::Off => f.write_str("off"),
            CacheStatus::Hit => f.write_str("hit"),
            CacheStatus::Miss => f.write_str("miss"),
            CacheStatus::Rebuilt(why) => write!(f, "rebuilt ({why})"),
            CacheStatus::NotStored(why) => write!(f, "not stored ({why})"),
        }
    }
}

/// One module's place in the cache.
pub(crate) struct CacheEntry {
    path: PathBuf,
}

impl CacheEntry {
    /// The entry for `wasm` compiled by `engine` (`flavor` tells apart
    /// engines whose compatibility hash could coincide).
    pub(crate) fn new(
        dir: &Path,
        wasm: &[u8],
        engine: &wasmtime::Engine,
        flavor: impl Hash,
    ) -> Self {
        let mut config = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut config);
        flavor.hash(&mut config);
        let mut key = Sha256::new();
        key.update(wasm);
        key.update(config.finish().to_le_bytes());
        key.update(WASMTIME_VERSION.as_bytes());
        key.update(env!("CARGO_PKG_VERSION").as_bytes());
        let name = format!("{}.cwasm", hex(&key.finalize()));
        CacheEntry {
            path: dir.join(name),
        }
    }

    /// The compiled bytes, if a trustworthy file holds them; `Err` says why
    /// a file that exists was not used. `Ok(None)`: no file.
    pub(crate) fn read(&self) -> Result<Option<Vec<u8>>, String> {
        let metadata = match fs::symlink_metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot stat {}: {e}", self.path.display())),
        };
        trusted(&metadata, "file")?;
        if let Some(dir) = self.path.parent() {
            let dir_metadata =
                fs::metadata(dir).map_err(|e| format!("cannot stat the cache directory: {e}"))?;
            trusted(&dir_metadata, "directory")?;
        }
        let bytes = fs::read(&self.path).map_err(|e| format!("cannot read it: {e}"))?;
        let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
            return Err("not a cleanslate cache file (bad header)".into());
        };
        if rest.len() < DIGEST_LEN {
            return Err("truncated".into());
        }
        let (digest, payload) = rest.split_at(DIGEST_LEN);
        if Sha256::digest(payload).as_slice() != digest {
            return Err("corrupt (checksum mismatch)".into());
        }
        let mut bytes = bytes;
        bytes.drain(..MAGIC.len() + DIGEST_LEN);
        Ok(Some(bytes))
    }

    /// Store `compiled` under this entry.
    pub(crate) fn write(&self, compiled: &[u8]) -> Result<(), String> {
        let dir = self
            .path
            .parent()
            .ok_or("the cache path has no directory")?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let temporary = dir.join(format!(
            ".{}.{}.{}.tmp",
            self.path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("module"),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temporary)?;
            file.write_all(MAGIC)?;
            file.write_all(&Sha256::digest(compiled))?;
            file.write_all(compiled)?;
            file.sync_all()?;
            fs::rename(&temporary, &self.path)
        })();
        result.map_err(|e| {
            let _ = fs::remove_file(&temporary);
            format!("cannot write {}: {e}", self.path.display())
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// The wasmtime version the code is compiled by (part of the key; wasmtime
/// also refuses artifacts of other versions).
const WASMTIME_VERSION: &str = "wasmtime 48.0.8";

/// A cache file or directory must belong to this user and be writable by
/// no one else: anyone who can write it can make us run their code.
fn trusted(metadata: &fs::Metadata, what: &str) -> Result<(), String> {
    let regular = if what == "file" {
        metadata.file_type().is_file()
    } else {
        metadata.is_dir()
    };
    if !regular {
        return Err(format!("the cache {what} is not a regular {what}"));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if metadata.uid() != me {
        return Err(format!("the cache {what} belongs to another user"));
    }
    if metadata.mode() & 0o022 != 0 {
        return Err(format!("the cache {what} is writable by other users"));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
