"""CodeSandbox(language="javascript"): passed through to the exec layer's
QuickJS guest. Builds without that guest raise GuestNotFoundError; these
tests then skip with the reason, unless CLEANSLATE_EXPECT_JAVASCRIPT=1."""

import os

import pytest

import cleanslate


@pytest.fixture(scope="module")
def js():
    sb = cleanslate.CodeSandbox(language="javascript", setup="var base = 40", timeout=5)
    assert sb.language == "javascript"
    try:
        sb.start()
    except cleanslate.GuestNotFoundError as e:
        if os.environ.get("CLEANSLATE_EXPECT_JAVASCRIPT") == "1":
            pytest.fail(f"no JavaScript guest, but CLEANSLATE_EXPECT_JAVASCRIPT=1: {e.message}")
        assert "no JavaScript guest" in e.message, e.message
        print("SKIP:", e.message)
        pytest.skip(e.message)
    yield sb
    sb.close()


def test_language_reaches_the_exec_layer():
    # Whatever the build has, "javascript" must not be refused as a language
    # nor start the Python guest.
    sb = cleanslate.CodeSandbox(language="js")
    assert sb.language == "javascript"
    try:
        sb.start()
    except cleanslate.GuestNotFoundError as e:
        assert "JavaScript" in e.message
    finally:
        sb.close()


def test_console_log(js):
    r = js.run("console.log(base + 2)")
    assert r.ok, r
    assert r.stdout == "42\n"


def test_clean_slate(js):
    assert js.run("globalThis.leak = 1; base = 0").ok
    assert js.run("console.log(typeof leak, base)").stdout == "undefined 40\n"


def test_timeout(js):
    r = js.run("for(;;){}")
    assert r.error_kind == "timeout"
    assert js.run("console.log('after')").stdout == "after\n"


def test_tool():
    sb = cleanslate.CodeSandbox(language="javascript", tools={"add": lambda a, b: a + b})
    try:
        sb.start()
    except cleanslate.GuestNotFoundError as e:
        if os.environ.get("CLEANSLATE_EXPECT_JAVASCRIPT") == "1":
            raise
        pytest.skip(e.message)
    r = sb.run("console.log(call_tool('add', {a: 2, b: 3}))")
    assert r.stdout == "5\n", r
    sb.close()
