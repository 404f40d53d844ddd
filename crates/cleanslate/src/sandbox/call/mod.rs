//! Calling into the sandbox's instance, in four steps that each have a
//! file: `resolve` finds and checks the export before the reset guard is
//! armed, `data_abi` moves bytes across for bytes/JSON calls, `enter`
//! arms the limits and runs guest code, and `outcome` turns however it
//! ended into an [`Error`]. The entry points here run a resolved call
//! without resetting; the caller owns the reset.

mod data_abi;
mod enter;
mod outcome;
mod resolve;

pub(crate) use enter::enter;
pub(crate) use resolve::{DataFunc, Prepared, Target};

use crate::engine::limits::Limits;
use crate::error::{Captured, Error, ErrorKind};
use crate::instance::LiveInstance;
use crate::instance::wasi::CallEnv;
use crate::sandbox::request::{Call, CallResult};
use crate::sandbox::{SandboxCore, no_instance};
use crate::value::Val;

use data_abi::exchange_bytes;
use enter::{captured_into_error, enter_with, run_func};

impl SandboxCore {
    /// Run `target` (resolved by `resolve`) under the sandbox's limits.
    pub(crate) fn invoke(&mut self, target: &Target<'_>, args: &[Val]) -> Result<Vec<Val>, Error> {
        captured_into_error(self.invoke_in(target, args, &CallEnv::default()))
    }

    /// Run a data-ABI function on `input` (resolved by `resolve_data`).
    pub(crate) fn call_data(
        &mut self,
        name: &str,
        func: DataFunc,
        input: &[u8],
    ) -> Result<Vec<u8>, Error> {
        captured_into_error(self.enter_live(name, &CallEnv::default(), |live, limits| {
            exchange_bytes(live, limits, name, func, input)
        }))
    }

    /// Run a prepared [`Call`].
    pub(crate) fn execute(
        &mut self,
        call: &Call,
        prepared: Prepared<'_>,
    ) -> Result<CallResult, Error> {
        let env = CallEnv {
            args: call.args.as_deref(),
            env: &call.env,
            stdin: &call.stdin,
            cancel: call.cancel.as_ref(),
        };
        let (outcome, captured) = match prepared {
            Prepared::Values(target, args) => {
                let (outcome, captured) = self.invoke_in(&target, args, &env);
                (outcome.map(|values| (values, None)), captured)
            }
            Prepared::Bytes(func, input) => {
                let name = call.function.as_str();
                let (outcome, captured) = self.enter_live(name, &env, |live, limits| {
                    exchange_bytes(live, limits, name, func, input)
                });
                (outcome.map(|output| (Vec::new(), Some(output))), captured)
            }
        };
        // A WASI command's `_start` that returns (wasi-libc returns when
        // `main` returns 0) finished with exit status 0, as in a shell.
        let command_returned = call.function == "_start" && self.factory.wasi.is_some();
        match outcome {
            Ok((values, output)) => Ok(CallResult {
                values,
                output,
                stdout: captured.stdout,
                stderr: captured.stderr,
                exit_code: command_returned.then_some(0),
            }),
            // A WASI command ending with proc_exit finished normally.
            Err(e) if e.kind() == ErrorKind::Exited => Ok(CallResult {
                exit_code: e.exit_code(),
                stdout: captured.stdout,
                stderr: captured.stderr,
                ..CallResult::default()
            }),
            Err(e) => Err(e.with_captured(captured)),
        }
    }

    fn invoke_in(
        &mut self,
        target: &Target<'_>,
        args: &[Val],
        env: &CallEnv<'_>,
    ) -> (Result<Vec<Val>, Error>, Captured) {
        let params: Vec<wasmtime::Val> = args.iter().map(|a| a.to_wasmtime()).collect();
        let (name, func, count) = (target.name, target.func, target.result_count);
        self.enter_live(name, env, |live, limits| {
            run_func(live, limits, name, func, &params, count)
        })
    }

    /// [`enter_with`] on this sandbox's instance. A sandbox whose instance
    /// was lost to a failed reset has none, and says how to recover.
    fn enter_live<R: Send>(
        &mut self,
        name: &str,
        env: &CallEnv<'_>,
        body: impl FnOnce(&mut LiveInstance, &Limits) -> Result<R, Error> + Send,
    ) -> (Result<R, Error>, Captured) {
        let Some(live) = self.live.as_mut() else {
            return (Err(no_instance()), Captured::default());
        };
        enter_with(self.module.runtime(), &self.factory, live, name, env, body)
    }
}
