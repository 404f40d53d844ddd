//! Writing one generated section of a file in docs/, between its begin and
//! end markers, leaving the rest of the file (hand-written text and the
//! other binaries' sections) as it is.

use std::path::PathBuf;

/// The repository's docs/ directory.
pub fn docs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

/// Put `body` between `begin` and `end` in docs/`file`, replacing what was
/// there, or append the section if the markers are missing.
pub fn replace(file: &str, begin: &str, end: &str, body: &str) -> std::io::Result<()> {
    let path = docs_dir().join(file);
    let existing = std::fs::read_to_string(&path)?;
    let section = format!("{begin}\n{body}\n{end}");
    let updated = match (existing.find(begin), existing.find(end)) {
        (Some(a), Some(b)) if a < b => {
            format!("{}{section}{}", &existing[..a], &existing[b + end.len()..])
        }
        _ => format!("{}\n\n{section}\n", existing.trim_end()),
    };
    std::fs::write(path, updated)
}
