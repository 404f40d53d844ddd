//! Criterion: one call plus its reset on the example guest, in place and
//! with a fresh instance, in the same run.

use cleanslate::{ResetStrategy, Runtime, Sandbox, Val};
use criterion::{Criterion, criterion_group, criterion_main};

const EXAMPLE: &str = include_str!("../../guests/example.wat");

fn call_and_reset(c: &mut Criterion) {
    let module = Runtime::new().unwrap().load_bytes(EXAMPLE).unwrap();
    let mut group = c.benchmark_group("call_and_reset");
    for (name, strategy) in [
        ("in_place", ResetStrategy::Auto),
        ("fresh_instance", ResetStrategy::FreshInstance),
    ] {
        let mut sandbox = Sandbox::builder(&module)
            .host_fn("cleanslate_demo", "host_op", |_| Ok(vec![Val::I32(7)]))
            .reset_strategy(strategy)
            .build()
            .unwrap();
        group.bench_function(format!("add/{name}"), |b| {
            b.iter(|| sandbox.call("add", &[Val::I32(2), Val::I32(3)]).unwrap())
        });
        group.bench_function(format!("write_one_page/{name}"), |b| {
            b.iter(|| sandbox.call("leave_secret", &[Val::I32(5)]).unwrap())
        });
        group.bench_function(format!("trap/{name}"), |b| {
            b.iter(|| {
                sandbox
                    .call("trap_unreachable", &[Val::I32(5)])
                    .unwrap_err()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, call_and_reset);
criterion_main!(benches);
