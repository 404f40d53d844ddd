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
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
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
    ///
    /// The directory and the file are opened without following links, and
    /// the checks and the read use those same descriptors: what was checked
    /// is what is read, whatever happens to the paths meanwhile.
    pub(crate) fn read(&self) -> Result<Option<Vec<u8>>, String> {
        use rustix::fs::{Mode, OFlags};
        use rustix::io::Errno;
        let (Some(dir_path), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return Err(format!("{} is not a file path", self.path.display()));
        };
        let no_follow = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let dir = match rustix::fs::open(dir_path, no_follow | OFlags::DIRECTORY, Mode::empty()) {
            Ok(dir) => dir,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP | Errno::NOTDIR) => {
                return Err("the cache directory is not a regular directory".into());
            }
            Err(e) => return Err(format!("cannot open the cache directory: {e}")),
        };
        let dir_stat =
            rustix::fs::fstat(&dir).map_err(|e| format!("cannot stat the cache directory: {e}"))?;
        trusted(&dir_stat, Kind::Directory)?;
        // NONBLOCK: a FIFO planted under the name must not block the open;
        // it is then refused as not a regular file.
        let file = match rustix::fs::openat(&dir, name, no_follow | OFlags::NONBLOCK, Mode::empty())
        {
            Ok(file) => file,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => return Err("the cache file is not a regular file".into()),
            Err(e) => return Err(format!("cannot open it: {e}")),
        };
        let file_stat = rustix::fs::fstat(&file).map_err(|e| format!("cannot stat it: {e}"))?;
        trusted(&file_stat, Kind::File)?;
        #[cfg(test)]
        tests::after_the_checks();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut fs::File::from(file), &mut bytes)
            .map_err(|e| format!("cannot read it: {e}"))?;
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

#[derive(Clone, Copy)]
enum Kind {
    File,
    Directory,
}

/// A cache file or directory must belong to this user and be writable by
/// no one else: anyone who can write it can make us run their code.
fn trusted(stat: &rustix::fs::Stat, kind: Kind) -> Result<(), String> {
    let file_type = rustix::fs::FileType::from_raw_mode(stat.st_mode);
    let (regular, what) = match kind {
        Kind::File => (file_type == rustix::fs::FileType::RegularFile, "file"),
        Kind::Directory => (file_type == rustix::fs::FileType::Directory, "directory"),
    };
    if !regular {
        return Err(format!("the cache {what} is not a regular {what}"));
    }
    if stat.st_uid != rustix::process::geteuid().as_raw() {
        return Err(format!("the cache {what} belongs to another user"));
    }
    if stat.st_mode & 0o022 != 0 {
        return Err(format!("the cache {what} is writable by other users"));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::os::unix::fs::PermissionsExt;

    thread_local! {
        /// Runs once between the trust checks and the read: a stand-in for
        /// another process racing the cache.
        static BETWEEN: RefCell<Option<Box<dyn FnOnce()>>> = RefCell::new(None);
    }

    pub(super) fn after_the_checks() {
        if let Some(race) = BETWEEN.with(|b| b.borrow_mut().take()) {
            race();
        }
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&Sha256::digest(payload));
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn a_file_swapped_in_after_the_checks_is_never_read() {
        let dir =
            std::env::temp_dir().join(format!("cleanslate-cache-race-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let entry = CacheEntry {
            path: dir.join("entry.cwasm"),
        };
        entry.write(b"checked code").unwrap();
        // Another user's file, well framed, replaces the entry once the
        // checks have passed.
        let planted = dir.join("planted");
        fs::write(&planted, framed(b"someone else's code")).unwrap();
        fs::set_permissions(&planted, fs::Permissions::from_mode(0o666)).unwrap();
        let (from, to) = (planted.clone(), entry.path.clone());
        BETWEEN.with(|b| *b.borrow_mut() = Some(Box::new(move || fs::rename(from, to).unwrap())));
        let read = entry.read();
        assert_eq!(read, Ok(Some(b"checked code".to_vec())));
        // And once planted, it is refused.
        assert!(
            entry
                .read()
                .unwrap_err()
                .contains("writable by other users")
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_are_not_followed() {
        let dir =
            std::env::temp_dir().join(format!("cleanslate-cache-link-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let real = CacheEntry {
            path: dir.join("real/entry.cwasm"),
        };
        real.write(b"code").unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("linked")).unwrap();
        let through_dir_link = CacheEntry {
            path: dir.join("linked/entry.cwasm"),
        };
        assert!(
            through_dir_link
                .read()
                .unwrap_err()
                .contains("not a regular directory")
        );
        std::os::unix::fs::symlink(&real.path, dir.join("real/link.cwasm")).unwrap();
        let file_link = CacheEntry {
            path: dir.join("real/link.cwasm"),
        };
        assert!(file_link.read().unwrap_err().contains("not a regular file"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
