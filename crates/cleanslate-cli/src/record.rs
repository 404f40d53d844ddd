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
    pub micros: f64,
    pub verified: bool,
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
                micros: (r.duration().as_nanos() as f64 / 10.0).round() / 100.0,
                verified: r.verified(),
            },
            None => ResetRecord {
                path: "none",
                reason: None,
                dirty_pages: 0,
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
