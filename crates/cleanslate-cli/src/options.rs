//! Sandbox options shared by the verbs that build sandboxes.

use crate::units::{parse_duration, parse_size};
use std::time::Duration;

use clap::Args;
use cleanslate::{DirAccess, Module, ResetStrategy, Sandbox, SandboxBuilder, Verify, WasiConfig};

#[derive(Args, Debug, Clone)]
pub struct SandboxOptions {
    /// Export to run once before the snapshot (its effects are the clean slate).
    #[arg(long, value_name = "FUNC")]
    pub init: Option<String>,
    /// Most bytes all the guest's linear memories may hold together (one
    /// limit shared by every memory of the module), e.g. 1MiB, 64MB, 65536.
    /// Default 64MiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory_limit: Option<u64>,
    /// Native stack the guest may use, e.g. 512KiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub stack_limit: Option<u64>,
    /// Wall-clock limit per call, e.g. 200ms, 2s (a WASI sleep ends there too).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Fuel units per call (about one per instruction; a WASI sleep costs
    /// one per microsecond).
    #[arg(long, value_name = "N")]
    pub fuel: Option<u64>,
    /// Re-check resets against the snapshot: off, always or sampled:N.
    #[arg(long, value_name = "MODE", default_value = "off", value_parser = parse_verify)]
    pub verify: Verify,
    /// Reset paths allowed: auto (in place when provably complete, else a
    /// fresh instance) or fresh_instance (always).
    #[arg(long = "reset", value_name = "STRATEGY", default_value = "auto", value_parser = parse_strategy)]
    pub reset_strategy: ResetStrategy,
    /// Most bytes a guest may hand back in one piece (output, stdout,
    /// stderr), e.g. 1MiB. Default 16MiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub output_limit: Option<u64>,
    /// WASI: an environment variable for every call (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// WASI: give the guest a host directory, read-write unless `:ro`
    /// (repeatable). GUEST defaults to HOST.
    #[arg(long = "dir", value_name = "HOST[::GUEST][:ro]", value_parser = parse_dir)]
    pub dirs: Vec<DirSpec>,
    /// WASI: deterministic clocks and randomness seeded with SEED.
    #[arg(long, value_name = "SEED")]
    pub deterministic: Option<u64>,
    /// Provide an import the CLI does not: a function returning VALUE for
    /// each of its results (integers for i32/i64, floats for f32/f64), or
    /// with `trap` failing the call with a host_error (a host function
    /// cannot raise a wasm trap). Repeatable.
    #[arg(long = "stub", value_name = "MODULE.NAME=VALUE", value_parser = crate::stub::parse_stub)]
    pub stubs: Vec<crate::stub::StubSpec>,
    #[command(flatten)]
    pub load: crate::load::LoadOptions,
}

/// A `--dir` argument.
#[derive(Clone, Debug, PartialEq)]
pub struct DirSpec {
    pub host: String,
    pub guest: String,
    pub access: DirAccess,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

fn parse_dir(text: &str) -> Result<DirSpec, String> {
    let (rest, access) = match text.strip_suffix(":ro") {
        Some(rest) => (rest, DirAccess::ReadOnly),
        None => (
            text.strip_suffix(":rw").unwrap_or(text),
            DirAccess::ReadWrite,
        ),
    };
    let (host, guest) = match rest.split_once("::") {
        Some((host, guest)) => (host, guest),
        None => (rest, rest),
    };
    if host.is_empty() || guest.is_empty() {
        return Err(format!("`{text}` is not HOST[::GUEST][:ro]"));
    }
    Ok(DirSpec {
        host: host.to_string(),
        guest: guest.to_string(),
        access,
    })
}

fn parse_strategy(text: &str) -> Result<ResetStrategy, String> {
    text.parse::<ResetStrategy>().map_err(|e| e.to_string())
}

fn parse_verify(text: &str) -> Result<Verify, String> {
    text.parse::<Verify>().map_err(|e| e.to_string())
}

impl SandboxOptions {
    /// Load the module at `path` and build its sandbox with these options.
    pub fn load_and_build(
        &self,
        path: &std::path::Path,
    ) -> Result<(Module, Sandbox), crate::CliError> {
        let module = self.load.load(path)?;
        let sandbox = self
            .builder(&module)?
            .build()
            .map_err(|e| crate::CliError::library("cannot build the sandbox: ", &e))?;
        Ok((module, sandbox))
    }

    /// A builder with these options and the built-in host functions.
    pub fn builder(&self, module: &Module) -> Result<SandboxBuilder, crate::CliError> {
        let builder = crate::demo_host::provide(Sandbox::builder(module), module);
        let mut builder = crate::stub::provide(builder, module, &self.stubs)?
            .verify(self.verify)
            .reset_strategy(self.reset_strategy);
        if let Some(init) = &self.init {
            builder = builder.init(init.clone());
        }
        if let Some(bytes) = self.memory_limit {
            builder = builder.memory_limit(bytes);
        }
        if let Some(bytes) = self.stack_limit {
            let bytes =
                usize::try_from(bytes).map_err(|_| format!("stack limit {bytes} is too large"))?;
            builder = builder.stack_limit(bytes);
        }
        if let Some(timeout) = self.timeout {
            builder = builder.timeout(timeout);
        }
        if let Some(fuel) = self.fuel {
            builder = builder.fuel(fuel);
        }
        if let Some(bytes) = self.output_limit {
            let bytes =
                usize::try_from(bytes).map_err(|_| format!("output limit {bytes} is too large"))?;
            builder = builder.output_limit(bytes);
        }
        let mut wasi = WasiConfig::new();
        for (key, value) in &self.env {
            wasi = wasi.env(key, value);
        }
        for dir in &self.dirs {
            wasi = wasi.preopen_dir(&dir.host, &dir.guest, dir.access);
        }
        if let Some(seed) = self.deterministic {
            wasi = wasi.deterministic(seed);
        }
        Ok(builder.wasi(wasi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_specs_name_host_guest_and_access() {
        let spec = |host: &str, guest: &str, access| DirSpec {
            host: host.into(),
            guest: guest.into(),
            access,
        };
        assert_eq!(
            parse_dir("data").unwrap(),
            spec("data", "data", DirAccess::ReadWrite)
        );
        assert_eq!(
            parse_dir("./d::/data:ro").unwrap(),
            spec("./d", "/data", DirAccess::ReadOnly)
        );
        assert_eq!(
            parse_dir("/x:rw").unwrap(),
            spec("/x", "/x", DirAccess::ReadWrite)
        );
        assert!(parse_dir("::/data").is_err());
        assert!(parse_dir(":ro").is_err());
        assert_eq!(parse_env("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("novalue").is_err());
    }
}
