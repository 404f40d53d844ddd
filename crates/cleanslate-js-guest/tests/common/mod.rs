//! Driving the JavaScript guest as the code-execution layer drives the
//! Python guest: `host_alloc` for the code, `turn(ptr, len)`, the status in
//! the low byte, and `host.call` answered from blocks the setup reserved.

#![allow(dead_code)]

use std::sync::{Arc, Mutex, OnceLock};

use cleanslate::{
    Call, CallResult, HostContext, HostFnError, Module, Runtime, Sandbox, Session, Val, WasiConfig,
};
use serde_json::Value;

/// The guest, or a skip: without the C toolchain the tests cannot run,
/// except in CI, where the build itself fails without it.
pub fn module() -> Option<Module> {
    static MODULE: OnceLock<Option<Module>> = OnceLock::new();
    MODULE
        .get_or_init(|| match cleanslate_js_guest::module() {
            Ok(bytes) => {
                let runtime = Runtime::new().expect("a runtime");
                Some(runtime.load_bytes(bytes).expect("the guest loads"))
            }
            Err(why) => {
                eprintln!("skipping: {why}");
                None
            }
        })
        .clone()
}

/// A tool the test host answers: the request frame in, the answer frame
/// (or a door status) out.
pub type Tool = Arc<dyn Fn(&Value) -> Result<Value, i32> + Send + Sync>;

/// The host side of `host.call`: answers go into `blocks` (from
/// `host_alloc`), one per call.
#[derive(Clone, Default)]
pub struct Door {
    pub blocks: Arc<Mutex<Vec<u32>>>,
    pub requests: Arc<Mutex<Vec<Value>>>,
    pub tool: Arc<Mutex<Option<Tool>>>,
}

impl Door {
    fn call(&self, ctx: &mut HostContext<'_>, args: &[Val]) -> Result<Vec<Val>, HostFnError> {
        let [
            Val::I32(ptr),
            Val::I32(len),
            Val::I32(out_ptr),
            Val::I32(out_len),
        ] = args
        else {
            return Err("host.call takes (ptr, len, out_ptr_ptr, out_len_ptr)".into());
        };
        let request = ctx.read_memory(u64::from(*ptr as u32), *len as u32 as usize)?;
        let request: Value =
            serde_json::from_slice(&request).map_err(|e| format!("bad frame: {e}"))?;
        self.requests.lock().unwrap().push(request.clone());
        let tool = self.tool.lock().unwrap().clone();
        let answer = match tool {
            Some(tool) => tool(&request),
            None => Err(-1),
        };
        let answer = match answer {
            Ok(answer) => serde_json::to_vec(&answer).unwrap(),
            Err(status) => return Ok(vec![Val::I32(status)]),
        };
        let Some(block) = self.blocks.lock().unwrap().pop() else {
            return Ok(vec![Val::I32(-2)]);
        };
        ctx.write_memory(u64::from(block), &answer)?;
        ctx.write_u32(u64::from(*out_ptr as u32), block)?;
        ctx.write_u32(u64::from(*out_len as u32), answer.len() as u32)?;
        Ok(vec![Val::I32(0)])
    }
}

/// A sandbox over the guest with `memory_limit` bytes (None: the default).
pub fn sandbox(module: &Module, memory_limit: Option<u64>, door: &Door) -> Sandbox {
    let door = door.clone();
    let mut builder = Sandbox::builder(module)
        .wasi(WasiConfig::new().arg("javascript"))
        .host_fn_with_context("host", "call", move |ctx, args| door.call(ctx, args));
    if let Some(limit) = memory_limit {
        builder = builder.memory_limit(limit);
    }
    builder.build().expect("the sandbox builds")
}

/// What a turn did.
#[derive(Debug)]
pub struct Turn {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Place `code` with `host_alloc` and run `turn(ptr, len)`.
pub fn turn(session: &mut Session<'_>, code: &str) -> Turn {
    let result = try_turn(session, code).unwrap_or_else(|e| {
        panic!(
            "the turn failed: {e}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(e.stdout()),
            String::from_utf8_lossy(e.stderr())
        )
    });
    let status = match result.values() {
        [Val::I32(status)] => *status,
        other => panic!("turn returned {other:?}"),
    };
    Turn {
        status,
        stdout: String::from_utf8_lossy(result.stdout()).into_owned(),
        stderr: String::from_utf8_lossy(result.stderr()).into_owned(),
    }
}

/// Like [`turn`], without unwrapping the call's outcome.
pub fn try_turn(session: &mut Session<'_>, code: &str) -> Result<CallResult, cleanslate::Error> {
    let ptr = if code.is_empty() {
        0
    } else {
        let ptr: i32 = session.call_typed("host_alloc", (code.len() as i32,))?;
        assert_ne!(ptr, 0, "host_alloc failed");
        session.write_memory(u64::from(ptr as u32), code.as_bytes())?;
        ptr
    };
    session.call_with(&Call::values(
        "turn",
        &[Val::I32(ptr), Val::I32(code.len() as i32)],
    ))
}

/// Run `code` in a fresh sandbox's first session.
pub fn run(code: &str) -> Option<Turn> {
    let module = module()?;
    let mut sandbox = sandbox(&module, None, &Door::default());
    let mut session = sandbox.session();
    Some(turn(&mut session, code))
}
