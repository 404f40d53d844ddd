//! One call's outcome, printed as a JSON line or as readable text.

use cleanslate::{Error, ResetReport, Val};
use serde::Serialize;
use serde_json::Value;

#[derive(Serialize)]
pub struct CallRecord {
    pub call: String,
    pub args: Vec<Value>,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<Value>>,
    /// A bytes/JSON function's output: text when UTF-8, else base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// `"base64"` when `output` is base64; absent when it is the text itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_encoding: Option<&'static str>,
    /// A WASI guest's `proc_exit` code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// What a WASI guest wrote to stdout (text, or base64 as above).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout_encoding: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr_encoding: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorRecord>,
    pub reset: ResetRecord,
}

#[derive(Serialize)]
pub struct ErrorRecord {
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trap: Option<&'static str>,
    pub message: String,
    /// For `reset_failed`: the call's own error, kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<Box<ErrorRecord>>,
}

#[derive(Serialize)]
pub struct ResetRecord {
    pub path: &'static str,
    /// Why the fresh-instance path ran instead of the in-place one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    pub dirty_pages: u64,
    /// Whether the in-place path walked the page tables for written pages.
    pub scanned_page_tables: bool,
    /// Bytes by which the in-place path lowered grown memories again.
    pub memory_lowered_bytes: u64,
    pub micros: f64,
    pub verified: bool,
}

/// Bytes for a JSON record: the text when UTF-8, else base64 and the
/// encoding's name.
pub fn encode(bytes: &[u8]) -> (String, Option<&'static str>) {
    use base64::Engine;
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_string(), None),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            Some("base64"),
        ),
    }
}

/// An optional record field and its encoding, from optional bytes.
pub fn encode_field(bytes: Option<&[u8]>) -> (Option<String>, Option<&'static str>) {
    match bytes.map(encode) {
        Some((text, encoding)) => (Some(text), encoding),
        None => (None, None),
    }
}

impl ErrorRecord {
    pub fn from_error(error: &Error) -> ErrorRecord {
        ErrorRecord {
            kind: error.kind().as_str(),
            trap: error.kind().trap_code().map(|c| c.as_str()),
            message: error.to_string(),
            original: error
                .original_error()
                .map(|e| Box::new(ErrorRecord::from_error(e))),
        }
    }
}

impl ResetRecord {
    /// The reset a call caused, or `none` when the call never reached the
    /// guest (so nothing needed resetting).
    pub fn from_report(report: Option<&ResetReport>) -> ResetRecord {
        match report {
            Some(r) => ResetRecord {
                path: r.path().as_str(),
                reason: r.fallback_reason().map(|f| f.as_str()),
                dirty_pages: r.dirty_pages(),
                scanned_page_tables: r.scanned_page_tables(),
                memory_lowered_bytes: r.memory_lowered_bytes(),
                micros: (r.duration().as_nanos() as f64 / 10.0).round() / 100.0,
                verified: r.verified(),
            },
            None => ResetRecord {
                path: "none",
                reason: None,
                dirty_pages: 0,
                scanned_page_tables: false,
                memory_lowered_bytes: 0,
                micros: 0.0,
                verified: false,
            },
        }
    }
}

/// A value as JSON: a number where JSON can hold it, else its text
/// (`"nan"`, `"inf"`).
pub fn json_value(value: &Val) -> Value {
    match value {
        Val::I32(v) => Value::from(*v),
        Val::I64(v) => Value::from(*v),
        // Through the shortest decimal text, so 0.1f32 prints as 0.1.
        Val::F32(v) => float(
            v.to_string().parse::<f64>().unwrap_or(f64::NAN),
            v.to_string(),
        ),
        Val::F64(v) => float(*v, v.to_string()),
        // A kind of value added later: its text, which `Display` defines.
        other => Value::String(other.to_string()),
    }
}

fn float(value: f64, text: String) -> Value {
    serde_json::Number::from_f64(value)
        .map(Value::Number)
        .unwrap_or(Value::String(text))
}

impl CallRecord {
    /// One readable line.
    pub fn to_text(&self) -> String {
        let args: Vec<String> = self.args.iter().map(plain).collect();
        let head = format!("{}({})", self.call, args.join(", "));
        let body = match (&self.results, &self.error) {
            (None, None) if self.output.is_some() => {
                let output = self.output.as_deref().unwrap_or_default();
                match self.output_encoding {
                    Some(encoding) => format!("{head} = ({encoding}) {output}"),
                    None => format!("{head} = {output}"),
                }
            }
            (Some(results), _) if self.exit_code.is_some() && results.is_empty() => {
                format!(
                    "{head} exited with code {}",
                    self.exit_code.unwrap_or_default()
                )
            }
            (Some(results), _) => {
                let results: Vec<String> = results.iter().map(plain).collect();
                match results.len() {
                    0 => format!("{head} ok"),
                    1 => format!("{head} = {}", results[0]),
                    _ => format!("{head} = ({})", results.join(", ")),
                }
            }
            (None, Some(error)) => format!("{head} failed [{}]: {}", error.kind, error.message),
            (None, None) => head,
        };
        let reset = &self.reset;
        if reset.path == "none" {
            return format!("{body}  (nothing ran, no reset needed)");
        }
        format!(
            "{body}  (reset: {}{}, {} page(s), {:.1} µs{})",
            reset.path,
            reset
                .reason
                .map(|r| format!(" because {r}"))
                .unwrap_or_default(),
            reset.dirty_pages,
            reset.micros,
            if reset.verified { ", verified" } else { "" }
        )
    }
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
