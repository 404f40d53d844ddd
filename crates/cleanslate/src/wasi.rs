//! WASI preview 1 for guests that import `wasi_snapshot_preview1`, on
//! wasmtime's implementation, with a fresh context for every call.
//!
//! The context (file descriptors, stdio buffers, RNG, clocks) lives on the
//! host side of the store, where the memory reset cannot reach it; so each
//! call gets a new one built from the sandbox's [`WasiConfig`] and the
//! call's own args, env and stdin. Nothing a call did through WASI (an open
//! fd, buffered output) survives into the next.

use std::path::PathBuf;
use std::time::Duration;

use rand::SeedableRng;
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

use crate::error::{Captured, Error, ErrorKind};

/// The import module of WASI preview 1.
pub(crate) const PREVIEW1: &str = "wasi_snapshot_preview1";

pub(crate) fn is_wasi_module(module: &str) -> bool {
    module == PREVIEW1
}

/// Whether a preopened directory may be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DirAccess {
    /// The guest may read files and list directories, never change them.
    ReadOnly,
    /// The guest may also create, write and delete files. Writes reach the
    /// host's filesystem and are **not** undone by the reset.
    ReadWrite,
}

#[derive(Clone, Debug)]
struct Preopen {
    host: PathBuf,
    guest: String,
    access: DirAccess,
}

/// What WASI guests of a sandbox see: arguments, environment, directories,
/// and whether clocks and randomness are real or deterministic.
///
/// The defaults give a guest no filesystem and no network at all; stdin is
/// empty, stdout and stderr are captured per call, clocks are the host's and
/// randomness is real.
///
/// ```no_run
/// use cleanslate::{DirAccess, Runtime, Sandbox, WasiConfig};
///
/// let runtime = Runtime::new()?;
/// let module = runtime.load_file("tool.wasm")?;
/// let mut sandbox = Sandbox::builder(&module)
///     .wasi(
///         WasiConfig::new()
///             .arg("tool")
///             .env("LANG", "C")
///             .preopen_dir("/srv/data", "/data", DirAccess::ReadOnly)
///             .deterministic(42),
///     )
///     .build()?;
/// # Ok::<(), cleanslate::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct WasiConfig {
    args: Vec<String>,
    env: Vec<(String, String)>,
    preopens: Vec<Preopen>,
    deterministic: Option<u64>,
}

impl WasiConfig {
    /// No args, no env, no directories, real clocks and randomness.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append one argument (`argv[0]` first, by convention the program's name).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Append several arguments.
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Set one environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Give the guest the host directory `host` at the path `guest`. The
    /// directory must exist when the sandbox is built and at every call.
    pub fn preopen_dir(
        mut self,
        host: impl Into<PathBuf>,
        guest: impl Into<String>,
        access: DirAccess,
    ) -> Self {
        self.preopens.push(Preopen {
            host: host.into(),
            guest: guest.into(),
            access,
        });
        self
    }

    /// Make clocks and randomness deterministic: the wall clock stands at
    /// 2023-11-14 22:13:20 UTC, the monotonic clock advances one microsecond
    /// per reading from zero, and random bytes come from a generator seeded
    /// with `seed`. Every call then sees the same values.
    pub fn deterministic(mut self, seed: u64) -> Self {
        self.deterministic = Some(seed);
        self
    }

    /// Check what can be checked before the first call.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        for preopen in &self.preopens {
            if !preopen.host.is_dir() {
                return Err(Error::new(
                    ErrorKind::InvalidArguments,
                    format!(
                        "the preopened directory {} does not exist or is not a directory",
                        preopen.host.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A new context for one call, and the pipes that capture its stdout
    /// and stderr (each up to one byte past `output_limit`, so that an
    /// overflow can be told from output exactly at the limit).
    pub(crate) fn fresh_context(
        &self,
        call: &CallEnv<'_>,
        output_limit: usize,
    ) -> Result<(WasiP1Ctx, CallStdio), Error> {
        let mut builder = WasiCtxBuilder::new();
        builder.args(call.args.unwrap_or(&self.args));
        // The call's variables replace the sandbox's of the same name.
        for (key, value) in &self.env {
            if !call.env.iter().any(|(k, _)| k == key) {
                builder.env(key, value);
            }
        }
        builder.envs(call.env);
        let stdio = CallStdio {
            stdout: MemoryOutputPipe::new(output_limit.saturating_add(1)),
            stderr: MemoryOutputPipe::new(output_limit.saturating_add(1)),
        };
        builder.stdin(MemoryInputPipe::new(call.stdin.to_vec()));
        builder.stdout(stdio.stdout.clone());
        builder.stderr(stdio.stderr.clone());
        for preopen in &self.preopens {
            let perms = match preopen.access {
                DirAccess::ReadOnly => wasmtime_wasi::FsPerms::ReadOnly,
                DirAccess::ReadWrite => wasmtime_wasi::FsPerms::ReadWrite,
            };
            builder
                .preopened_dir(&preopen.host, &preopen.guest, perms)
                .map_err(|e| {
                    Error::new(
                        ErrorKind::Instantiation,
                        format!(
                            "cannot open the preopened directory {}: {e:#}",
                            preopen.host.display()
                        ),
                    )
                })?;
        }
        if let Some(seed) = self.deterministic {
            builder.wall_clock(FixedWallClock);
            builder.monotonic_clock(SteppingClock::default());
            builder.secure_random(rand::rngs::StdRng::seed_from_u64(seed));
            builder.insecure_random(rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed));
            builder.insecure_random_seed(u128::from(seed));
        }
        Ok((builder.build_p1(), stdio))
    }
}

/// One call's own WASI inputs, over the sandbox's [`WasiConfig`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CallEnv<'a> {
    /// Replaces the configured args when given.
    pub args: Option<&'a [String]>,
    /// Added to the configured env, replacing variables of the same name.
    pub env: &'a [(String, String)],
    pub stdin: &'a [u8],
    /// Cancels the call when its token is cancelled.
    pub cancel: Option<&'a crate::CancelToken>,
}

/// The pipes one call's stdout and stderr are captured in.
pub(crate) struct CallStdio {
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
}

impl CallStdio {
    pub(crate) fn captured(&self) -> Captured {
        Captured {
            stdout: self.stdout.contents().to_vec(),
            stderr: self.stderr.contents().to_vec(),
        }
    }
}

/// Whether a wasmtime error is a stdio pipe refusing a write past its
/// capacity (wasmtime-wasi reports it only as a trap with this text).
pub(crate) fn is_pipe_overflow(err: &wasmtime::Error) -> bool {
    format!("{err:#}").contains("write beyond capacity of MemoryOutputPipe")
}

/// Wall clock of the deterministic mode.
struct FixedWallClock;

impl wasmtime_wasi::HostWallClock for FixedWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::from_secs(1_700_000_000)
    }
}

/// Monotonic clock of the deterministic mode: each reading is one
/// microsecond after the previous, so guests that wait for time still
/// progress.
#[derive(Default)]
struct SteppingClock {
    now: std::sync::atomic::AtomicU64,
}

impl wasmtime_wasi::HostMonotonicClock for SteppingClock {
    fn resolution(&self) -> u64 {
        1_000
    }
    fn now(&self) -> u64 {
        self.now
            .fetch_add(1_000, std::sync::atomic::Ordering::Relaxed)
    }
}
