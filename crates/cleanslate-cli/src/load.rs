//! Loading a module for any verb: the compiled-module cache (on by
//! default) and a spinner while a large module compiles.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use cleanslate::{Module, Runtime, RuntimeConfig};

/// Modules at least this large get a spinner while they load (compiling
/// one can take seconds).
const SPINNER_FROM: u64 = 1 << 20;

#[derive(Args, Debug, Clone, Default)]
pub struct LoadOptions {
    /// Keep compiled modules in DIR (default: $XDG_CACHE_HOME/cleanslate/modules or ~/.cache/cleanslate/modules).
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    pub cache_dir: Option<PathBuf>,
    /// Compile the module without the compiled-module cache.
    #[arg(long)]
    pub no_cache: bool,
}

impl LoadOptions {
    /// A runtime with the cache these options ask for.
    pub fn runtime(&self) -> Result<Runtime, String> {
        let config = match (&self.cache_dir, self.no_cache) {
            (_, true) => RuntimeConfig::default(),
            (Some(dir), false) => RuntimeConfig::default().module_cache(dir),
            (None, false) => RuntimeConfig::default().module_cache_in_user_dir(),
        };
        Runtime::with_config(config).map_err(|e| e.to_string())
    }

    /// Load `path` in a new runtime.
    pub fn load(&self, path: &Path) -> Result<Module, crate::CliError> {
        let runtime = self.runtime()?;
        load_with_spinner(&runtime, path).map_err(|e| crate::CliError::library("", &e))
    }
}

/// Load `path`, showing a spinner on a terminal while a large module loads.
pub fn load_with_spinner(runtime: &Runtime, path: &Path) -> Result<Module, cleanslate::Error> {
    let large = std::fs::metadata(path).is_ok_and(|m| m.len() >= SPINNER_FROM);
    let spinner = large.then(|| {
        // indicatif draws nothing when stderr is not a terminal.
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(format!(
            "loading {} (compiling on first use)",
            path.display()
        ));
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    });
    let loaded = runtime.load_file(path);
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    loaded
}
