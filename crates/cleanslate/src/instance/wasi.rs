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
use wasmtime_wasi::p1::wasi_snapshot_preview1::WasiSnapshotPreview1 as _;
use wasmtime_wasi::p1::{WasiP1Ctx, types};
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};

use crate::error::{Captured, Error, ErrorKind};
use crate::module::WASI_PREVIEW1 as PREVIEW1;

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
    pub cancel: Option<&'a crate::instance::CancelToken>,
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

/// How often a guest's sleep looks for a cancel: the most a cancel of a
/// sleeping call waits before it takes effect.
const SLEEP_SLICE: Duration = Duration::from_millis(5);

/// Fuel a guest's sleep costs per microsecond. Fuel measures work, and a
/// sleep does none, but it holds a host thread for as long as it lasts: a
/// sandbox limited by fuel alone must still end its calls, so sleeping is
/// paid for with fuel (1,000 units buy 1 ms; a sleep the remaining fuel
/// cannot pay for sleeps what it can, then fails `out_of_fuel`).
pub(crate) const SLEEP_FUEL_PER_MICROSECOND: u64 = 1;

/// Replace wasmtime-wasi's `poll_oneoff` in `linker` by one that ends with
/// the call. wasmtime-wasi sleeps in host code, where neither the epoch
/// deadline nor a cancel can reach it: a guest asking for a long sleep held
/// the host thread past its timeout. Polls that only wait for clocks (the
/// only ones that can block here: stdin and stdout are in-memory pipes,
/// always ready) are served here, sleeping within the call's limits; every
/// other poll goes to wasmtime-wasi, which answers it without waiting.
pub(crate) fn bound_blocking_calls(
    linker: &mut wasmtime::Linker<crate::instance::StoreData>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let defined = linker
        .func_wrap(PREVIEW1, "poll_oneoff", poll_oneoff)
        .map(|_| ());
    linker.allow_shadowing(false);
    defined
}

/// `poll_oneoff(subscriptions, events, count, events_written)`, as the
/// generated binding calls wasmtime-wasi's, except that a wait for clocks
/// happens in [`sleep_within_limits`].
fn poll_oneoff(
    mut caller: wasmtime::Caller<'_, crate::instance::StoreData>,
    subscriptions: i32,
    events: i32,
    count: i32,
    events_written: i32,
) -> wasmtime::Result<i32> {
    let Some(wasmtime::Extern::Memory(memory)) = caller.get_export("memory") else {
        wasmtime::bail!("missing required memory export");
    };
    let hostcall_fuel = wasmtime::AsContextMut::as_context_mut(&mut caller).hostcall_fuel();
    let wait = {
        let (bytes, data) = memory.data_and_store_mut(&mut caller);
        let ctx = data.wasi_context();
        ctx.set_hostcall_fuel(hostcall_fuel);
        let mut guest = wiggle::GuestMemory::Unshared(bytes);
        match ClockWait::plan(ctx, &mut guest, subscriptions as u32, count as u32) {
            Some(wait) => wait,
            // Not a wait for clocks alone, or one wasmtime-wasi refuses
            // before it would wait (bad pointer, unknown clock): its answer.
            None => {
                return wasmtime_wasi::runtime::in_tokio(
                    wasmtime_wasi::p1::wasi_snapshot_preview1::poll_oneoff(
                        ctx,
                        &mut guest,
                        subscriptions,
                        events,
                        count,
                        events_written,
                    ),
                );
            }
        }
    };
    let slept = sleep_within_limits(&mut caller, wait.earliest)?;
    let mut guest = wiggle::GuestMemory::Unshared(memory.data_mut(&mut caller));
    let reported = wait
        .report(
            &mut guest,
            subscriptions as u32,
            events as u32,
            count as u32,
            slept,
        )
        .and_then(|written| {
            Ok(guest.write(wiggle::GuestPtr::<u32>::new(events_written as u32), written)?)
        });
    match reported {
        Ok(()) => Ok(0),
        Err(e) => errno(e),
    }
}

/// The errno a failed WASI function returns, or the trap it raises.
fn errno(e: types::Error) -> wasmtime::Result<i32> {
    Ok(e.downcast()? as i32)
}

/// A poll of clock subscriptions only: how long each waits, measured from
/// the moment the clocks were read.
struct ClockWait {
    /// The monotonic and wall clock readings absolute subscriptions are
    /// measured against (read only when one asks).
    monotonic_now: Option<u64>,
    wall_now: Option<u64>,
    /// The shortest wait: when the poll returns.
    earliest: Duration,
}

impl ClockWait {
    /// The wait `count` subscriptions at `subscriptions` ask for, as
    /// wasmtime-wasi computes it; `None` unless every one is a clock
    /// wasmtime-wasi would wait for.
    fn plan(
        ctx: &mut WasiP1Ctx,
        guest: &mut wiggle::GuestMemory<'_>,
        subscriptions: u32,
        count: u32,
    ) -> Option<ClockWait> {
        if count == 0 {
            return None;
        }
        let mut plan = ClockWait {
            monotonic_now: None,
            wall_now: None,
            earliest: Duration::MAX,
        };
        let array = wiggle::GuestPtr::<types::Subscription>::new(subscriptions).as_array(count);
        for sub in array.iter() {
            let sub = guest.read(sub.ok()?).ok()?;
            let types::SubscriptionU::Clock(clock) = sub.u else {
                return None;
            };
            if clock
                .flags
                .contains(types::Subclockflags::SUBSCRIPTION_CLOCK_ABSTIME)
            {
                match clock.id {
                    types::Clockid::Monotonic if plan.monotonic_now.is_none() => {
                        plan.monotonic_now = Some(
                            ctx.clock_time_get(guest, types::Clockid::Monotonic, 0)
                                .ok()?,
                        );
                    }
                    types::Clockid::Realtime if plan.wall_now.is_none() => {
                        plan.wall_now = Some(
                            ctx.clock_time_get(guest, types::Clockid::Realtime, 0)
                                .ok()?,
                        );
                    }
                    _ => {}
                }
            }
            plan.earliest = plan.earliest.min(plan.wait(&clock)?);
        }
        Some(plan)
    }

    /// How long `clock` waits from the moment the clocks were read.
    fn wait(&self, clock: &types::SubscriptionClock) -> Option<Duration> {
        let absolute = clock
            .flags
            .contains(types::Subclockflags::SUBSCRIPTION_CLOCK_ABSTIME);
        let nanos = match (clock.id, absolute) {
            (types::Clockid::Monotonic | types::Clockid::Realtime, false) => clock.timeout,
            (types::Clockid::Monotonic, true) => clock.timeout.saturating_sub(self.monotonic_now?),
            (types::Clockid::Realtime, true) => clock.timeout.saturating_sub(self.wall_now?),
            _ => return None,
        };
        Some(Duration::from_nanos(nanos))
    }

    /// Write an event for every subscription whose clock fired within
    /// `slept` (the earliest always did), in subscription order, as
    /// wasmtime-wasi does; returns how many were written.
    fn report(
        &self,
        guest: &mut wiggle::GuestMemory<'_>,
        subscriptions: u32,
        events: u32,
        count: u32,
        slept: Duration,
    ) -> Result<u32, types::Error> {
        let slept = slept.max(self.earliest);
        let subs = wiggle::GuestPtr::<types::Subscription>::new(subscriptions).as_array(count);
        let events = wiggle::GuestPtr::<types::Event>::new(events).as_array(count);
        let mut written = 0;
        for sub in subs.iter() {
            let sub = guest.read(sub?)?;
            let types::SubscriptionU::Clock(clock) = &sub.u else {
                continue;
            };
            if self.wait(clock).is_none_or(|wait| wait > slept) {
                continue;
            }
            let event = events.get(written).ok_or(types::Errno::Overflow)?;
            guest.write(
                event,
                types::Event {
                    userdata: sub.userdata,
                    error: types::Errno::Success,
                    type_: types::Eventtype::Clock,
                    fd_readwrite: types::EventFdReadwrite {
                        flags: types::Eventrwflags::empty(),
                        nbytes: 0,
                    },
                },
            )?;
            written += 1;
        }
        Ok(written)
    }
}

/// Sleep `wait` for the guest, within the running call's limits: a cancel
/// (interrupt handle or token) ends it as `cancelled`, the call's deadline
/// as `timeout`, and with fuel metering the sleep costs fuel
/// ([`SLEEP_FUEL_PER_MICROSECOND`]), ending as `out_of_fuel` where the fuel
/// runs out. Returns how long it slept.
fn sleep_within_limits(
    caller: &mut wasmtime::Caller<'_, crate::instance::StoreData>,
    wait: Duration,
) -> wasmtime::Result<Duration> {
    use crate::instance::interrupt::Interruption;
    let start = std::time::Instant::now();
    let fuel = caller.get_fuel().ok();
    let affordable = fuel.map(|f| Duration::from_micros(f / SLEEP_FUEL_PER_MICROSECOND));
    let (wait, runs_out_of_fuel) = match affordable {
        Some(affordable) if affordable < wait => (affordable, true),
        _ => (wait, false),
    };
    // `None`: longer than any clock can count, i.e. until a limit ends it.
    let wake = start.checked_add(wait);
    let ended = loop {
        let data = caller.data();
        if let Some(why) = data.interrupt.requested(data.generation) {
            break Err(why);
        }
        if data.cancel.as_ref().is_some_and(|t| t.is_cancelled()) {
            break Err(Interruption::CancelledByToken);
        }
        let now = std::time::Instant::now();
        if data.deadline.is_some_and(|d| now >= d) {
            break Err(Interruption::Timeout);
        }
        if wake.is_some_and(|w| now >= w) {
            break Ok(());
        }
        let until = [wake, data.deadline].into_iter().flatten().min();
        std::thread::sleep(until.map_or(SLEEP_SLICE, |u| (u - now).min(SLEEP_SLICE)));
    };
    let slept = start.elapsed();
    if let Some(fuel) = fuel {
        let micros = u64::try_from(slept.as_micros()).unwrap_or(u64::MAX);
        let cost = micros.saturating_mul(SLEEP_FUEL_PER_MICROSECOND);
        let left = if runs_out_of_fuel && ended.is_ok() {
            0
        } else {
            fuel.saturating_sub(cost)
        };
        caller.set_fuel(left)?;
    }
    match ended {
        Err(why) => Err(wasmtime::Error::new(why)),
        Ok(()) if runs_out_of_fuel => Err(wasmtime::Trap::OutOfFuel.into()),
        Ok(()) => Ok(slept),
    }
}
