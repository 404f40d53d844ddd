"""Sandbox: WebAssembly modules, plugin-style, on the core library."""

import threading

import pytest

import cleanslate


def host_op(mode):
    # guests/example.wat: host_op(0) succeeds with 7; here 1 raises.
    if mode == 1:
        raise ValueError("mode 1 refused")
    return 7


@pytest.fixture
def example(example_wat):
    sb = cleanslate.Sandbox(
        example_wat,
        init="init",
        timeout=1.0,
        memory_limit=16 << 20,
        host_functions={"cleanslate_demo.host_op": host_op},
    )
    yield sb
    sb.close()


def test_add(example):
    assert example.call("add", 2, 3) == 5
    assert example.exports["add"] == (["i32", "i32"], ["i32"])
    assert example.call("initialised") == 1 + 0x1217, "init ran before the snapshot"


def test_state_does_not_leak(example):
    assert example.call("read_calls") == 0
    example.call("add", 1, 1)
    assert example.call("read_calls") == 0
    example.call("leave_secret", 1234)
    assert example.call("read_secret") == 0


def test_trap_then_next_call_works(example):
    with pytest.raises(cleanslate.TrapError) as e:
        example.call("trap_unreachable", 99)
    assert e.value.kind == "trap"
    assert e.value.trap_code == "unreachable"
    assert isinstance(e.value, cleanslate.Error)
    report = example.last_reset
    assert report["path"] in ("in_place", "fresh", "padded"), report
    assert report["dirty_pages"] >= 1
    assert example.call("read_secret") == 0
    assert example.call("add", 2, 3) == 5


def test_other_failures(example):
    with pytest.raises(cleanslate.TimeoutError) as e:
        example.call("spin", 5)
    assert e.value.kind == "timeout"
    with pytest.raises(cleanslate.OutOfMemoryError):
        example.call("out_of_memory", 5)
    with pytest.raises(cleanslate.StackOverflowError):
        example.call("stack_overflow", 5)
    assert example.call("read_secret") == 0
    assert example.call("memory_pages") == 1


def test_host_functions(example):
    assert example.call("call_host", 5, 0) == 7
    with pytest.raises(cleanslate.HostFunctionError) as e:
        example.call("call_host", 5, 1)
    assert e.value.kind == "host_error"
    assert "mode 1 refused" in e.value.message
    assert isinstance(e.value.__cause__, ValueError)
    assert example.call("read_secret") == 0


def test_session(example):
    with example.session() as s:
        s.call("leave_secret", 77)
        assert s.call("read_secret") == 77
        assert example.call("read_secret") == 77, "the sandbox's own calls are in the session"
        before = example.call("read_calls")
        s.call("add", 1, 2)
        assert s.call("read_calls") == before + 1
        # Host functions run on the session's thread and take the GIL there.
        assert s.call("call_host", 77, 0) == 7
    assert example.call("read_secret") == 0
    assert example.last_reset is not None


def test_failed_call_poisons_the_session(example):
    with example.session() as s:
        with pytest.raises(cleanslate.TrapError):
            s.call("trap_unreachable", 1)
        with pytest.raises(cleanslate.Error) as e:
            s.call("add", 1, 2)
        assert e.value.kind == "poisoned"
    assert example.call("add", 1, 2) == 3


def test_bad_arguments(example):
    with pytest.raises(cleanslate.InvalidArgumentsError) as e:
        example.call("add", 1)
    assert e.value.kind == "invalid_arguments"
    with pytest.raises(cleanslate.InvalidArgumentsError):
        example.call("add", "1", 2)
    with pytest.raises(cleanslate.InvalidArgumentsError):
        example.call("add", 1 << 40, 2)
    with pytest.raises(cleanslate.FunctionNotFoundError) as e:
        example.call("nope")
    assert e.value.kind == "function_not_found"


def test_missing_import_and_bad_module(example_wat, tmp_path):
    with pytest.raises(cleanslate.Error) as e:
        cleanslate.Sandbox(example_wat)
    assert e.value.kind == "missing_import"
    with pytest.raises(cleanslate.Error) as e:
        cleanslate.Sandbox(b"not wasm")
    assert e.value.kind == "invalid_module"
    with pytest.raises(cleanslate.InvalidArgumentsError):
        cleanslate.Sandbox(example_wat, host_functions={"nothing.here": host_op})


def test_module_from_bytes_and_fuel():
    wat = b"""(module
        (func (export "count") (param i64) (result i64) (local $i i64)
          (loop $l (local.set $i (i64.add (local.get $i) (i64.const 1)))
                   (br_if $l (i64.lt_u (local.get $i) (local.get 0))))
          (local.get $i))
        (func (export "half") (param f64) (result f64) (f64.div (local.get 0) (f64.const 2))))"""
    sb = cleanslate.Sandbox(wat, fuel=100_000)
    assert sb.call("count", 10) == 10
    assert sb.call("half", 3) == 1.5
    with pytest.raises(cleanslate.OutOfFuelError):
        sb.call("count", 10**9)


def test_data_abi(data_wat):
    seen = []

    def kv_get(key):
        seen.append(key)
        if key == b"colour":
            return b"teal"
        raise KeyError(key)

    sb = cleanslate.Sandbox(data_wat, bytes_host_functions={"kv.get": kv_get})
    assert sb.call_bytes("upper", b"hello") == b"HELLO"
    assert sb.call_bytes("echo", bytearray(b"raw")) == b"raw"
    assert sb.call_json("echo", {"a": [1, 2.5, None, True], "b": "x"}) == {"a": [1, 2.5, None, True], "b": "x"}
    assert sb.call_bytes("lookup", b"colour") == b"teal"
    assert seen == [b"colour"]
    with pytest.raises(cleanslate.HostFunctionError) as e:
        sb.call_bytes("lookup", b"shape")
    assert isinstance(e.value.__cause__, KeyError)
    with pytest.raises(cleanslate.GuestError) as e:
        sb.call_bytes("fail", b"the guest says no")
    assert e.value.kind == "guest_error"
    assert "the guest says no" in e.value.message
    assert sb.call_json("upper", {"a": 1}) == {"A": 1}
    with pytest.raises(cleanslate.Error) as e:
        sb.call_json("upper", None)  # NULL is not JSON
    assert e.value.kind == "invalid_guest_output"
    with pytest.raises(cleanslate.Error) as e:
        sb.call_json("fail", "nope")
    assert e.value.kind == "guest_error"
    with pytest.raises(cleanslate.InvalidArgumentsError):
        sb.call_json("echo", {1: object()})
    with sb.session() as s:
        assert s.call_bytes("echo", b"in a session") == b"in a session"
        assert s.call_json("echo", [1]) == [1]


def test_threads_share_a_sandbox(example):
    results = []

    def worker(t):
        for i in range(50):
            results.append(example.call("add", t, i) == t + i and example.call("read_calls") == 0)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 200 and all(results)


def test_closed(example_wat):
    with cleanslate.Sandbox(example_wat, host_functions={("cleanslate_demo", "host_op"): host_op}) as sb:
        assert sb.call("add", 1, 1) == 2
    with pytest.raises(cleanslate.Error) as e:
        sb.call("add", 1, 1)
    assert e.value.kind == "unrecoverable"
