//! The JavaScript guest through the core library's public API, driven as
//! the code-execution layer drives the Python guest.

mod common;

use std::sync::Arc;

use common::{Door, module, run, sandbox, turn};
use serde_json::{Value, json};

#[test]
fn the_module_speaks_the_python_guests_abi() {
    let Some(module) = module() else { return };
    let exports: Vec<String> = module.functions().map(|f| f.name().to_string()).collect();
    for name in ["turn", "host_alloc", "_initialize"] {
        assert!(
            exports.iter().any(|e| e == name),
            "no export {name} in {exports:?}"
        );
    }
    let turn = module.function("turn").unwrap();
    assert_eq!(format!("{:?}", turn.params()), "[I32, I32]");
    assert_eq!(format!("{:?}", turn.results()), "[I32]");
    let imports: Vec<(String, String)> = module
        .imports()
        .map(|i| (i.module().to_string(), i.name().to_string()))
        .collect();
    let foreign: Vec<&(String, String)> = imports
        .iter()
        .filter(|(m, _)| m != "wasi_snapshot_preview1")
        .collect();
    assert_eq!(
        foreign,
        [&("host".to_string(), "call".to_string())],
        "imports: {imports:?}"
    );
    let call = module.imports().find(|i| i.module() == "host").unwrap();
    let signature = call.signature().unwrap();
    assert_eq!(format!("{:?}", signature.params()), "[I32, I32, I32, I32]");
    assert_eq!(format!("{:?}", signature.results()), "[I32]");
}

#[test]
fn console_writes_to_stdout_and_stderr() {
    let Some(t) = run(r#"
        console.log("hi", 1 + 1, 0.5, {a: 1, b: [true, null]}, [1, "x"], undefined, null);
        console.info(function foo() {}, () => 1, new TypeError("boom"), 10n, Symbol("s"));
        console.debug({u: undefined, f() {}}, [undefined], -0, NaN);
        const c = {}; c.self = c; console.log(c);
        print("printed", 7);
        console.error("to", "stderr");
        console.warn({w: 1});
    "#) else {
        return;
    };
    assert_eq!(t.status, 0, "{t:?}");
    assert_eq!(
        t.stdout,
        "hi 2 0.5 {\"a\":1,\"b\":[true,null]} [1,\"x\"] undefined null\n\
         [Function foo] [Function (anonymous)] TypeError: boom 10n Symbol(s)\n\
         {\"f\":\"[Function f]\"} [null] 0 NaN\n\
         {\"self\":\"[Circular]\"}\n\
         printed 7\n"
    );
    assert_eq!(t.stderr, "to stderr\n{\"w\":1}\n");
}

#[test]
fn exit_ends_the_turn_with_its_code() {
    let Some(t) = run("console.log('before'); exit(3); console.log('after')") else {
        return;
    };
    assert_eq!(
        (t.status, t.stdout.as_str(), t.stderr.as_str()),
        (3, "before\n", "")
    );
    // try/catch cannot catch it, finally blocks do not run after it.
    let t = run(
        "try { exit(260) } catch (e) { console.log('caught') } finally { console.log('finally') }",
    )
    .unwrap();
    assert_eq!((t.status, t.stdout.as_str()), (260 & 0xFF, ""));
    let t = run("exit()").unwrap();
    assert_eq!(t.status, 0);
    // From a promise job, and from an async function.
    let t = run("Promise.resolve().then(() => exit(5)).then(() => console.log('no'))").unwrap();
    assert_eq!((t.status, t.stdout.as_str()), (5, ""));
    let t = run("(async () => { await null; try { exit(6) } catch (e) {} console.log('no') })()")
        .unwrap();
    assert_eq!((t.status, t.stdout.as_str()), (6, ""));
}

#[test]
fn an_uncaught_exception_is_status_1_with_the_error_and_stack() {
    let Some(t) = run(
        "function inner() { undefined_function() }\nfunction outer() { inner() }\nconsole.log('ran'); outer()",
    ) else {
        return;
    };
    assert_eq!(t.status, 1, "{t:?}");
    assert_eq!(t.stdout, "ran\n");
    assert!(
        t.stderr
            .starts_with("Uncaught ReferenceError: undefined_function is not defined\n"),
        "{}",
        t.stderr
    );
    assert!(t.stderr.contains("at inner (<input>:1"), "{}", t.stderr);
    assert!(t.stderr.contains("at outer (<input>:2"), "{}", t.stderr);
    assert!(t.stderr.ends_with('\n'));

    let t = run("null.x").unwrap();
    assert!(
        t.stderr
            .starts_with("Uncaught TypeError: cannot read property 'x' of null"),
        "{}",
        t.stderr
    );
    let t = run("throw 42").unwrap();
    assert_eq!((t.status, t.stderr.as_str()), (1, "Uncaught 42\n"));
    let t = run("throw {code: 7}").unwrap();
    assert_eq!(
        (t.status, t.stderr.as_str()),
        (1, "Uncaught {\"code\":7}\n")
    );
    let t = run("syntax error here").unwrap();
    assert_eq!(t.status, 1);
    assert!(
        t.stderr.starts_with("Uncaught SyntaxError:"),
        "{}",
        t.stderr
    );
}

#[test]
fn promises_are_run_and_awaited() {
    let Some(t) = run("Promise.resolve(1).then(v => console.log('then', v)); console.log('sync')")
    else {
        return;
    };
    assert_eq!((t.status, t.stdout.as_str()), (0, "sync\nthen 1\n"));
    let t = run("(async () => { await null; console.log('awaited'); return 1 })()").unwrap();
    assert_eq!(
        (t.status, t.stdout.as_str(), t.stderr.as_str()),
        (0, "awaited\n", "")
    );
    let t = run("(async () => { await null; throw new Error('late') })()").unwrap();
    assert_eq!(t.status, 1);
    assert!(
        t.stderr.starts_with("Uncaught Error: late\n"),
        "{}",
        t.stderr
    );
    let t =
        run("Promise.reject(new RangeError('nobody caught me')); console.log('after')").unwrap();
    assert_eq!((t.status, t.stdout.as_str()), (1, "after\n"));
    assert!(
        t.stderr
            .starts_with("Uncaught (in promise) RangeError: nobody caught me\n"),
        "{}",
        t.stderr
    );
    // Handled later in the same turn: no error.
    let t = run(
        "const p = Promise.reject(new Error('x')); p.catch(e => console.log('handled', e.message))",
    )
    .unwrap();
    assert_eq!(
        (t.status, t.stdout.as_str(), t.stderr.as_str()),
        (0, "handled x\n", "")
    );
}

#[test]
fn globals_of_one_turn_are_seen_by_the_next_and_a_reset_undoes_a_run() {
    let Some(module) = module() else { return };
    let mut sandbox = sandbox(&module, None, &Door::default());
    let snapshot = {
        let mut session = sandbox.session();
        let setup = turn(
            &mut session,
            "var a = 1; let b = 2; const c = 3; function d() { return 4 } globalThis.e = 5; class K { k() { return 6 } }",
        );
        assert_eq!(setup.status, 0, "{setup:?}");
        let next = turn(&mut session, "console.log(a, b, c, d(), e, new K().k())");
        assert_eq!(
            (next.status, next.stdout.as_str()),
            (0, "1 2 3 4 5 6\n"),
            "{next:?}"
        );
        let snapshot = session.snapshot().expect("a snapshot");
        session.finish().expect("the reset");
        snapshot
    };
    // The snapshot becomes the clean slate every session returns to.
    sandbox.restore(&snapshot).expect("restore");
    for round in 0..3 {
        let mut session = sandbox.session();
        let t = turn(
            &mut session,
            "console.log(typeof run_global, a, b); var run_global = 1; a = 100; globalThis.e = 'changed'; Math.random()",
        );
        assert_eq!(
            (t.status, t.stdout.as_str()),
            (0, "undefined 1 2\n"),
            "round {round}: {t:?}"
        );
        session.finish().expect("the reset");
    }
    sandbox.restore(&snapshot).expect("restore");
    let mut session = sandbox.session();
    let t = turn(&mut session, "console.log(e)");
    assert_eq!(t.stdout, "5\n");
}

#[test]
fn call_tool_round_trips_through_the_door() {
    let Some(module) = module() else { return };
    let door = Door::default();
    let tool: common::Tool = Arc::new(|request: &Value| {
        let id = request["id"].clone();
        match request["tool"].as_str() {
            Some("add") => {
                let sum =
                    request["args"]["a"].as_f64().unwrap() + request["args"]["b"].as_f64().unwrap();
                Ok(
                    json!({"v": 1, "id": id, "ok": true, "value": {"sum": sum, "echo": request["args"]}}),
                )
            }
            Some("broken") => Err(-2),
            _ => Ok(
                json!({"v": 1, "id": id, "ok": false, "error": {"kind": "unknown_tool", "message": "no such tool"}}),
            ),
        }
    });
    *door.tool.lock().unwrap() = Some(tool);
    let mut sandbox = sandbox(&module, None, &door);
    let mut session = sandbox.session();
    for _ in 0..4 {
        let block: i32 = session.call_typed("host_alloc", (4096,)).unwrap();
        door.blocks.lock().unwrap().push(block as u32);
    }
    let t = turn(
        &mut session,
        r#"
        const r = call_tool("add", {a: 1, b: 2, s: "ü"});
        console.log(r.sum, JSON.stringify(r.echo));
        try { call_tool("nope") } catch (e) {
            console.log(e instanceof ToolError, e instanceof Error, e.name, e.kind, e.message);
        }
        try { call_tool("broken", {}) } catch (e) { console.log(e.constructor.name, e.message) }
        "#,
    );
    assert_eq!(t.status, 0, "{t:?}");
    assert_eq!(
        t.stdout,
        "3 {\"a\":1,\"b\":2,\"s\":\"ü\"}\ntrue true ToolError unknown_tool no such tool\nError the tool door failed (status -2)\n"
    );
    let requests = door.requests.lock().unwrap().clone();
    assert_eq!(
        requests[0],
        json!({"v": 1, "id": 1, "op": "call", "tool": "add", "args": {"a": 1, "b": 2, "s": "ü"}})
    );
    assert_eq!(
        requests[1],
        json!({"v": 1, "id": 2, "op": "call", "tool": "nope", "args": {}})
    );
    assert_eq!(requests[2]["id"], json!(3));
}

#[test]
fn running_out_of_memory_is_an_uncaught_internal_error() {
    let Some(module) = module() else { return };
    let mut sandbox = sandbox(&module, Some(48 << 20), &Door::default());
    let snapshot = {
        let mut session = sandbox.session();
        assert_eq!(turn(&mut session, "var kept = 'setup'").status, 0);
        let snapshot = session.snapshot().unwrap();
        session.finish().unwrap();
        snapshot
    };
    sandbox.restore(&snapshot).unwrap();
    for code in [
        // Many small objects.
        "const a = []; while (true) a.push({x: a.length, y: [1, 2, 3]});",
        // One huge string (concatenation alone makes ropes, not copies).
        "const s = 'x'.repeat(1 << 29);",
        "let s = 'ab'; while (true) s = (s + s).toUpperCase();",
        // Huge typed arrays.
        "const bufs = []; while (true) bufs.push(new Uint8Array(8 << 20));",
    ] {
        let mut session = sandbox.session();
        let t = turn(&mut session, code);
        assert_eq!(t.status, 1, "{code}: {t:?}");
        assert!(t.stderr.contains("out of memory"), "{code}: {}", t.stderr);
        assert!(t.stderr.starts_with("Uncaught "), "{code}: {}", t.stderr);
        session.finish().unwrap();
        // The next run starts clean.
        let mut session = sandbox.session();
        let t = turn(&mut session, "console.log(kept)");
        assert_eq!(
            (t.status, t.stdout.as_str()),
            (0, "setup\n"),
            "after {code}: {t:?}"
        );
        session.finish().unwrap();
    }
}

#[test]
fn deep_recursion_is_a_range_error() {
    let Some(t) = run("function down(n) { return down(n + 1) + 1 }\n\
         try { down(0) } catch (e) { console.log(e instanceof RangeError, e.message) }\n\
         const deep = (n) => n === 0 ? 0 : 1 + deep(n - 1);\n\
         console.log(deep(300));")
    else {
        return;
    };
    assert_eq!(
        (t.status, t.stdout.as_str()),
        (0, "true Maximum call stack size exceeded\n300\n"),
        "{t:?}"
    );
    let t = run("function down(n) { return down(n + 1) + 1 } down(0)").unwrap();
    assert_eq!(t.status, 1);
    assert!(
        t.stderr
            .starts_with("Uncaught RangeError: Maximum call stack size exceeded"),
        "{}",
        t.stderr
    );
    // Recursion through native frames (a callback of Array.prototype.map,
    // getters, JSON.stringify's toJSON) is caught too.
    let t = run("function viaMap(n) { return [n].map(viaMap) }\n\
         try { viaMap(0) } catch (e) { console.log(e.name) }\n\
         const o = { get g() { return this.g } };\n\
         try { o.g } catch (e) { console.log(e.name) }\n\
         const j = { toJSON() { return JSON.stringify(j) } };\n\
         try { JSON.stringify(j) } catch (e) { console.log(e.name) }")
    .unwrap();
    assert_eq!(
        (t.status, t.stdout.as_str()),
        (0, "RangeError\nRangeError\nRangeError\n"),
        "{t:?}"
    );
}

#[test]
fn the_stack_quickjs_may_use_can_be_set_from_the_environment() {
    let Some(module) = module() else { return };
    let depth = |wasi: cleanslate::WasiConfig| {
        let mut sandbox = cleanslate::Sandbox::builder(&module)
            .wasi(wasi)
            .host_fn_with_context("host", "call", |_, _| Ok(vec![cleanslate::Val::I32(-1)]))
            .build()
            .unwrap();
        let mut session = sandbox.session();
        let t = turn(
            &mut session,
            "let n = 0; function r() { n++; r() } try { r() } catch (e) { console.log(n) }",
        );
        t.stdout.trim().parse::<u32>().unwrap()
    };
    let default = depth(cleanslate::WasiConfig::new());
    let small = depth(cleanslate::WasiConfig::new().env("CLEANSLATE_JS_STACK_SIZE", "32768"));
    assert!(default > 300, "default depth {default}");
    assert!(
        small < default / 2,
        "32 KiB gives {small}, the default {default}"
    );
}

#[test]
fn recursion_that_quickjs_does_not_measure_is_a_clean_stack_overflow_trap() {
    // JSON.parse and the parser recurse without using the shadow stack
    // QuickJS measures: the host's native stack limit ends them, and the
    // reset makes the sandbox whole again.
    let Some(module) = module() else { return };
    let mut sandbox = sandbox(&module, None, &Door::default());
    for code in [
        "JSON.parse('['.repeat(100000) + ']'.repeat(100000))",
        "eval('('.repeat(100000) + ')'.repeat(100000))",
    ] {
        let mut session = sandbox.session();
        let error = common::try_turn(&mut session, code).expect_err(code);
        assert_eq!(
            error.kind(),
            cleanslate::ErrorKind::StackOverflow,
            "{code}: {error}"
        );
        drop(session);
        let mut session = sandbox.session();
        let t = turn(&mut session, "console.log('alive')");
        assert_eq!((t.status, t.stdout.as_str()), (0, "alive\n"));
        session.finish().unwrap();
    }
}

#[test]
fn a_null_pointer_for_code_is_an_error_and_empty_code_is_fine() {
    let Some(module) = module() else { return };
    let mut sandbox = sandbox(&module, None, &Door::default());
    let mut session = sandbox.session();
    let call =
        cleanslate::Call::values("turn", &[cleanslate::Val::I32(0), cleanslate::Val::I32(10)]);
    let result = session.call_with(&call).unwrap();
    assert_eq!(result.values(), [cleanslate::Val::I32(1)]);
    assert!(String::from_utf8_lossy(result.stderr()).contains("out of memory"));
    assert_eq!(turn(&mut session, "").status, 0);
    assert_eq!(turn(&mut session, "1").status, 0);
}
