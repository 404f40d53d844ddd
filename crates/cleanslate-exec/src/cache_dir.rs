//! Where the exec layer keeps what it makes once and reuses: unpacked
//! wheels, the stdlib link, setup snapshots.

use std::path::PathBuf;

/// The exec layer's cache folder (unpacked wheels, the stdlib link, the
/// setup cache):
/// `$XDG_CACHE_HOME/cleanslate/exec`, else `~/.cache/cleanslate/exec`, else
/// a folder under the system temp folder.
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".cache"))
        })
        .unwrap_or_else(std::env::temp_dir);
    base.join("cleanslate").join("exec")
}
