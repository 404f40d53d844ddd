//! The Python package `cleanslate` (its native module, `cleanslate._cleanslate`):
//! [`CodeSandbox`](code::PyCodeSandbox) runs Python or JavaScript code with a
//! clean slate per run (the exec layer, `cleanslate-exec`), and
//! [`Sandbox`](core::PySandbox) runs WebAssembly modules plugin-style (the
//! core library, `cleanslate`). The guest runs without the GIL; tools and
//! host functions take it back only while they run.

mod code;
mod convert;
mod core;
mod errors;
mod run_result;
mod session;

use pyo3::prelude::*;

#[pymodule]
fn _cleanslate(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<code::PyCodeSandbox>()?;
    m.add_class::<run_result::PyRunResult>()?;
    m.add_class::<session::PyCodeSession>()?;
    m.add_class::<core::PySandbox>()?;
    m.add_class::<core::PySession>()?;
    errors::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
