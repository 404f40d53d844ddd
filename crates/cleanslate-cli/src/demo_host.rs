//! The host functions the CLI provides to any module that imports them:
//! `cleanslate_demo.host_op`, which the bundled example guest uses to show
//! host failures. Modules that do not import it are unaffected.

use cleanslate::{Module, SandboxBuilder, Val};

/// The import module name of the CLI's built-in host functions.
pub const HOST_MODULE: &str = "cleanslate_demo";

/// `host_op(mode: i32) -> i32`: mode 0 returns 7, mode 1 returns an error,
/// mode 2 panics (caught by the sandbox and reported as `host_panic`).
pub fn provide(builder: SandboxBuilder, module: &Module) -> SandboxBuilder {
    if !module
        .imports()
        .any(|i| i.module() == HOST_MODULE && i.name() == "host_op")
    {
        return builder;
    }
    builder.host_fn(HOST_MODULE, "host_op", |args| match args {
        [Val::I32(0)] => Ok(vec![Val::I32(7)]),
        [Val::I32(1)] => Err("host_op was asked to fail (mode 1)".into()),
        [Val::I32(2)] => panic!("host_op was asked to panic (mode 2)"),
        other => Err(format!("host_op takes a mode of 0, 1 or 2, not {other:?}").into()),
    })
}
