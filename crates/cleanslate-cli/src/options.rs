//! Sandbox options shared by the verbs that build sandboxes.

use std::time::Duration;

use clap::Args;
use cleanslate::{Module, ResetStrategy, Sandbox, SandboxBuilder, Verify};

#[derive(Args, Debug, Clone)]
pub struct SandboxOptions {
    /// Export to run once before the snapshot (its effects are the clean slate).
    #[arg(long, value_name = "FUNC")]
    pub init: Option<String>,
    /// Largest size each linear memory may grow to, e.g. 1MiB, 64MB, 65536.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory_limit: Option<u64>,
    /// Native stack the guest may use, e.g. 512KiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub stack_limit: Option<u64>,
    /// Wall-clock limit per call, e.g. 200ms, 2s.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Fuel units per call (about one per instruction).
    #[arg(long, value_name = "N")]
    pub fuel: Option<u64>,
    /// Re-check resets against the snapshot: off, always or sampled:N.
    #[arg(long, value_name = "MODE", default_value = "off", value_parser = parse_verify)]
    pub verify: Verify,
    /// Reset paths allowed: auto (in place when provably complete, else a
    /// fresh instance) or fresh_instance (always).
    #[arg(long = "reset", value_name = "STRATEGY", default_value = "auto", value_parser = parse_strategy)]
    pub reset_strategy: ResetStrategy,
}

fn parse_strategy(text: &str) -> Result<ResetStrategy, String> {
    text.parse::<ResetStrategy>().map_err(|e| e.to_string())
}

fn parse_size(text: &str) -> Result<u64, String> {
    cleanslate::parse_size(text).map_err(|e| e.to_string())
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    cleanslate::parse_duration(text).map_err(|e| e.to_string())
}

fn parse_verify(text: &str) -> Result<Verify, String> {
    text.parse::<Verify>().map_err(|e| e.to_string())
}

impl SandboxOptions {
    /// Load the module at `path` and build its sandbox with these options.
    pub fn load_and_build(&self, path: &std::path::Path) -> Result<(Module, Sandbox), String> {
        let runtime = cleanslate::Runtime::new().map_err(|e| e.to_string())?;
        let module = runtime.load_file(path).map_err(|e| e.to_string())?;
        let sandbox = self
            .builder(&module)?
            .build()
            .map_err(|e| format!("cannot build the sandbox: {e}"))?;
        Ok((module, sandbox))
    }

    /// A builder with these options and the built-in host functions.
    pub fn builder(&self, module: &Module) -> Result<SandboxBuilder, String> {
        let mut builder = crate::demo_host::provide(Sandbox::builder(module), module)
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
        Ok(builder)
    }
}
