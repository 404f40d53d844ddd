//! Fails in every way on request; the tests check each failure is typed
//! and that the sandbox is clean afterwards. The input names the failure.
#![no_std]
extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

/// State a failing call leaves behind; it must be gone after the reset.
static mut SECRET_WRITES: u32 = 0;

fn misbehave(how: &[u8]) -> Result<Vec<u8>, String> {
    leave_a_trace();
    match how {
        b"ok" => Ok(b"fine".to_vec()),
        b"error" => Err(String::from("you asked for an error")),
        b"panic" => panic!("you asked for a panic"),
        b"oom" => {
            // More than any sandbox memory limit the tests use.
            let mut hog: Vec<u8> = Vec::new();
            hog.resize(1 << 30, 1);
            Ok(hog)
        }
        b"recurse" => Ok(recurse(u64::MAX).to_le_bytes().to_vec()),
        b"loop" => loop {
            core::hint::spin_loop();
        },
        other => Err(alloc::format!(
            "unknown failure {:?}",
            String::from_utf8_lossy(other)
        )),
    }
}

/// How many traces earlier calls left: 0 in a clean slate.
fn traces(_: &[u8]) -> Result<Vec<u8>, String> {
    // SAFETY: wasm guests are single-threaded; nothing else accesses it.
    let writes = unsafe { SECRET_WRITES };
    Ok(writes.to_le_bytes().to_vec())
}

fn leave_a_trace() {
    // SAFETY: as in `traces`.
    unsafe { SECRET_WRITES += 1 };
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if depth == 0 {
        return 0;
    }
    // A frame the optimiser cannot fold away.
    let frame = core::hint::black_box([depth; 16]);
    recurse(depth - 1).wrapping_add(frame[depth as usize % 16])
}

cleanslate_guest::export_bytes!(misbehave, traces);
