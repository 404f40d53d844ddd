"""Run untrusted code in sandboxes that reset to a clean slate after every call.

Two entry points:

* :class:`CodeSandbox` runs Python (or JavaScript) source code. The
  interpreter starts once, runs your ``setup`` once, and every
  :meth:`CodeSandbox.run` starts from that state; afterwards the sandbox is
  reset to it, however the code ended::

      import cleanslate
      sb = cleanslate.CodeSandbox()
      print(sb.run("print(1+1)").stdout)   # 2

* :class:`Sandbox` runs a WebAssembly module plugin-style: call its exports
  with numbers (:meth:`Sandbox.call`), bytes (:meth:`Sandbox.call_bytes`) or
  JSON (:meth:`Sandbox.call_json`); every call starts from the snapshot::

      sb = cleanslate.Sandbox("plugin.wasm", timeout=1.0)
      assert sb.call("add", 2, 3) == 5

Errors are :class:`Error` (``.kind``, ``.message``) or one of its
subclasses. How a :meth:`CodeSandbox.run` ended is never an exception: it is
in the :class:`RunResult`.
"""

from ._cleanslate import (
    CodeSandbox,
    CodeSession,
    Error,
    FunctionNotFoundError,
    GuestError,
    GuestNotFoundError,
    HostFunctionError,
    InvalidArgumentsError,
    OutOfFuelError,
    OutOfMemoryError,
    RunResult,
    Sandbox,
    Session,
    SetupFailedError,
    StackOverflowError,
    TimeoutError,
    TrapError,
    __version__,
)

__all__ = [
    "CodeSandbox",
    "CodeSession",
    "Error",
    "FunctionNotFoundError",
    "GuestError",
    "GuestNotFoundError",
    "HostFunctionError",
    "InvalidArgumentsError",
    "OutOfFuelError",
    "OutOfMemoryError",
    "RunResult",
    "Sandbox",
    "Session",
    "SetupFailedError",
    "StackOverflowError",
    "TimeoutError",
    "TrapError",
    "__version__",
]
