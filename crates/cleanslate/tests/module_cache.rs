//! The compiled-module cache: miss then hit across runtimes, corrupt,
//! truncated, missing, foreign and untrusted files (of the entry or of
//! its code) ignored and rebuilt, a different engine
//! configuration kept apart, a large module through the cache.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cleanslate::{CacheStatus, Runtime, RuntimeConfig, Sandbox, Val};

const WAT: &str = r#"(module
  (memory 1)
  (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
  (func (export "poke") (param i32) (result i32)
    (local $old i32)
    (local.set $old (i32.load (i32.const 0)))
    (i32.store (i32.const 0) (local.get 0))
    (local.get $old)))"#;

/// A fresh cache directory per test.
fn cache_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "cleanslate-cache-test-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn runtime(dir: &Path) -> Runtime {
    Runtime::with_config(RuntimeConfig::default().module_cache(dir)).unwrap()
}

/// The files with `extension` in the cache: an entry is a `.entry` (our
/// header, digests, the analysis) and a `.cwasm` (wasmtime's code).
fn files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

fn cache_files(dir: &Path) -> Vec<PathBuf> {
    files(dir, "cwasm")
}

fn entry_files(dir: &Path) -> Vec<PathBuf> {
    files(dir, "entry")
}

/// The module works, and resets, whatever the cache did.
fn assert_works(runtime: &Runtime, wat: &str) {
    let module = runtime.load_bytes(wat).unwrap();
    let mut sandbox = Sandbox::builder(&module).build().unwrap();
    assert_eq!(
        sandbox.call("add", &[Val::I32(2), Val::I32(3)]).unwrap(),
        [Val::I32(5)]
    );
    assert_eq!(sandbox.call("poke", &[Val::I32(7)]).unwrap(), [Val::I32(0)]);
    assert_eq!(sandbox.call("poke", &[Val::I32(8)]).unwrap(), [Val::I32(0)]);
}

#[test]
fn a_miss_stores_and_a_new_runtime_hits() {
    let dir = cache_dir("hit");
    let first = runtime(&dir).load_bytes(WAT).unwrap();
    assert_eq!(first.cache_status(), &CacheStatus::Miss);
    let files = [cache_files(&dir), entry_files(&dir)].concat();
    assert_eq!(files.len(), 2);
    for file in files {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "cache files are private");
    }
    let second = runtime(&dir);
    assert_eq!(
        second.load_bytes(WAT).unwrap().cache_status(),
        &CacheStatus::Hit
    );
    assert_works(&second, WAT);
    // Another module gets another file.
    let other = WAT.replace("i32.add", "i32.sub");
    assert_eq!(
        second.load_bytes(&other).unwrap().cache_status(),
        &CacheStatus::Miss
    );
    assert_eq!(cache_files(&dir).len(), 2);
    assert_eq!(entry_files(&dir).len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn without_a_cache_nothing_is_written() {
    let runtime = Runtime::new().unwrap();
    assert_eq!(
        runtime.load_bytes(WAT).unwrap().cache_status(),
        &CacheStatus::Off
    );
}

/// Which file of the one cache entry to damage.
#[derive(Clone, Copy)]
enum File {
    Entry,
    Code,
}

/// Damage one file of the one cache entry with `damage`, then load: the
/// entry is ignored with `reason`, the module compiles and works, and the
/// entry is replaced by a good one.
fn assert_rebuilt(name: &str, which: File, damage: impl Fn(&Path), reason: &str) {
    let dir = cache_dir(name);
    runtime(&dir).load_bytes(WAT).unwrap();
    let file = match which {
        File::Entry => entry_files(&dir).remove(0),
        File::Code => cache_files(&dir).remove(0),
    };
    damage(&file);
    let runtime = runtime(&dir);
    let status = runtime.load_bytes(WAT).unwrap().cache_status().clone();
    match &status {
        CacheStatus::Rebuilt(why) => assert!(why.contains(reason), "{why}"),
        other => panic!("expected a rebuild ({reason}), got {other:?}"),
    }
    assert_works(&runtime, WAT);
    assert_eq!(
        self::runtime(&dir).load_bytes(WAT).unwrap().cache_status(),
        &CacheStatus::Hit
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn flip_middle_byte(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(file, bytes).unwrap();
}

fn truncate(file: &Path) {
    let bytes = std::fs::read(file).unwrap();
    std::fs::write(file, &bytes[..bytes.len() / 3]).unwrap();
}

#[test]
fn a_corrupted_file_is_rebuilt() {
    assert_rebuilt("corrupt", File::Entry, flip_middle_byte, "checksum");
    assert_rebuilt("corrupt-code", File::Code, flip_middle_byte, "checksum");
}

#[test]
fn a_truncated_file_is_rebuilt() {
    assert_rebuilt("truncated", File::Code, truncate, "checksum");
    // "truncated" or a checksum mismatch, by where the cut falls.
    assert_rebuilt("truncated-entry", File::Entry, truncate, "");
}

#[test]
fn a_foreign_file_is_rebuilt() {
    assert_rebuilt(
        "foreign",
        File::Entry,
        |file| std::fs::write(file, b"\x7fELF not ours at all").unwrap(),
        "bad header",
    );
    // wasmtime's code, but not the code the entry names.
    assert_rebuilt(
        "foreign-code",
        File::Code,
        |file| {
            let other = cache_dir("foreign-code-other");
            runtime(&other)
                .load_bytes(WAT.replace("i32.add", "i32.sub"))
                .unwrap();
            std::fs::copy(cache_files(&other).remove(0), file).unwrap();
            std::fs::remove_dir_all(&other).unwrap();
        },
        "checksum",
    );
}

#[test]
fn a_file_others_can_write_is_not_trusted() {
    let writable = |file: &Path| {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o666)).unwrap()
    };
    assert_rebuilt("writable", File::Entry, writable, "writable by other users");
    assert_rebuilt(
        "writable-code",
        File::Code,
        writable,
        "writable by other users",
    );
}

#[test]
fn a_missing_code_file_is_rebuilt() {
    assert_rebuilt(
        "missing-code",
        File::Code,
        |file| std::fs::remove_file(file).unwrap(),
        "missing",
    );
}

// A well-formed entry whose code wasmtime refuses (which needs the
// entry's digests and record made as the cache makes them) is tested in
// the crate: module::tests::a_well_formed_entry_wasmtime_refuses_is_rebuilt.

#[test]
fn a_different_engine_configuration_gets_its_own_file() {
    let dir = cache_dir("config");
    let runtime = runtime(&dir);
    let module = runtime.load_bytes(WAT).unwrap();
    assert_eq!(cache_files(&dir).len(), 1);
    // Fuel metering compiles different code: a second file, not a reuse.
    let mut metered = Sandbox::builder(&module).fuel(1_000).build().unwrap();
    assert_eq!(
        metered.call("add", &[Val::I32(1), Val::I32(1)]).unwrap(),
        [Val::I32(2)]
    );
    assert_eq!(cache_files(&dir).len(), 2);
    // A new runtime finds both.
    let again = self::runtime(&dir);
    let module = again.load_bytes(WAT).unwrap();
    assert_eq!(module.cache_status(), &CacheStatus::Hit);
    let mut metered = Sandbox::builder(&module).fuel(1_000).build().unwrap();
    assert_eq!(
        metered.call("add", &[Val::I32(2), Val::I32(2)]).unwrap(),
        [Val::I32(4)]
    );
    assert_eq!(cache_files(&dir).len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unwritable_cache_directory_still_loads() {
    let blocker = cache_dir("unwritable");
    // A file where the directory should be: the store fails, the load works.
    std::fs::write(&blocker, b"in the way").unwrap();
    let runtime = runtime(&blocker.join("modules"));
    let module = runtime.load_bytes(WAT).unwrap();
    assert!(
        matches!(module.cache_status(), CacheStatus::NotStored(_)),
        "{:?}",
        module.cache_status()
    );
    assert_works(&runtime, WAT);
    std::fs::remove_file(&blocker).unwrap();
}

/// A generated module with many functions (about 1 MB of WAT) goes through
/// the cache: a hit gives a module that behaves like the compiled one.
#[test]
fn a_large_generated_module_goes_through_the_cache() {
    let mut wat = String::from("(module (memory 1)\n");
    for f in 0..1500 {
        wat.push_str(&format!(
            "(func $f{f} (export \"f{f}\") (param i32) (result i32) (local.get 0)"
        ));
        for k in 0..40 {
            wat.push_str(&format!(
                " (i32.const {}) (i32.add) (i32.const {}) (i32.xor)",
                f + k,
                k * 7
            ));
        }
        wat.push_str(")\n");
    }
    wat.push(')');
    assert!(wat.len() > 1_000_000);
    let dir = cache_dir("large");
    let compiled = runtime(&dir).load_bytes(&wat).unwrap();
    assert_eq!(compiled.cache_status(), &CacheStatus::Miss);
    let cached = runtime(&dir).load_bytes(&wat).unwrap();
    assert_eq!(cached.cache_status(), &CacheStatus::Hit);
    let mut a = Sandbox::builder(&compiled).build().unwrap();
    let mut b = Sandbox::builder(&cached).build().unwrap();
    for f in [0, 749, 1499] {
        let name = format!("f{f}");
        assert_eq!(
            a.call(&name, &[Val::I32(f)]).unwrap(),
            b.call(&name, &[Val::I32(f)]).unwrap()
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
