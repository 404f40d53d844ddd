//! The compiled-module cache: compiled code on disk, with what the
//! analysis and the rewrite made of the module, so a module's second load
//! (in this process or a later one) skips the validation, the analysis, the
//! rewrite and the compiler: a hit costs hashing the module and the code.
//!
//! An entry is two files in the cache directory, named by its key:
//! - `KEY.cwasm`: the compiled code exactly as wasmtime serialized it,
//!   which wasmtime maps into memory rather than copying;
//! - `KEY.entry`: our magic, a BLAKE3 digest of the rest, then the code
//!   file's length and BLAKE3 digest, then a record of the analysis (the
//!   module's layout and the rewrite's hooks, `postcard`-encoded).
//!
//! A cache file is machine code that wasmtime will run, or the plan of
//! every reset, so nothing in it is trusted blindly:
//! - the key is a BLAKE3 digest of everything that decides the entry: the
//!   module as loaded (its binary form), wasmtime's version and its engine
//!   compatibility hash (compiler, target, settings), the engine flavor
//!   (fuel metering), our own version, the entry format, and the source of
//!   the analysis and the rewrite (so a build whose analysis differs never
//!   reads another's records);
//! - the entry starts with our magic and a digest of the rest, checked
//!   before anything in it is used (a truncated, corrupt or foreign file is
//!   ignored and rebuilt), and it names the code's length and digest, which
//!   are checked over every byte of the code file, through the descriptor
//!   wasmtime then maps, before wasmtime sees a byte;
//! - both must be regular files owned by this user and writable by no one
//!   else, in a directory likewise (the cache is exactly as trusted as the
//!   user's own files; the directory is created `0700`, files `0600`);
//! - wasmtime re-checks its own header, version and configuration.
//!
//! Writes go to temporary files renamed into place, the code first and
//! the entry last, so a reader never sees half a file; concurrent writers
//! of one key are harmless (an entry paired with another writer's code
//! fails the digest check and is rebuilt). A file is never changed in
//! place, which is what lets wasmtime map the code file.

use std::fmt;
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::atomic_file::write_atomically;

/// The first bytes of every entry file (the trailing digits are the
/// format; format 01 was one framed file keyed by the rewritten module).
const MAGIC: &[u8; 16] = b"cleanslate-cw02\n";
const DIGEST_LEN: usize = 32;
/// The entry's fixed part after the magic: its digest, the code's length
/// and the code's digest.
const FIXED_LEN: usize = DIGEST_LEN + 8 + DIGEST_LEN;

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

/// One module's place in the cache, for one engine configuration.
pub(crate) struct CacheEntry {
    /// `KEY.entry`: the framed record.
    path: PathBuf,
    /// `KEY.cwasm`: the compiled code.
    code: PathBuf,
}

/// What a trustworthy entry holds.
pub(crate) struct Found {
    /// The record stored with the code, checked against the entry's digest.
    pub record: Vec<u8>,
    /// The code file, open, every byte of it checked against the entry's
    /// digest through this same descriptor.
    pub code: fs::File,
}

/// The digest a module is known by in the cache (of its binary form).
pub(crate) fn module_digest(binary: &[u8]) -> [u8; DIGEST_LEN] {
    blake3::hash(binary).into()
}

impl CacheEntry {
    /// The entry for the module whose [`module_digest`] is `module`,
    /// compiled by `engine` (`flavor` tells apart engines whose
    /// compatibility hash could coincide).
    pub(crate) fn new(
        dir: &Path,
        module: &[u8; DIGEST_LEN],
        engine: &wasmtime::Engine,
        flavor: impl Hash,
    ) -> Self {
        let mut config = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut config);
        flavor.hash(&mut config);
        let mut key = blake3::Hasher::new_derive_key("cleanslate compiled-module cache key");
        key.update(&MAGIC[..]);
        key.update(module);
        key.update(&config.finish().to_le_bytes());
        key.update(&analysis_fingerprint());
        for text in [WASMTIME_VERSION, env!("CARGO_PKG_VERSION")] {
            key.update(&(text.len() as u64).to_le_bytes());
            key.update(text.as_bytes());
        }
        let key = key.finalize().to_hex();
        CacheEntry {
            path: dir.join(format!("{key}.entry")),
            code: dir.join(format!("{key}.cwasm")),
        }
    }

    /// The record and the code file, if trustworthy files hold them; `Err`
    /// says why an entry that exists was not used. `Ok(None)`: no entry.
    ///
    /// The directory and the files are opened without following links, and
    /// the checks and the reads use those same descriptors: what was checked
    /// is what is read (and what wasmtime maps), whatever happens to the
    /// paths meanwhile.
    pub(crate) fn read(&self) -> Result<Option<Found>, String> {
        use rustix::fs::{Mode, OFlags};
        use rustix::io::Errno;
        let (Some(dir_path), Some(name), Some(code_name)) = (
            self.path.parent(),
            self.path.file_name(),
            self.code.file_name(),
        ) else {
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
        let open = |name: &std::ffi::OsStr, what: &str| {
            // NONBLOCK: a FIFO planted under the name must not block the
            // open; it is then refused as not a regular file.
            let file =
                match rustix::fs::openat(&dir, name, no_follow | OFlags::NONBLOCK, Mode::empty()) {
                    Ok(file) => file,
                    Err(Errno::NOENT) => return Ok(None),
                    Err(Errno::LOOP) => {
                        return Err(format!("the cache {what} is not a regular file"));
                    }
                    Err(e) => return Err(format!("cannot open the cache {what}: {e}")),
                };
            let stat = rustix::fs::fstat(&file)
                .map_err(|e| format!("cannot stat the cache {what}: {e}"))?;
            trusted(&stat, Kind::File)?;
            Ok(Some((fs::File::from(file), stat.st_size)))
        };
        let Some((mut file, _)) = open(name, "file")? else {
            return Ok(None);
        };
        #[cfg(test)]
        tests::after_the_checks();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes)
            .map_err(|e| format!("cannot read it: {e}"))?;
        let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
            return Err("not a cleanslate cache file (bad header)".into());
        };
        if rest.len() < FIXED_LEN {
            return Err("truncated".into());
        }
        let (digest, payload) = rest.split_at(DIGEST_LEN);
        if blake3::hash(payload).as_bytes().as_slice() != digest {
            return Err("corrupt (checksum mismatch)".into());
        }
        let (code_len, payload) = payload.split_at(8);
        let (code_digest, record) = payload.split_at(DIGEST_LEN);
        let code_len = u64::from_le_bytes(code_len.try_into().unwrap_or_default());
        let Some((mut code, size)) = open(code_name, "code file")? else {
            return Err("its compiled code file is missing".into());
        };
        if u64::try_from(size).ok() != Some(code_len) {
            return Err(format!(
                "its compiled code is corrupt (checksum mismatch: {size} bytes, not {code_len})"
            ));
        }
        let mut hasher = blake3::Hasher::new();
        let mut buffer = vec![0; 1 << 20];
        let mut read = 0u64;
        loop {
            let n = std::io::Read::read(&mut code, &mut buffer)
                .map_err(|e| format!("cannot read the compiled code: {e}"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            read += n as u64;
        }
        if read != code_len || hasher.finalize().as_bytes().as_slice() != code_digest {
            return Err("its compiled code is corrupt (checksum mismatch)".into());
        }
        Ok(Some(Found {
            record: record.to_vec(),
            code,
        }))
    }

    /// Store `code` (wasmtime's serialized module) with `record`.
    pub(crate) fn write(&self, record: &[u8], code: &[u8]) -> Result<(), String> {
        let dir = self
            .path
            .parent()
            .ok_or("the cache path has no directory")?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut entry = Vec::with_capacity(MAGIC.len() + FIXED_LEN + record.len());
        entry.extend_from_slice(MAGIC);
        entry.extend_from_slice(&[0; DIGEST_LEN]);
        entry.extend_from_slice(&(code.len() as u64).to_le_bytes());
        entry.extend_from_slice(blake3::hash(code).as_bytes());
        entry.extend_from_slice(record);
        let digest = blake3::hash(&entry[MAGIC.len() + DIGEST_LEN..]);
        entry[MAGIC.len()..MAGIC.len() + DIGEST_LEN].copy_from_slice(digest.as_bytes());
        // The code first: an entry is only ever seen with the code it names
        // in place (or with another writer's, which its digest refuses).
        write_file(&self.code, code)?;
        write_file(&self.path, &entry)
    }

    /// The entry file (the code file sits next to it, `.cwasm`).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// `bytes` as the file `path`, whole or not at all.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    write_atomically(path, |out| out.write_all(bytes))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A digest of the source code that decides what an entry's record says
/// (the validation, the analysis, the rewrite and their types): part of
/// the key, so that a build whose analysis changed, even without a version
/// change, never trusts a record another build wrote.
fn analysis_fingerprint() -> [u8; DIGEST_LEN] {
    static FINGERPRINT: std::sync::OnceLock<[u8; DIGEST_LEN]> = std::sync::OnceLock::new();
    *FINGERPRINT.get_or_init(|| {
        let sources = [
            include_str!("mod.rs"),
            include_str!("cache.rs"),
            include_str!("wire.rs"),
            include_str!("instrument.rs"),
            include_str!("layout/mod.rs"),
            include_str!("layout/mutations.rs"),
            include_str!("layout/sections.rs"),
            include_str!("layout/segments.rs"),
            include_str!("../engine/features.rs"),
            include_str!("../value.rs"),
        ];
        let mut hasher = blake3::Hasher::new();
        for source in sources {
            hasher.update(&(source.len() as u64).to_le_bytes());
            hasher.update(source.as_bytes());
        }
        hasher.finalize().into()
    })
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

    fn entry(dir: &Path, name: &str) -> CacheEntry {
        CacheEntry {
            path: dir.join(format!("{name}.entry")),
            code: dir.join(format!("{name}.cwasm")),
        }
    }

    /// The record and the code, as read.
    type Read = Option<(Vec<u8>, Vec<u8>)>;

    fn read(entry: &CacheEntry) -> Result<Read, String> {
        entry.read().map(|found| {
            found.map(|mut f| {
                let mut code = Vec::new();
                std::io::Seek::rewind(&mut f.code).unwrap();
                std::io::Read::read_to_end(&mut f.code, &mut code).unwrap();
                (f.record, code)
            })
        })
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("cleanslate-cache-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn what_is_written_is_read_back() {
        let dir = temp_dir("roundtrip");
        let entry = entry(&dir, "entry");
        assert_eq!(read(&entry), Ok(None));
        entry.write(b"the record", b"the code").unwrap();
        assert_eq!(
            read(&entry),
            Ok(Some((b"the record".to_vec(), b"the code".to_vec())))
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damaged_or_missing_code_is_refused() {
        let dir = temp_dir("code");
        let entry = entry(&dir, "entry");
        entry.write(b"record", b"some compiled code").unwrap();
        fs::write(&entry.code, b"some compiled cod!").unwrap();
        assert!(read(&entry).unwrap_err().contains("checksum"));
        fs::write(&entry.code, b"some compiled").unwrap();
        assert!(read(&entry).unwrap_err().contains("checksum"));
        fs::set_permissions(&entry.code, fs::Permissions::from_mode(0o622)).unwrap();
        assert!(
            read(&entry)
                .unwrap_err()
                .contains("writable by other users")
        );
        fs::remove_file(&entry.code).unwrap();
        assert!(read(&entry).unwrap_err().contains("missing"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_key_follows_the_module_and_the_flavor() {
        let engine = wasmtime::Engine::default();
        let dir = Path::new("/cache");
        let a = module_digest(b"\0asm module a");
        let b = module_digest(b"\0asm module b");
        let path = |m, fuel: bool| CacheEntry::new(dir, m, &engine, fuel).path;
        assert_eq!(path(&a, false), path(&a, false));
        assert_ne!(path(&a, false), path(&b, false));
        assert_ne!(path(&a, false), path(&a, true));
        let entry = CacheEntry::new(dir, &a, &engine, false);
        assert_eq!(entry.code.with_extension("entry"), entry.path);
    }

    #[test]
    fn a_file_swapped_in_after_the_checks_is_never_read() {
        let dir = temp_dir("race");
        let entry = entry(&dir, "entry");
        entry.write(b"checked record", b"code").unwrap();
        // Another user's file, well framed, replaces the entry once the
        // checks have passed.
        let planted = self::entry(&dir, "planted");
        planted.write(b"someone else's record", b"code").unwrap();
        fs::set_permissions(&planted.path, fs::Permissions::from_mode(0o666)).unwrap();
        let (from, to) = (planted.path.clone(), entry.path.clone());
        BETWEEN.with(|b| *b.borrow_mut() = Some(Box::new(move || fs::rename(from, to).unwrap())));
        assert_eq!(
            read(&entry),
            Ok(Some((b"checked record".to_vec(), b"code".to_vec())))
        );
        // And once planted, it is refused.
        assert!(
            read(&entry)
                .unwrap_err()
                .contains("writable by other users")
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_are_not_followed() {
        let dir = temp_dir("link");
        let real = entry(&dir.join("real"), "entry");
        real.write(b"record", b"code").unwrap();
        std::os::unix::fs::symlink(dir.join("real"), dir.join("linked")).unwrap();
        let through_dir_link = entry(&dir.join("linked"), "entry");
        assert!(
            read(&through_dir_link)
                .unwrap_err()
                .contains("not a regular directory")
        );
        std::os::unix::fs::symlink(&real.path, dir.join("real/link.entry")).unwrap();
        let file_link = entry(&dir.join("real"), "link");
        assert!(read(&file_link).unwrap_err().contains("not a regular file"));
        // A link in place of the code file is refused too.
        fs::copy(&real.path, dir.join("real/code-link.entry")).unwrap();
        std::os::unix::fs::symlink(&real.code, dir.join("real/code-link.cwasm")).unwrap();
        let code_link = entry(&dir.join("real"), "code-link");
        assert!(read(&code_link).unwrap_err().contains("not a regular file"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
