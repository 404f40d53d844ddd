//! `--stub MODULE.NAME=VALUE`: satisfy an import the CLI does not provide
//! with a host function that returns VALUE for each result, or traps.

use cleanslate::{ImportInfo, Module, SandboxBuilder, Val, ValType};

use crate::CliError;

/// A `--stub` argument.
#[derive(Clone, Debug, PartialEq)]
pub struct StubSpec {
    /// `MODULE.NAME`, matched against the module's imports.
    pub target: String,
    pub value: StubValue,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StubValue {
    /// Fail the call (a `host_error`: a host function cannot raise a trap).
    Trap,
    /// Return this value, read per result type.
    Value(String),
}

/// How many unprovided imports the error names before it only counts.
const LISTED_MISSING: usize = 8;

/// The CLI's hint for an import nothing provides.
pub const STUB_HINT: &str = "--stub MODULE.NAME=VALUE";

pub fn parse_stub(text: &str) -> Result<StubSpec, String> {
    let bad = || format!("`{text}` is not MODULE.NAME=VALUE (or MODULE.NAME=trap)");
    let (target, value) = text.split_once('=').ok_or_else(bad)?;
    match target.split_once('.') {
        Some((module, name)) if !module.is_empty() && !name.is_empty() => {}
        _ => return Err(bad()),
    }
    let value = value.trim();
    if value.is_empty() {
        return Err(bad());
    }
    Ok(StubSpec {
        target: target.to_string(),
        value: if value == "trap" {
            StubValue::Trap
        } else {
            StubValue::Value(value.to_string())
        },
    })
}

/// Who provides an import when the CLI builds a sandbox.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Provider {
    Wasi,
    Builtin,
    Cli,
    Stub,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Wasi => "wasi",
            Provider::Builtin => "cleanslate",
            Provider::Cli => "cli",
            Provider::Stub => "stub",
        }
    }
}

fn qualified(import: &ImportInfo<'_>) -> String {
    format!("{}.{}", import.module(), import.name())
}

/// What the CLI itself provides (the CLI always enables WASI).
fn cli_provider(import: &ImportInfo<'_>) -> Option<Provider> {
    match import.module() {
        "wasi_snapshot_preview1" => Some(Provider::Wasi),
        "cleanslate" => Some(Provider::Builtin),
        m if m == crate::demo_host::HOST_MODULE && import.name() == "host_op" => {
            Some(Provider::Cli)
        }
        _ => None,
    }
}

/// Who provides `import`, or `None` when nothing does.
pub fn provider(import: &ImportInfo<'_>, stubs: &[StubSpec]) -> Option<Provider> {
    cli_provider(import).or_else(|| {
        let name = qualified(import);
        stubs
            .iter()
            .any(|s| s.target == name)
            .then_some(Provider::Stub)
    })
}

/// A stub's import (`MODULE.NAME`) and its results (`None`: trap).
type Resolved = (String, Option<Vec<Val>>);

/// Check every stub against the module's imports: each names one import
/// the CLI does not provide, once, with a VALUE that fits its results.
/// Returns each stub with its import's result values (`None` for trap).
fn resolve(module: &Module, stubs: &[StubSpec]) -> Result<Vec<Resolved>, CliError> {
    let mut resolved: Vec<Resolved> = Vec::new();
    for stub in stubs {
        let target = &stub.target;
        if resolved.iter().any(|(t, _)| t == target) {
            return Err(format!("--stub {target} is given more than once").into());
        }
        let Some(import) = module.imports().find(|i| qualified(i) == *target) else {
            let imports: Vec<String> = module.imports().map(|i| qualified(&i)).collect();
            return Err(format!(
                "--stub {target}: the module imports no function {target} (its function imports: {})",
                if imports.is_empty() {
                    "none".to_string()
                } else {
                    imports.join(", ")
                }
            )
            .into());
        };
        if let Some(p) = cli_provider(&import) {
            return Err(format!(
                "--stub {target}: the CLI already provides it ({})",
                p.as_str()
            )
            .into());
        }
        let Some(signature) = import.signature() else {
            return Err(format!("--stub {target}: not a function import").into());
        };
        let crosses =
            |t: &ValType| matches!(t, ValType::I32 | ValType::I64 | ValType::F32 | ValType::F64);
        if !signature
            .params()
            .iter()
            .chain(signature.results())
            .all(crosses)
        {
            return Err(format!(
                "--stub {target}: its type {signature} cannot be stubbed (only i32, i64, f32 and f64 cross the boundary)"
            )
            .into());
        }
        let values = match &stub.value {
            StubValue::Trap => None,
            StubValue::Value(text) => Some(
                signature
                    .results()
                    .iter()
                    .map(|ty| {
                        Val::parse(*ty, text).map_err(|e| {
                            CliError::from(format!(
                                "--stub {target}={text}: does not fit its result type {ty} ({e})"
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        resolved.push((target.clone(), values));
    }
    Ok(resolved)
}

/// Check the stubs against `module` (usage errors) without building.
pub fn check(module: &Module, stubs: &[StubSpec]) -> Result<(), CliError> {
    resolve(module, stubs).map(|_| ())
}

/// Add the stubs to `builder`, then refuse a module with an import that
/// nothing provides, naming the flag that fixes it.
pub fn provide(
    mut builder: SandboxBuilder,
    module: &Module,
    stubs: &[StubSpec],
) -> Result<SandboxBuilder, CliError> {
    for (target, values) in resolve(module, stubs)? {
        let (m, n) = module
            .imports()
            .find(|i| qualified(i) == target)
            .map(|i| (i.module().to_string(), i.name().to_string()))
            .expect("resolve found this import");
        builder = match values {
            None => builder.host_fn(&m, &n, move |_| {
                Err(
                    format!("the stubbed import {target} fails every call (--stub {target}=trap)")
                        .into(),
                )
            }),
            Some(values) => builder.host_fn(&m, &n, move |_| Ok(values.clone())),
        };
    }
    let missing: Vec<String> = module
        .imports()
        .filter(|i| provider(i, stubs).is_none())
        .map(|i| i.to_string())
        .collect();
    if !missing.is_empty() {
        let listed = missing.len().min(LISTED_MISSING);
        let more = match missing.len() - listed {
            0 => String::new(),
            n => format!("; and {n} more (see `cleanslate inspect`)"),
        };
        return Err(CliError {
            kind: "missing_import",
            message: format!(
                "the module imports {} function(s) that nothing provides: {}{more}; give each one with {STUB_HINT} (or MODULE.NAME=trap)",
                missing.len(),
                missing[..listed].join("; ")
            ),
        });
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stubs_parse_target_and_value() {
        assert_eq!(
            parse_stub("host.call=-1").unwrap(),
            StubSpec {
                target: "host.call".into(),
                value: StubValue::Value("-1".into())
            }
        );
        assert_eq!(parse_stub("a.b.c=trap").unwrap().value, StubValue::Trap);
        assert!(parse_stub("host.call").is_err());
        assert!(parse_stub("hostcall=1").is_err());
        assert!(parse_stub(".call=1").is_err());
        assert!(parse_stub("host.=1").is_err());
        assert!(parse_stub("host.call=").is_err());
    }
}
