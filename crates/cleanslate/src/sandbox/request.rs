//! A call as data: what goes in (values or bytes, plus a WASI guest's
//! stdin, args and env) and what comes out (values or bytes, stdout,
//! stderr, exit code).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind};
use crate::instance::CancelToken;
use crate::value::Val;

/// One call, for [`Sandbox::call_with`](crate::Sandbox::call_with): the
/// export, its input, and what a WASI guest sees for this call only.
///
/// ```
/// use cleanslate::{Call, Val};
///
/// let by_value = Call::values("add", &[Val::I32(2), Val::I32(3)]);
/// let by_bytes = Call::bytes("upper", "hello").stdin("line\n").arg("prog").env("MODE", "fast");
/// let by_json = Call::json("transform", &serde_json::json!({"n": 1}))?;
/// assert_eq!(by_bytes.function(), "upper");
/// # let _ = (by_value, by_json);
/// # Ok::<(), cleanslate::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Call {
    pub(crate) function: String,
    pub(crate) input: CallInput,
    pub(crate) stdin: Vec<u8>,
    pub(crate) args: Option<Vec<String>>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cancel: Option<CancelToken>,
}

/// How the input crosses the boundary.
#[derive(Clone, Debug)]
pub(crate) enum CallInput {
    /// Core values, as `Sandbox::call` passes them.
    Values(Vec<Val>),
    /// Bytes through the data ABI (docs/ABI.md).
    Bytes(Vec<u8>),
}

impl Call {
    fn new(function: impl Into<String>, input: CallInput) -> Self {
        Call {
            function: function.into(),
            input,
            stdin: Vec::new(),
            args: None,
            env: Vec::new(),
            cancel: None,
        }
    }

    /// Let `token` cancel this call: before it starts (also while it waits
    /// for a pool's sandbox) or while it runs. See [`CancelToken`].
    pub fn cancel_token(mut self, token: &CancelToken) -> Self {
        self.cancel = Some(token.clone());
        self
    }

    /// Call a function over core values (no arguments for a WASI command's
    /// `_start`).
    pub fn values(function: impl Into<String>, args: &[Val]) -> Self {
        Call::new(function, CallInput::Values(args.to_vec()))
    }

    /// Call a data-ABI function with `input` bytes.
    pub fn bytes(function: impl Into<String>, input: impl Into<Vec<u8>>) -> Self {
        Call::new(function, CallInput::Bytes(input.into()))
    }

    /// Call a data-ABI function with `input` serialised as JSON.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArguments`] when `input` cannot be serialised as
    /// JSON (e.g. a map with non-string keys).
    pub fn json<T: Serialize + ?Sized>(
        function: impl Into<String>,
        input: &T,
    ) -> Result<Self, Error> {
        let bytes = serde_json::to_vec(input).map_err(|e| {
            Error::new(
                ErrorKind::InvalidArguments,
                format!("the input cannot be serialised as JSON: {e}"),
            )
        })?;
        Ok(Call::bytes(function, bytes))
    }

    /// What a WASI guest reads from stdin during this call (default: nothing).
    pub fn stdin(mut self, stdin: impl Into<Vec<u8>>) -> Self {
        self.stdin = stdin.into();
        self
    }

    /// Append one argument for this call; the first one given replaces the
    /// args configured on the sandbox's [`WasiConfig`](crate::WasiConfig).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.get_or_insert_with(Vec::new).push(arg.into());
        self
    }

    /// Set an environment variable for this call, on top of the sandbox's.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The export this call enters.
    pub fn function(&self) -> &str {
        &self.function
    }
}

/// What a call produced (the sandbox has already been reset).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallResult {
    pub(crate) values: Vec<Val>,
    pub(crate) output: Option<Vec<u8>>,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    pub(crate) exit_code: Option<i32>,
}

impl CallResult {
    /// The function's results, for a [`Call::values`] call that returned.
    pub fn values(&self) -> &[Val] {
        &self.values
    }

    /// The output bytes, for a [`Call::bytes`] or [`Call::json`] call that
    /// returned (`None` if the guest exited instead).
    pub fn output(&self) -> Option<&[u8]> {
        self.output.as_deref()
    }

    /// Take the output bytes.
    pub fn into_output(self) -> Option<Vec<u8>> {
        self.output
    }

    /// Decode the output as JSON into `T`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidGuestOutput`] when the call produced no output (the
    /// guest exited instead of returning), or the output is not JSON of type
    /// `T`.
    pub fn output_json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let bytes = self.output.as_deref().ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidGuestOutput,
                "the call produced no output to decode (it exited instead of returning)",
            )
        })?;
        decode_json(bytes)
    }

    /// What a WASI guest wrote to stdout during the call.
    pub fn stdout(&self) -> &[u8] {
        &self.stdout
    }

    /// What a WASI guest wrote to stderr during the call.
    pub fn stderr(&self) -> &[u8] {
        &self.stderr
    }

    /// A WASI guest's exit status: the code it passed to `proc_exit`, or 0
    /// when a command's `_start` returned. `None` for other functions that
    /// returned.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit_code
    }
}

/// Decode guest output as JSON; failure blames the guest.
pub(crate) fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::new(
            ErrorKind::InvalidGuestOutput,
            format!(
                "the guest's output is not valid JSON for {}: {e}",
                std::any::type_name::<T>()
            ),
        )
    })
}
