//! The result record an export hands back: status, pointer, length, as
//! three little-endian u32s (docs/ABI.md).

use alloc::boxed::Box;
use alloc::vec::Vec;

/// The bytes are the output.
pub(crate) const STATUS_OK: u32 = 0;
/// The bytes are a UTF-8 error message.
pub(crate) const STATUS_ERROR: u32 = 1;

/// Leak `bytes` and a record describing them; return the record's address.
///
/// Nothing is freed: the sandbox resets memory after the call, which is
/// also why leaking is correct here rather than a shortcut.
pub(crate) fn leak_record(status: u32, bytes: Vec<u8>) -> u32 {
    let bytes = bytes.leak();
    let record = Box::leak(Box::new(encode(
        status,
        address(bytes.as_ptr()),
        bytes.len() as u32,
    )));
    address(record.as_ptr())
}

/// The record's bytes.
pub(crate) fn encode(status: u32, ptr: u32, len: u32) -> [u8; 12] {
    let mut record = [0u8; 12];
    record[0..4].copy_from_slice(&status.to_le_bytes());
    record[4..8].copy_from_slice(&ptr.to_le_bytes());
    record[8..12].copy_from_slice(&len.to_le_bytes());
    record
}

/// A pointer as the 32-bit offset the host sees. On wasm32 this is exact;
/// elsewhere (host-side unit tests) it is only a label.
pub(crate) fn address<T>(ptr: *const T) -> u32 {
    ptr as usize as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_three_little_endian_words() {
        assert_eq!(
            encode(STATUS_ERROR, 0x0102_0304, 5),
            [1, 0, 0, 0, 4, 3, 2, 1, 5, 0, 0, 0]
        );
    }
}
