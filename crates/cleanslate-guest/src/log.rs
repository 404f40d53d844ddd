//! Log lines to the host, which emits them through `tracing` (target
//! `cleanslate::guest`, with the export's name).

/// How important a log line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Level {
    /// Something failed.
    Error = 0,
    /// Something looks wrong.
    Warn = 1,
    /// Normal progress.
    Info = 2,
    /// Detail for debugging.
    Debug = 3,
    /// Even more detail.
    Trace = 4,
}

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "cleanslate")]
unsafe extern "C" {
    #[link_name = "log"]
    fn cleanslate_log(level: i32, ptr: u32, len: u32);
}

/// Send `message` to the host's log at `level`.
///
/// ```ignore
/// cleanslate_guest::log::log(cleanslate_guest::log::Level::Info, "parsed the order");
/// ```
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: the import only reads `message`, a live borrowed slice.
    unsafe {
        cleanslate_log(level as i32, message.as_ptr() as u32, message.len() as u32)
    };
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (level, message);
}

/// [`log`] at [`Level::Error`].
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// [`log`] at [`Level::Warn`].
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// [`log`] at [`Level::Info`].
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// [`log`] at [`Level::Debug`].
pub fn debug(message: &str) {
    log(Level::Debug, message);
}
