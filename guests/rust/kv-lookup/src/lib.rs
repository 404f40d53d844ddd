//! Looks keys up through a host function: the host-call example guest.
#![no_std]
extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use cleanslate_guest::host;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Request {
    keys: Vec<String>,
}

#[derive(Serialize)]
struct Answer {
    key: String,
    value: String,
}

/// Ask the host's `kv.get` for each key (bytes in, bytes out).
fn lookup(request: Request) -> Result<Vec<Answer>, String> {
    cleanslate_guest::log::info(&format!("looking up {} keys", request.keys.len()));
    request
        .keys
        .into_iter()
        .map(|key| {
            let value = host::call("kv.get", key.as_bytes());
            let value =
                String::from_utf8(value).map_err(|_| format!("value of {key} is not UTF-8"))?;
            Ok(Answer { key, value })
        })
        .collect()
}

cleanslate_guest::export_json!(lookup);
