//! Memories larger than their data: state beyond the data segments (written
//! by init or by calls) is captured, restored and verified without reading
//! untouched memory — and nothing is missed because of that.

mod common;

use cleanslate::{ErrorKind, Fault, Runtime, Sandbox, Status, Val, Verify};
use common::on_every_path;

const FAR: i32 = 8 << 20;
const FARTHER: i32 = 12 << 20;

const GUEST: &str = r#"(module
    (memory 256)
    (data (i32.const 0) "header")
    (func (export "init") (i32.store (i32.const 0x800000) (i32.const 77)))
    (func (export "write") (param i32 i32) (i32.store (local.get 0) (local.get 1)))
    (func (export "write_then_trap") (param i32 i32) (i32.store (local.get 0) (local.get 1)) unreachable)
    (func (export "read") (param i32) (result i32) (i32.load (local.get 0))))"#;

#[test]
fn state_beyond_the_data_segments_is_captured_and_restored_on_every_path() {
    let module = Runtime::new().unwrap().load_bytes(GUEST).unwrap();
    on_every_path(|path| {
        let build = || {
            Sandbox::builder(&module)
                .init("init")
                .verify(Verify::Always)
                .reset_strategy(path.strategy)
                .build()
                .unwrap()
        };
        let mut sandbox = build();
        let read = |s: &mut Sandbox, at: i32| s.call_typed::<i32, i32>("read", at).unwrap();
        for round in 0..20 {
            sandbox
                .call("write", &[Val::I32(FAR), Val::I32(round)])
                .unwrap();
            assert_eq!(
                read(&mut sandbox, FAR),
                77,
                "init's write beyond the data is the clean slate"
            );
            sandbox
                .call("write", &[Val::I32(FARTHER + round * 4096), Val::I32(9)])
                .unwrap();
            assert_eq!(read(&mut sandbox, FARTHER + round * 4096), 0);
            let err = sandbox
                .call("write_then_trap", &[Val::I32(FARTHER), Val::I32(5)])
                .unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::Trap(_)), "{err}");
            assert_eq!(read(&mut sandbox, FARTHER), 0);
        }
        let twin = build().snapshot().unwrap();
        assert_eq!(sandbox.snapshot().unwrap(), twin);
        assert_eq!(
            sandbox.snapshot().unwrap().memory(0).unwrap()[FAR as usize],
            77
        );
    });
}

#[test]
fn verification_catches_corruption_in_memory_nothing_ever_touched() {
    // The injected fault flips the last byte of the 16 MiB memory: a page no
    // call and no snapshot ever touched. The narrowed check must still see it.
    let module = Runtime::new().unwrap().load_bytes(GUEST).unwrap();
    on_every_path(|path| {
        let mut sandbox = Sandbox::builder(&module)
            .verify(Verify::Always)
            .reset_strategy(path.strategy)
            .build()
            .unwrap();
        sandbox.inject_fault(Fault::CorruptMemory);
        let err = sandbox
            .call("write", &[Val::I32(FAR), Val::I32(1)])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ResetFailed, "{err}");
        assert!(
            err.to_string().contains("0xffffff"),
            "names the last byte: {err}"
        );
        assert_eq!(sandbox.status(), Status::Unrecoverable);
    });
}

#[test]
fn init_changes_inside_the_data_segments_are_part_of_the_snapshot() {
    // Three pages of data at 64 KiB; init overwrites a word in the middle
    // page. Capture takes unwritten data pages from the module's own image
    // and the written one from memory: both must end up in the snapshot.
    let data: String = (0..3 * 4096)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let wat = format!(
        r#"(module
            (memory 64)
            (data (i32.const 0x10000) "{data}")
            (func (export "init") (i32.store (i32.const 0x11008) (i32.const 0x01020304)))
            (func (export "read") (param i32) (result i32) (i32.load (local.get 0)))
            (func (export "scribble") (param i32)
                (i32.store (i32.const 0x10000) (local.get 0))
                (i32.store (i32.const 0x11008) (local.get 0))
                (i32.store (i32.const 0x12000) (local.get 0)))
            (func (export "grow_and_scribble") (param i32)
                (drop (memory.grow (i32.const 1)))
                (i32.store (i32.const 0x11008) (local.get 0))))"#
    );
    let module = Runtime::new().unwrap().load_bytes(wat).unwrap();
    let word = |at: usize| {
        i32::from_le_bytes(
            data.as_bytes()[at - 0x10000..at - 0x10000 + 4]
                .try_into()
                .unwrap(),
        )
    };
    on_every_path(|path| {
        let mut sandbox = Sandbox::builder(&module)
            .init("init")
            .verify(Verify::Always)
            .reset_strategy(path.strategy)
            .build()
            .unwrap();
        for round in 0..10 {
            let f = if round % 3 == 2 {
                "grow_and_scribble"
            } else {
                "scribble"
            };
            sandbox.call(f, &[Val::I32(-1)]).unwrap();
            let read = |s: &mut Sandbox, at: i32| s.call_typed::<i32, i32>("read", at).unwrap();
            assert_eq!(
                read(&mut sandbox, 0x11008),
                0x01020304,
                "init's change inside the data"
            );
            assert_eq!(
                read(&mut sandbox, 0x10000),
                word(0x10000),
                "unwritten data page"
            );
            assert_eq!(
                read(&mut sandbox, 0x12000),
                word(0x12000),
                "unwritten data page"
            );
        }
    });
}
