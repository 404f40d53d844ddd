//! How a host call failed, as the typed error wasmtime carries out of the
//! guest so the sandbox can tell a host's failure from the guest's.

use std::fmt;
use std::sync::Arc;

use super::HostFnError;
use crate::error::{Error, ErrorKind};

/// How a host function (or a host-side check of the guest's data) failed;
/// carried through wasmtime as the error of the call so the sandbox can
/// classify it.
#[derive(Debug)]
pub(crate) enum HostFault {
    Error {
        function: String,
        message: String,
        /// The embedder's own error, kept so [`Error`]'s `source()` reaches it.
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    Panic {
        function: String,
        message: String,
    },
    /// The guest broke the data ABI or a limit while calling the host.
    Guest(Error),
    /// The guest reported a panic through `cleanslate.panic`.
    GuestPanic {
        message: String,
    },
}

impl fmt::Display for HostFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostFault::Error {
                function, message, ..
            } => {
                write!(f, "host function `{function}` returned an error: {message}")
            }
            HostFault::Panic { function, message } => {
                write!(f, "host function `{function}` panicked: {message}")
            }
            HostFault::Guest(error) => write!(f, "{error}"),
            HostFault::GuestPanic { message } => write!(f, "the guest panicked: {message}"),
        }
    }
}

impl std::error::Error for HostFault {}

impl HostFault {
    /// A host function returned `Err(error)`; `error` stays reachable as
    /// the call's error's `source()`.
    pub(super) fn returned(function: &str, error: HostFnError) -> wasmtime::Error {
        wasmtime::Error::new(HostFault::Error {
            function: function.to_string(),
            message: error.to_string(),
            source: Some(Arc::from(error)),
        })
    }

    /// A host function panicked with `payload`; the panic stops here.
    pub(super) fn panicked(
        function: &str,
        payload: &(dyn std::any::Any + Send),
    ) -> wasmtime::Error {
        wasmtime::Error::new(HostFault::Panic {
            function: function.to_string(),
            message: panic_message(payload),
        })
    }

    pub(crate) fn to_error(&self, export: &str) -> Error {
        match self {
            HostFault::Error { source, .. } => {
                Error::new(ErrorKind::HostError, format!("{self}")).with_source(source.clone())
            }
            HostFault::Panic { .. } => Error::new(ErrorKind::HostPanic, format!("{self}")),
            HostFault::Guest(error) => Error::new(error.kind(), error.message()),
            HostFault::GuestPanic { message } => {
                Error::from_guest(ErrorKind::GuestPanic, export, message.clone())
            }
        }
    }
}

/// The text of a panic payload, when it has one.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}
