//! The pool's metrics in the Prometheus text exposition format, for
//! `GET /metrics`. The library hands out plain values; the wire format is
//! the server's business.

use std::fmt::Write;

use cleanslate::PoolMetrics;
use cleanslate::metrics::Histogram;

/// `metrics` as Prometheus text.
pub fn render(metrics: &PoolMetrics) -> String {
    let mut out = String::new();
    out.push_str("# HELP cleanslate_pool_calls_total Calls by function and outcome (ok or error kind).\n# TYPE cleanslate_pool_calls_total counter\n");
    for (function, outcome, n) in metrics.call_counts() {
        let _ = writeln!(
            out,
            "cleanslate_pool_calls_total{{function=\"{}\",outcome=\"{}\"}} {n}",
            escape(function),
            escape(outcome)
        );
    }
    histogram(
        &mut out,
        "cleanslate_pool_reset_duration_microseconds",
        "Duration of the reset after each call.",
        metrics.reset_micros(),
    );
    histogram(
        &mut out,
        "cleanslate_pool_reset_dirty_pages",
        "Pages each reset restored.",
        metrics.dirty_pages(),
    );
    histogram(
        &mut out,
        "cleanslate_pool_wait_microseconds",
        "Time callers waited for a free sandbox.",
        metrics.wait_micros(),
    );
    let single = [
        (
            "cleanslate_pool_in_use",
            "Sandboxes running a call.",
            "gauge",
            metrics.in_use(),
        ),
        (
            "cleanslate_pool_size",
            "Sandboxes in the pool.",
            "gauge",
            metrics.size(),
        ),
        (
            "cleanslate_pool_replacements_total",
            "Sandboxes replaced after a failed reset.",
            "counter",
            metrics.replacements(),
        ),
        (
            "cleanslate_pool_exhausted_total",
            "Calls refused because every sandbox stayed busy.",
            "counter",
            metrics.exhausted(),
        ),
    ];
    for (name, help, kind, value) in single {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    out
}

/// Whether this machine lets resets run in place, as a gauge (1 or 0): a
/// dashboard or alert finds the servers whose every reset replaces the
/// instance (a container's seccomp profile refusing `userfaultfd`, an old
/// kernel); the server's startup log says why.
pub fn in_place_resets(resets: &cleanslate::InPlaceResets) -> String {
    format!(
        "# HELP cleanslate_in_place_reset_available 1 if this machine lets resets run in place (userfaultfd write-protect and PAGEMAP_SCAN usable), 0 if every reset replaces the instance (the startup log says why).\n# TYPE cleanslate_in_place_reset_available gauge\ncleanslate_in_place_reset_available {}\n",
        u8::from(resets.available())
    )
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (bound, n) in h.buckets() {
        let le = if bound.is_infinite() {
            "+Inf".to_string()
        } else {
            bound.to_string()
        };
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", h.sum(), h.count());
}

/// A label value as the text format wants it: a function name comes from
/// the module, so it may hold quotes, backslashes or newlines.
fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cleanslate::{PoolConfig, Runtime, Sandbox, SandboxPool, Val};

    #[test]
    fn metrics_render_as_prometheus_text() {
        let module = Runtime::new()
            .unwrap()
            .load_bytes(
                r#"(module (memory 1)
                (func (export "canary") (param i32) (result i32)
                    (i32.store (i32.const 0) (local.get 0)) (local.get 0))
                (func (export "we\"ird\\name")))"#,
            )
            .unwrap();
        let pool = SandboxPool::new(Sandbox::builder(&module), PoolConfig::new(1)).unwrap();
        pool.call("canary", &[Val::I32(1)]).unwrap();
        pool.call("we\"ird\\name", &[]).unwrap();
        let _ = pool.call("no_such_function", &[]);
        let text = render(&pool.metrics());
        for needle in [
            "cleanslate_pool_calls_total{function=\"canary\",outcome=\"ok\"} 1",
            "cleanslate_pool_calls_total{function=\"we\\\"ird\\\\name\",outcome=\"ok\"} 1",
            "cleanslate_pool_calls_total{function=\"(unknown)\",outcome=\"function_not_found\"} 1",
            "cleanslate_pool_reset_duration_microseconds_bucket{le=\"+Inf\"} 2",
            "cleanslate_pool_reset_dirty_pages_count 2",
            "cleanslate_pool_size 1",
            "cleanslate_pool_in_use 0",
            "cleanslate_pool_exhausted_total 0",
        ] {
            assert!(text.contains(needle), "missing {needle}:\n{text}");
        }
    }
}
