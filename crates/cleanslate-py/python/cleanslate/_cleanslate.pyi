"""Type stubs for the native module ``cleanslate._cleanslate``."""

import datetime
import os
from types import TracebackType
from typing import Any, final, Callable, Dict, List, Literal, Mapping, Optional, Tuple, Type, Union

__version__: str
__all__ = [
    "CodeSandbox",
    "CodeSession",
    "RunResult",
    "Sandbox",
    "Session",
    "Error",
    "TimeoutError",
    "OutOfMemoryError",
    "OutOfFuelError",
    "TrapError",
    "StackOverflowError",
    "HostFunctionError",
    "GuestError",
    "FunctionNotFoundError",
    "GuestNotFoundError",
    "InvalidArgumentsError",
    "SetupFailedError",
    "__version__",
]

_Seconds = Union[int, float, datetime.timedelta]
_Path = Union[str, "os.PathLike[str]"]
_Json = Any
_Number = Union[int, float]

class Error(Exception):
    """Every error Cleanslate raises."""

    kind: str
    """The library's snake_case kind, e.g. ``"trap"``, ``"timeout"``."""
    message: str
    """The human-readable explanation."""
    trap_code: Optional[str]
    """For kind ``"trap"``: how, e.g. ``"unreachable"``; else None."""

class TimeoutError(Error): ...
class OutOfMemoryError(Error): ...
class OutOfFuelError(Error): ...
class TrapError(Error): ...
class StackOverflowError(Error): ...
class HostFunctionError(Error): ...
class GuestError(Error): ...
class FunctionNotFoundError(Error): ...
class GuestNotFoundError(Error): ...
class InvalidArgumentsError(Error): ...
class SetupFailedError(Error): ...

_RunErrorKind = Literal["timeout", "out_of_memory", "output_too_large", "cancelled", "stack_overflow", "trap"]

@final
class CodeSession:
    def run(self, code: str) -> RunResult: ...
    def close(self) -> None: ...
    def __enter__(self) -> "CodeSession": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

@final
class RunResult:
    """What one :meth:`CodeSandbox.run` did."""

    @property
    def ok(self) -> bool: ...
    @property
    def stdout(self) -> str: ...
    @property
    def stderr(self) -> str: ...
    @property
    def stdout_bytes(self) -> bytes: ...
    @property
    def stderr_bytes(self) -> bytes: ...
    @property
    def exit_code(self) -> Optional[int]: ...
    @property
    def error_kind(self) -> Optional[_RunErrorKind]: ...
    @property
    def error_message(self) -> Optional[str]: ...
    @property
    def files(self) -> Dict[str, bytes]: ...
    @property
    def duration(self) -> float: ...
    @property
    def reset(self) -> Dict[str, Any]: ...
    def to_dict(self) -> Dict[str, Any]: ...

@final
class CodeSandbox:
    """A sandbox for Python (or JavaScript) code with a clean slate per run."""

    def __new__(
        cls,
        language: str = "python",
        setup: Optional[str] = None,
        timeout: Optional[_Seconds] = None,
        memory_limit: Optional[int] = None,
        input_dir: Optional[_Path] = None,
        output_dir: Optional[_Path] = None,
        guest: Optional[_Path] = None,
        *,
        output_files: bool = False,
        output_limit: Optional[int] = None,
        tools: Optional[Mapping[str, Callable[..., _Json]]] = None,
        module_cache: Union[_Path, bool, None] = None,
        env: Optional[Mapping[str, str]] = None,
        pool_size: Optional[int] = None,
        max_tool_calls: Optional[int] = None,
        setup_cache: bool = True,
    ) -> "CodeSandbox": ...
    def register_tool(self, name: str, fn: Callable[..., _Json], description: str = "") -> None: ...
    def start(self) -> "CodeSandbox": ...
    def run(self, code: str) -> RunResult: ...
    def close(self) -> None: ...
    @property
    def language(self) -> Literal["python", "javascript"]: ...
    @property
    def tools(self) -> List[str]: ...
    @property
    def started(self) -> bool: ...
    @property
    def setup_from_cache(self) -> Optional[bool]: ...
    def session(self) -> "CodeSession": ...
    def __enter__(self) -> "CodeSandbox": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...

@final
class Session:
    """Calls that keep their state; the sandbox is reset when the block ends."""

    def __enter__(self) -> "Session": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...
    def call(self, name: str, *args: _Number) -> Any: ...
    def call_bytes(self, name: str, data: Union[bytes, bytearray]) -> bytes: ...
    def call_json(self, name: str, obj: _Json) -> _Json: ...

@final
class Sandbox:
    """A WebAssembly module whose every call starts from a clean slate."""

    def __new__(
        cls,
        module: Union[_Path, bytes, bytearray],
        *,
        memory_limit: Optional[int] = None,
        timeout: Optional[_Seconds] = None,
        fuel: Optional[int] = None,
        init: Optional[str] = None,
        host_functions: Optional[
            Mapping[Union[str, Tuple[str, str]], Callable[..., Union[None, _Number, Tuple[_Number, ...]]]]
        ] = None,
        bytes_host_functions: Optional[Mapping[Union[str, Tuple[str, str]], Callable[[bytes], bytes]]] = None,
        stack_limit: Optional[int] = None,
        output_limit: Optional[int] = None,
    ) -> "Sandbox": ...
    def call(self, name: str, *args: _Number) -> Union[None, int, float, Tuple[Union[int, float], ...]]: ...
    def call_bytes(self, name: str, data: Union[bytes, bytearray]) -> bytes: ...
    def call_json(self, name: str, obj: _Json) -> _Json: ...
    def session(self) -> Session: ...
    @property
    def last_reset(self) -> Optional[Dict[str, Any]]: ...
    @property
    def exports(self) -> Dict[str, Tuple[List[str], List[str]]]: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Sandbox": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool: ...
