//! The data ABI: how bytes cross the boundary between host and guest
//! (docs/ABI.md is the guest author's side of this).
//!
//! Every read or write of guest memory goes through [`GuestMemory`], which
//! checks the guest-chosen pointer and length against the memory's current
//! size first. A hostile guest can make a call fail with
//! [`ErrorKind::InvalidGuestOutput`] or [`ErrorKind::OutputTooLarge`], never
//! make the host read outside its memory or allocate without bound.

use std::fmt::Display;

use crate::error::{Error, ErrorKind};
use crate::value::{Signature, ValType};

/// The export a data guest provides so the host can place input in its
/// memory: `(param i32 len) (result i32 ptr)`.
pub(crate) const ALLOC_EXPORT: &str = "cleanslate_alloc";
/// The import module of the functions the host offers every guest.
pub(crate) const IMPORT_MODULE: &str = "cleanslate";
/// Default cap on what a guest may hand the host in one piece.
pub const DEFAULT_OUTPUT_LIMIT: usize = 16 << 20;
/// Cap on a guest's panic or log message; longer ones are cut.
pub(crate) const MESSAGE_LIMIT: u32 = 64 * 1024;

/// Whether `signature` is a data function's: `(i32 ptr, i32 len) -> i32 record`.
pub(crate) fn is_data_signature(signature: &Signature) -> bool {
    signature.params() == [ValType::I32, ValType::I32] && signature.results() == [ValType::I32]
}

/// Whether `signature` is `cleanslate_alloc`'s: `(i32 len) -> i32 ptr`.
pub(crate) fn is_alloc_signature(signature: &Signature) -> bool {
    signature.params() == [ValType::I32] && signature.results() == [ValType::I32]
}

/// Status word of a result record: the bytes are the output.
const STATUS_OK: u32 = 0;
/// Status word of a result record: the bytes are an error message.
const STATUS_ERROR: u32 = 1;
/// A result record is three little-endian u32s: status, pointer, length.
const RECORD_LEN: u32 = 12;

/// A bounds-checked view of one guest memory: the one view every host
/// access to guest memory goes through — the data ABI's exchanges, host
/// functions ([`HostContext`](crate::HostContext)) and sessions
/// ([`Session`](crate::Session)). Every access checks its range against
/// the memory's current size with [`checked_range`] before touching a byte.
pub(crate) struct GuestMemory<'a> {
    bytes: &'a [u8],
    index: u32,
}

/// `address..address + len` as indices into a memory of `size` bytes, or
/// `None` if any byte of it lies outside (or the sum overflows).
fn checked_range(size: usize, address: u64, len: u64) -> Option<std::ops::Range<usize>> {
    let end = address.checked_add(len)?;
    if end > size as u64 {
        return None;
    }
    // Both fit: they are at most `size`, a usize.
    Some(address as usize..end as usize)
}

impl<'a> GuestMemory<'a> {
    /// A view of memory 0.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        GuestMemory::of(0, bytes)
    }

    /// A view of memory `index`, for error messages.
    pub(crate) fn of(index: u32, bytes: &'a [u8]) -> Self {
        GuestMemory { bytes, index }
    }

    /// The `len` bytes at `ptr`, or an `InvalidGuestOutput` error naming
    /// `what` if any of them lies outside the memory.
    pub(crate) fn read(&self, ptr: u32, len: u32, what: impl Display) -> Result<&'a [u8], Error> {
        checked_range(self.bytes.len(), ptr.into(), len.into())
            .map(|range| &self.bytes[range])
            .ok_or_else(|| out_of_bounds(what, ptr, len, self.bytes.len()))
    }

    /// The `len` bytes at `address`, asked for by the host (a session or a
    /// host function): out of range is [`ErrorKind::InvalidArguments`].
    /// Nothing is allocated here, so a huge `len` costs nothing.
    pub(crate) fn bytes_at(&self, address: u64, len: usize) -> Result<&'a [u8], Error> {
        checked_range(self.bytes.len(), address, len as u64)
            .map(|range| &self.bytes[range])
            .ok_or_else(|| host_out_of_bounds("read", self.index, address, len, self.bytes.len()))
    }

    /// The bytes of the NUL-terminated string at `address`, without the
    /// NUL, looking at most `max_len` bytes (and never past the memory's
    /// end) for the terminator.
    pub(crate) fn c_string_at(&self, address: u64, max_len: usize) -> Result<&'a [u8], Error> {
        let size = self.bytes.len();
        let start = checked_range(size, address, 0)
            .ok_or_else(|| host_out_of_bounds("read", self.index, address, 1, size))?
            .start;
        let window = &self.bytes[start..size.min(start.saturating_add(max_len))];
        match window.iter().position(|&b| b == 0) {
            Some(nul) => Ok(&window[..nul]),
            None => Err(Error::new(
                ErrorKind::InvalidArguments,
                format!(
                    "no NUL byte in the {} bytes at {address:#x} of memory {} (searched up to {}): raise max_len if the string is longer, or check that the address points at a C string",
                    window.len(),
                    self.index,
                    if window.len() == max_len {
                        format!("max_len {max_len}")
                    } else {
                        format!("the memory's end at {size:#x}")
                    }
                ),
            )),
        }
    }

    /// The little-endian u32 at `address`.
    pub(crate) fn u32_at(&self, address: u64) -> Result<u32, Error> {
        let bytes = self.bytes_at(address, 4)?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
    }

    /// The little-endian u64 at `address`.
    pub(crate) fn u64_at(&self, address: u64) -> Result<u64, Error> {
        let bytes = self.bytes_at(address, 8)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    }
}

/// A bounds-checked, writable view of one guest memory (see
/// [`GuestMemory`]; the same range check guards every write).
pub(crate) struct GuestMemoryMut<'a> {
    bytes: &'a mut [u8],
    index: u32,
}

impl<'a> GuestMemoryMut<'a> {
    /// A view of memory 0.
    pub(crate) fn new(bytes: &'a mut [u8]) -> Self {
        GuestMemoryMut::of(0, bytes)
    }

    /// A view of memory `index`, for error messages.
    pub(crate) fn of(index: u32, bytes: &'a mut [u8]) -> Self {
        GuestMemoryMut { bytes, index }
    }

    /// Copy `data` to `ptr`, refusing if the guest's allocator handed out a
    /// range that is not inside its memory.
    pub(crate) fn write(&mut self, ptr: u32, data: &[u8], what: impl Display) -> Result<(), Error> {
        let len = self.bytes.len();
        let range = checked_range(len, ptr.into(), data.len() as u64)
            .ok_or_else(|| out_of_bounds(what, ptr, data.len() as u32, len))?;
        self.bytes[range].copy_from_slice(data);
        Ok(())
    }

    /// Copy `data` to `address`, asked for by the host: out of range is
    /// [`ErrorKind::InvalidArguments`] and writes nothing.
    pub(crate) fn write_at(&mut self, address: u64, data: &[u8]) -> Result<(), Error> {
        let size = self.bytes.len();
        let range = checked_range(size, address, data.len() as u64)
            .ok_or_else(|| host_out_of_bounds("write", self.index, address, data.len(), size))?;
        self.bytes[range].copy_from_slice(data);
        Ok(())
    }
}

/// Access to the memories of one instance, by index: what a session (over
/// the sandbox's live instance) and a host function (over its caller)
/// hand to [`GuestMemory`] and [`GuestMemoryMut`].
pub(crate) trait GuestMemories {
    /// The export the running (or last) call entered.
    fn export(&self) -> &str;
    /// A view of memory `index`, or `InvalidArguments` if there is none.
    fn memory(&self, index: u32) -> Result<GuestMemory<'_>, Error>;
    /// A writable view of memory `index`, or `InvalidArguments`.
    fn memory_mut(&mut self, index: u32) -> Result<GuestMemoryMut<'_>, Error>;

    // The accessors below back both `Session`'s and `HostContext`'s public
    // methods of the same names, so the two APIs cannot drift apart in how
    // they check, copy or pick memory 0; each implementor only says how to
    // reach its memories.

    /// A copy of the `len` bytes at `address` of memory `memory`.
    fn read_memory_of(&self, memory: u32, address: u64, len: usize) -> Result<Vec<u8>, Error> {
        self.memory(memory)?
            .bytes_at(address, len)
            .map(<[u8]>::to_vec)
    }

    /// A copy of the NUL-terminated string at `address` of memory 0.
    fn read_c_string(&self, address: u64, max_len: usize) -> Result<Vec<u8>, Error> {
        self.memory(0)?
            .c_string_at(address, max_len)
            .map(<[u8]>::to_vec)
    }

    /// The little-endian u32 at `address` of memory 0.
    fn read_u32(&self, address: u64) -> Result<u32, Error> {
        self.memory(0)?.u32_at(address)
    }

    /// The little-endian u64 at `address` of memory 0.
    fn read_u64(&self, address: u64) -> Result<u64, Error> {
        self.memory(0)?.u64_at(address)
    }

    /// Copy `bytes` to `address` of memory `memory`.
    fn write_memory_of(&mut self, memory: u32, address: u64, bytes: &[u8]) -> Result<(), Error> {
        self.memory_mut(memory)?.write_at(address, bytes)
    }
}

/// The module has no memory `index`; it defines `count`.
pub(crate) fn no_such_memory(index: u32, count: usize) -> Error {
    let message = if count == 0 {
        "the module defines no memory, so there is no guest memory to read or write".to_string()
    } else {
        format!(
            "the module has no memory {index}: it defines {count}, so pass an index below {count} (0 is the first memory)"
        )
    };
    Error::new(ErrorKind::InvalidArguments, message)
}

fn out_of_bounds(what: impl Display, ptr: u32, len: u32, memory: usize) -> Error {
    Error::new(
        ErrorKind::InvalidGuestOutput,
        format!(
            "the guest gave {what} at {ptr:#x} with length {len}, which lies outside its {memory}-byte memory; nothing was read"
        ),
    )
}

fn host_out_of_bounds(verb: &str, index: u32, address: u64, len: usize, size: usize) -> Error {
    Error::new(
        ErrorKind::InvalidArguments,
        format!(
            "cannot {verb} {len} byte(s) at {address:#x} of memory {index}: the memory is {size} bytes ({} page(s) of 64 KiB) now, so that range ends past it and nothing was {}; stay below {size:#x} (check the address the guest gave, or let the guest grow its memory first)",
            size / 65536,
            if verb == "read" { "read" } else { "written" },
        ),
    )
}

/// What a data function's result record says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum GuestResult {
    /// Output bytes at (ptr, len).
    Output { ptr: u32, len: u32 },
    /// A UTF-8 error message at (ptr, len).
    Error { ptr: u32, len: u32 },
}

impl GuestResult {
    /// Decode the 12-byte record at `at`.
    pub(crate) fn decode(memory: &GuestMemory<'_>, at: u32) -> Result<GuestResult, Error> {
        let record = memory.read(at, RECORD_LEN, "a result record")?;
        let word = |i: usize| u32::from_le_bytes(record[i * 4..i * 4 + 4].try_into().unwrap());
        let (status, ptr, len) = (word(0), word(1), word(2));
        match status {
            STATUS_OK => Ok(GuestResult::Output { ptr, len }),
            STATUS_ERROR => Ok(GuestResult::Error { ptr, len }),
            other => Err(Error::new(
                ErrorKind::InvalidGuestOutput,
                format!(
                    "the guest's result record at {at:#x} has status {other}; only 0 (output) and 1 (error) exist (docs/ABI.md)"
                ),
            )),
        }
    }
}

/// Refuse a piece of guest data longer than `limit` before reading it.
/// `what` (like the other `what`s here) is only formatted on failure, so
/// callers pass `format_args!` and the success path allocates nothing.
pub(crate) fn check_size(what: impl Display, len: u64, limit: usize) -> Result<(), Error> {
    if len > limit as u64 {
        return Err(Error::new(
            ErrorKind::OutputTooLarge,
            format!(
                "{what} is {len} bytes, over the sandbox's output limit of {limit} bytes; raise output_limit if legitimate"
            ),
        ));
    }
    Ok(())
}

/// Pack a (pointer, length) pair the way host calls return it to the guest:
/// length in the high 32 bits, pointer in the low.
pub(crate) fn pack(ptr: u32, len: u32) -> i64 {
    ((u64::from(len) << 32) | u64::from(ptr)) as i64
}

/// A guest message (panic, log): lossy UTF-8, cut at [`MESSAGE_LIMIT`].
pub(crate) fn read_message(memory: &GuestMemory<'_>, ptr: u32, len: u32) -> Result<String, Error> {
    let bytes = memory.read(ptr, len.min(MESSAGE_LIMIT), "a message")?;
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if len > MESSAGE_LIMIT {
        text.push_str(" … (cut)");
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_outside_memory_are_refused_without_reading() {
        let bytes = [7u8; 64];
        let memory = GuestMemory::new(&bytes);
        assert_eq!(memory.read(60, 4, "x").unwrap(), &[7, 7, 7, 7]);
        for (ptr, len) in [
            (61, 4),
            (64, 1),
            (u32::MAX, 2),
            (0, u32::MAX),
            (u32::MAX, u32::MAX),
        ] {
            let err = memory.read(ptr, len, "output").unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidGuestOutput, "{ptr} {len}");
        }
        assert_eq!(memory.read(64, 0, "x").unwrap(), &[] as &[u8]);
    }

    #[test]
    fn writes_outside_memory_are_refused_and_change_nothing() {
        let mut bytes = [0u8; 16];
        let mut memory = GuestMemoryMut::new(&mut bytes);
        assert!(memory.write(14, &[1, 2, 3], "input").is_err());
        assert!(memory.write(u32::MAX, &[1], "input").is_err());
        assert_eq!(bytes, [0; 16]);
        GuestMemoryMut::new(&mut bytes)
            .write(13, &[1, 2, 3], "input")
            .unwrap();
        assert_eq!(&bytes[13..], &[1, 2, 3]);
    }

    #[test]
    fn host_asked_accesses_are_bounds_checked_as_invalid_arguments() {
        let mut bytes = *b"ab\0cd\x2a\0\0\0";
        let memory = GuestMemory::of(3, &bytes);
        assert_eq!(memory.bytes_at(9, 0).unwrap(), &[] as &[u8]);
        assert_eq!(memory.c_string_at(0, 100).unwrap(), b"ab");
        assert_eq!(memory.c_string_at(2, 1).unwrap(), b"");
        assert_eq!(memory.u32_at(5).unwrap(), 42);
        for (address, len) in [(9, 1), (8, 2), (0, usize::MAX), (u64::MAX, 1), (10, 0)] {
            let err = memory.bytes_at(address, len).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArguments, "{address} {len}");
            assert!(err.message().contains("of memory 3"), "{err}");
        }
        for (address, max_len) in [(3, 2), (9, 5), (10, 5), (u64::MAX, 5)] {
            let err = memory.c_string_at(address, max_len).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArguments, "{address}");
        }
        assert!(memory.u32_at(6).is_err() && memory.u64_at(2).is_err());
        let mut view = GuestMemoryMut::of(0, &mut bytes);
        assert!(view.write_at(7, &[1, 2, 3]).is_err());
        assert!(view.write_at(u64::MAX, &[]).is_err());
        view.write_at(9, &[]).unwrap();
        view.write_at(7, &[1, 2]).unwrap();
        assert_eq!(bytes, *b"ab\0cd\x2a\0\x01\x02");
    }

    #[test]
    fn result_records_decode_and_bad_statuses_are_refused() {
        let mut bytes = [0u8; 32];
        bytes[4..16].copy_from_slice(&[1, 0, 0, 0, 9, 0, 0, 0, 3, 0, 0, 0]);
        let memory = GuestMemory::new(&bytes);
        assert_eq!(
            GuestResult::decode(&memory, 4).unwrap(),
            GuestResult::Error { ptr: 9, len: 3 }
        );
        assert_eq!(
            GuestResult::decode(&memory, 20).unwrap(),
            GuestResult::Output { ptr: 0, len: 0 }
        );
        assert!(
            GuestResult::decode(&memory, 21).is_err(),
            "record past the end"
        );
        bytes[4] = 2;
        let memory = GuestMemory::new(&bytes);
        assert_eq!(
            GuestResult::decode(&memory, 4).unwrap_err().kind(),
            ErrorKind::InvalidGuestOutput
        );
    }

    #[test]
    fn sizes_over_the_limit_are_refused() {
        assert!(check_size("output", 16, 16).is_ok());
        assert_eq!(
            check_size("output", 17, 16).unwrap_err().kind(),
            ErrorKind::OutputTooLarge
        );
        assert_eq!(pack(0x10, 3), 0x3_0000_0010);
    }
}
