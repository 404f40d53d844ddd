//! Snapshots saved to a file and loaded with another load of the same
//! module (as another process would): the loaded snapshot is the saved
//! state, restoring it gives every part of that state back (memory bytes
//! and size, globals, tables, dropped segments), and every reset after it
//! returns there. A file that is missing, damaged, truncated or for another
//! module is refused with `invalid_snapshot` and changes nothing.

mod common;

use std::path::PathBuf;

use cleanslate::{ErrorKind, Module, ResetStrategy, Runtime, Sandbox, Snapshot, Val};
use common::on_both_strategies;

/// `setup` changes every kind of state; `probe` reports it; `scribble`
/// changes it all again and traps.
const MODULE: &str = r#"(module
  (memory (export "memory") 1 100)
  (global $g (export "g") (mut i32) (i32.const 0))
  (global $h (mut i64) (i64.const 7))
  (table $t 4 10 funcref)
  (type $answer (func (result i32)))
  (elem declare func $one $two)
  (data $d "passive")
  (func $one (result i32) (i32.const 1))
  (func $two (result i32) (i32.const 2))
  (func (export "setup")
    (i32.store (i32.const 100) (i32.const 0xdeadbeef))
    (global.set $g (i32.const 41))
    (global.set $h (i64.const -5))
    (table.set $t (i32.const 0) (ref.func $two))
    (drop (table.grow $t (ref.func $one) (i32.const 2)))
    (drop (memory.grow (i32.const 2)))
    (i32.store (i32.const 70000) (i32.const 77))
    (data.drop $d))
  ;; memory[100] + memory[70000] + g + h + table[0]() + table[5]() +
  ;; memory.size * 1000 + table.size * 100000
  (func (export "probe") (result i64)
    (i64.add
      (i64.extend_i32_u (i32.add (i32.add (i32.add
        (i32.load (i32.const 100)) (i32.load (i32.const 70000)))
        (i32.add (global.get $g) (call_indirect $t (type $answer) (i32.const 0))))
        (i32.add (call_indirect $t (type $answer) (i32.const 5))
          (i32.add (i32.mul (memory.size) (i32.const 1000))
                   (i32.mul (table.size $t) (i32.const 100000))))))
      (global.get $h)))
  ;; Traps once the segment is dropped.
  (func (export "init_segment")
    (memory.init $d (i32.const 0) (i32.const 0) (i32.const 7)))
  (func (export "scribble")
    (memory.fill (i32.const 0) (i32.const 0xff) (i32.const 200000))
    (global.set $g (i32.const -1))
    (global.set $h (i64.const -1))
    (table.set $t (i32.const 0) (ref.null func))
    (drop (memory.grow (i32.const 5)))
    (drop (table.grow $t (ref.null func) (i32.const 3)))
    unreachable))"#;

/// A private folder for one test's files.
fn folder(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "cleanslate-snapshot-files-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Each test loads the module twice, on two runtimes: one to save from,
/// one to load into, as two processes would.
fn load() -> Module {
    Runtime::new().unwrap().load_bytes(MODULE).unwrap()
}

/// A snapshot after `setup`, taken in a sandbox of `module`.
fn set_up(module: &Module, strategy: ResetStrategy) -> Snapshot {
    let mut sandbox = Sandbox::builder(module)
        .reset_strategy(strategy)
        .build()
        .unwrap();
    let mut session = sandbox.session();
    session.call("setup", &[]).unwrap();
    session.snapshot().unwrap()
}

/// What `probe` returns in the state `setup` leaves.
const SET_UP: i64 = 0xdeadbeef + 77 + 41 + 2 + 1 + 3 * 1000 + 6 * 100_000 - 5;

fn probe(sandbox: &mut Sandbox) -> i64 {
    match sandbox.call("probe", &[]).unwrap().as_slice() {
        [Val::I64(v)] => *v,
        other => panic!("probe returned {other:?}"),
    }
}

#[test]
fn a_loaded_snapshot_is_the_saved_state_and_every_reset_returns_to_it() {
    on_both_strategies(|strategy| {
        let dir = folder(&format!("round-trip-{strategy:?}"));
        let path = dir.join("setup.snapshot");
        let saved = {
            let module = load();
            let saved = set_up(&module, strategy);
            saved.save(&path).unwrap();
            saved
        };

        let module = load();
        let loaded = Snapshot::load(&module, &path).unwrap();
        assert_eq!(loaded.differences(&saved), Vec::<String>::new());
        assert_eq!(loaded.memory_sizes(), vec![3 << 16]);

        let mut sandbox = Sandbox::builder(&module)
            .reset_strategy(strategy)
            .build()
            .unwrap();
        sandbox.restore(&loaded).unwrap();
        // The twin: the state a sandbox of the first load reached itself.
        let check = |sandbox: &mut Sandbox| {
            let now = sandbox.snapshot().unwrap();
            assert_eq!(now.differences(&saved), Vec::<String>::new());
            assert_eq!(now.memory_sizes(), saved.memory_sizes());
        };
        check(&mut sandbox);
        assert_eq!(probe(&mut sandbox), SET_UP);
        let err = sandbox.call("init_segment", &[]).unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::Trap(_)),
            "the segment stays dropped: {err}"
        );
        check(&mut sandbox);
        let err = sandbox.call("scribble", &[]).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Trap(_)), "{err}");
        check(&mut sandbox);
        assert_eq!(probe(&mut sandbox), SET_UP);
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn only_the_populated_pages_are_stored() {
    let module = Runtime::new()
        .unwrap()
        .load_bytes(
            r#"(module (memory 256)
              (func (export "touch") (i32.store (i32.const 8000000) (i32.const 1))))"#,
        )
        .unwrap();
    let mut sandbox = Sandbox::builder(&module).build().unwrap();
    let snapshot = {
        let mut session = sandbox.session();
        session.call("touch", &[]).unwrap();
        session.snapshot().unwrap()
    };
    let dir = folder("sparse");
    snapshot.save(dir.join("s")).unwrap();
    let len = std::fs::metadata(dir.join("s")).unwrap().len();
    assert!(
        len < 64 * 1024,
        "a 16 MiB memory with one written page took {len} bytes"
    );
    let loaded = Snapshot::load(&module, dir.join("s")).unwrap();
    assert_eq!(loaded, snapshot);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Load `bytes` as a snapshot file; it must be refused as invalid, saying
/// `why`.
fn assert_refused(module: &Module, bytes: &[u8], why: &str) {
    let dir = folder("refused");
    std::fs::write(dir.join("s"), bytes).unwrap();
    let err = Snapshot::load(module, dir.join("s")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidSnapshot, "{err}");
    assert!(err.to_string().contains(why), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damaged_truncated_foreign_and_missing_files_are_refused() {
    let module = load();
    let dir = folder("damaged");
    set_up(&module, ResetStrategy::Auto)
        .save(dir.join("good"))
        .unwrap();
    let good = std::fs::read(dir.join("good")).unwrap();

    assert_refused(&module, b"", "truncated");
    assert_refused(
        &module,
        b"not a snapshot at all, just text",
        "not a Cleanslate snapshot",
    );
    for cut in [20, 40, good.len() / 2, good.len() - 1] {
        assert_refused(&module, &good[..cut], "");
    }
    // A flipped byte in the header, in the memory bytes, in the digest.
    for at in [30, good.len() - 100, good.len() - 3] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        assert_refused(&module, &bad, "");
    }
    let mut longer = good.clone();
    longer.push(0);
    assert_refused(&module, &longer, "after its end");

    let other = Runtime::new()
        .unwrap()
        .load_bytes(MODULE.replace("\"passive\"", "\"passivE\""))
        .unwrap();
    assert_refused(&other, &good, "another module");

    let err = Snapshot::load(&module, dir.join("missing")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidSnapshot, "{err}");

    // The good file still loads: nothing above changed it.
    assert!(Snapshot::load(&module, dir.join("good")).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failed_save_leaves_no_file_behind() {
    let module = load();
    let snapshot = set_up(&module, ResetStrategy::Auto);
    let dir = folder("failed-save");
    let err = snapshot
        .save(dir.join("no-such-folder").join("s"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidSnapshot, "{err}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    // The file is written, then cannot be renamed over a folder: the
    // written file is removed.
    let occupied = dir.join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    std::fs::write(occupied.join("x"), b"").unwrap();
    let err = snapshot.save(&occupied).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidSnapshot, "{err}");
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["occupied"], "the partial file is removed");
    std::fs::remove_dir_all(&occupied).unwrap();
    // Saving over a file replaces it whole.
    std::fs::write(dir.join("s"), b"old").unwrap();
    snapshot.save(dir.join("s")).unwrap();
    assert_eq!(Snapshot::load(&module, dir.join("s")).unwrap(), snapshot);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["s"], "no partial file is left");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_snapshot_whose_module_is_gone_cannot_be_saved() {
    let snapshot = set_up(&load(), ResetStrategy::Auto);
    let err = snapshot.write_to(Vec::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidSnapshot, "{err}");
}
