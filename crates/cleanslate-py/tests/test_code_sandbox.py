"""CodeSandbox: Python code with a clean slate per run."""

import threading

import pytest

import cleanslate


def test_print(shared_sandbox):
    r = shared_sandbox.run("print(1+1)")
    assert r.ok is True
    assert r.stdout == "2\n"
    assert r.stdout_bytes == b"2\n"
    assert r.stderr == ""
    assert r.exit_code == 0
    assert r.error_kind is None and r.error_message is None
    assert r.files == {}
    assert 0 < r.duration < 10
    assert isinstance(r.reset, dict) and r.reset["path"] != "none"
    d = r.to_dict()
    assert d["stdout"] == "2\n" and d["ok"] is True and d["error"] is None
    assert d["reset"] == r.reset
    assert repr(r).startswith("RunResult(ok=True, exit_code=0, stdout='2\\n'")


def test_setup_state_is_visible(shared_sandbox):
    r = shared_sandbox.run("print(base + 2, json.dumps([1]))")
    assert r.stdout == "42 [1]\n"


def test_variables_do_not_survive_a_success(shared_sandbox):
    assert shared_sandbox.run("secret = 'kept?'; base = 0").ok
    r = shared_sandbox.run("print('secret' in globals(), base)")
    assert r.stdout == "False 40\n"


def test_exception_is_a_result_and_leaves_nothing(shared_sandbox):
    r = shared_sandbox.run("leak = 1\nraise ValueError('boom')")
    assert r.ok is False
    assert r.exit_code == 1
    assert r.error_kind is None
    assert "ValueError: boom" in r.stderr
    assert shared_sandbox.run("print('leak' in globals())").stdout == "False\n"


def test_exit_code(shared_sandbox):
    r = shared_sandbox.run("import sys; print('hi'); sys.exit(3)")
    assert (r.ok, r.stdout, r.exit_code, r.error_kind) == (False, "hi\n", 3, None)


def test_timeout_then_clean(make_sandbox):
    sb = make_sandbox(timeout=0.5, setup="base = 1")
    r = sb.run("leak = 1\nwhile True: pass")
    assert r.ok is False
    assert r.error_kind == "timeout"
    assert r.exit_code is None
    assert r.error_message
    after = sb.run("print('leak' in globals(), base)")
    assert after.stdout == "False 1\n"
    sb.close()


def test_memory_exhaustion_then_clean(make_sandbox):
    sb = make_sandbox(memory_limit=128 << 20)
    r = sb.run("leak = 1\nx = bytearray(512 << 20)")
    assert r.error_kind == "out_of_memory", r
    assert r.exit_code is None
    after = sb.run("print('leak' in globals(), 'x' in globals())")
    assert after.stdout == "False False\n"
    sb.close()


def test_tool_returns_the_python_result(make_sandbox):
    calls = []

    def add(a, b):
        calls.append((a, b))
        return {"sum": a + b, "args": [a, b]}

    sb = make_sandbox(tools={"add": add})
    r = sb.run("r = call_tool('add', a=2, b=3)\nprint(r['sum'], r['args'])")
    assert r.stdout == "5 [2, 3]\n", r
    assert calls == [(2, 3)]
    sb.close()


def test_tool_exception_reaches_the_guest(make_sandbox):
    def boom(**kwargs):
        raise KeyError("no such user: " + kwargs["user"])

    sb = make_sandbox()
    sb.register_tool("boom", boom, description="always fails")
    code = (
        "try:\n"
        "    call_tool('boom', user='ada')\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, '|', e)\n"
    )
    r = sb.run(code)
    assert r.ok, r
    kind, message = r.stdout.strip().split(" | ", 1)
    assert kind == "ToolError"
    assert "KeyError" in message and "no such user: ada" in message
    sb.close()


def test_register_tool_after_start_rebuilds(make_sandbox):
    sb = make_sandbox(setup="ready = True").start()
    assert sb.started
    r = sb.run("call_tool('late')")
    assert r.exit_code == 1 and "no tools are registered" in r.stderr
    sb.register_tool("late", lambda: "here")
    r = sb.run("print(call_tool('late'), ready)")
    assert r.stdout == "here True\n", r
    assert sb.tools == ["late"]
    sb.close()


def test_threads(make_sandbox):
    # A tool makes every run take the GIL back while another thread waits
    # for the sandbox: this must not deadlock.
    sb = make_sandbox(tools={"double": lambda x: 2 * x})
    errors = []
    outputs = {}

    def worker(t):
        try:
            for i in range(3):
                n = t * 10 + i
                r = sb.run(f"mine = {n}\nprint(call_tool('double', x=mine), 'mine' in globals())")
                outputs[n] = r.stdout
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    assert errors == []
    assert outputs == {t * 10 + i: f"{2 * (t * 10 + i)} True\n" for t in range(4) for i in range(3)}
    sb.close()


def test_pool_threads(make_sandbox):
    sb = make_sandbox(pool_size=2, setup="base = 7")
    results = [None] * 6

    def worker(i):
        results[i] = sb.run(f"x = base * {i}\nprint(x)").stdout

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == [f"{7 * i}\n" for i in range(6)]
    sb.close()


def test_output_dir(make_sandbox, tmp_path):
    out = tmp_path / "out"
    sb = make_sandbox(output_dir=out)
    r = sb.run("open('/output/report.txt', 'w').write('done')\nprint('ok')")
    assert r.ok, r
    assert r.files == {"report.txt": b"done"}
    assert (out / "report.txt").read_bytes() == b"done"
    # The next run starts with an empty /output.
    r = sb.run("import os; print(os.listdir('/output'))")
    assert r.stdout == "[]\n"
    assert r.files == {}
    sb.close()


def test_input_dir(make_sandbox, tmp_path):
    (tmp_path / "data.txt").write_text("from the host")
    sb = make_sandbox(input_dir=str(tmp_path))
    assert sb.run("print(open('/input/data.txt').read())").stdout == "from the host\n"
    sb.close()


def test_context_manager(make_sandbox):
    with make_sandbox() as sb:
        assert sb.run("print('in')").stdout == "in\n"
        assert sb.started
    assert not sb.started


def test_bad_arguments_raise_with_a_kind(code_options):
    with pytest.raises(cleanslate.InvalidArgumentsError) as e:
        cleanslate.CodeSandbox(language="cobol")
    assert e.value.kind == "invalid_arguments"
    assert "cobol" in e.value.message
    assert isinstance(e.value, cleanslate.Error)

    with pytest.raises(cleanslate.InvalidArgumentsError):
        cleanslate.CodeSandbox(timeout=0)

    sb = cleanslate.CodeSandbox(tools={"not a name": lambda: 1}, **code_options)
    with pytest.raises(cleanslate.InvalidArgumentsError) as e:
        sb.run("print(1)")
    assert e.value.kind == "invalid_arguments"

    with pytest.raises(cleanslate.GuestNotFoundError) as e:
        cleanslate.CodeSandbox(guest="/nonexistent/wasi-python").run("print(1)")
    assert e.value.kind == "guest_not_found"

    with pytest.raises(cleanslate.SetupFailedError) as e:
        cleanslate.CodeSandbox(setup="raise RuntimeError('bad setup')", **code_options).start()
    assert e.value.kind == "setup_failed"
    assert "bad setup" in e.value.message


def test_output_limit(make_sandbox):
    sb = make_sandbox(output_limit=1000)
    r = sb.run("print('x' * 5000)")
    assert r.error_kind == "output_too_large"
    assert len(r.stdout_bytes) <= 1000
    sb.close()


def test_setup_cache_stores_the_setup_unless_turned_off(make_sandbox, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    setups = tmp_path / "cleanslate" / "exec" / "setups"
    setup = "import json\nstored = json.dumps({'n': 3})"
    with make_sandbox(setup=setup, setup_cache=False) as sb:
        assert sb.run("print(stored)").stdout == '{"n": 3}\n'
    assert not setups.exists() or list(setups.iterdir()) == []
    for restored in (False, True):
        with make_sandbox(setup=setup) as sb:
            assert sb.setup_from_cache is None
            assert sb.run("print(stored)").stdout == '{"n": 3}\n'
            assert sb.setup_from_cache is restored
    assert len(list(setups.iterdir())) == 1


def test_a_session_shares_state_until_it_closes(make_sandbox):
    with make_sandbox(setup="base = 1", timeout=2, setup_cache=False) as sb:
        clean = sb.run("print(sorted(k for k in globals() if not k.startswith('_')))").stdout
        with sb.session() as s:
            assert s.run("rows = [3, 1, 2]\nopen('/tmp/kept', 'w').write('x')").ok
            r = s.run("print(sorted(rows), base, open('/tmp/kept').read())")
            assert r.stdout == "[1, 2, 3] 1 x\n", r.stderr
            # The sandbox's own runs go on beside the session, unseen by it.
            assert sb.run("print('rows' in dir())").stdout == "False\n"
            assert s.run("raise ValueError('no')").exit_code == 1
            assert s.run("print(rows[0])").stdout == "3\n"
        with pytest.raises(cleanslate.Error) as closed:
            s.run("print(1)")
        assert closed.value.kind == "session_ended"
        assert sb.run("print(sorted(k for k in globals() if not k.startswith('_')))").stdout == clean


def test_a_run_that_does_not_complete_ends_the_session(make_sandbox):
    with make_sandbox(timeout=1, setup_cache=False) as sb:
        s = sb.session()
        s.run("x = 1")
        assert s.run("while True: pass").error_kind == "timeout"
        with pytest.raises(cleanslate.Error) as ended:
            s.run("print(x)")
        assert ended.value.kind == "session_ended"
        assert "timeout" in str(ended.value)
        s.close()
        s.close()
