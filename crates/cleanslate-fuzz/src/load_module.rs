//! Module loading: any bytes, any text, given to `Runtime::load_bytes` and
//! then `SandboxBuilder::build`, give a sandbox or a typed error — never a
//! panic, a hang or an unbounded allocation.
//!
//! The first input byte picks how the rest becomes a module: as raw bytes;
//! as text (the WAT path); as a valid module (imports and all); as a valid
//! module of every proposal wasm-smith knows (most of which Cleanslate must
//! refuse by name); or as a valid module with a few bytes damaged, which
//! reaches the parser and validator far deeper than random bytes do.

use std::time::Duration;

use arbitrary::Unstructured;
use cleanslate::{ErrorKind, Sandbox, Val, ValType};

use crate::{Finding, Tally, runtime};

/// wasm-smith with every proposal it can generate switched on.
fn everything() -> wasm_smith::Config {
    wasm_smith::Config {
        max_funcs: 16,
        max_instructions: 200,
        max_memory32_bytes: 1 << 20,
        max_memory64_bytes: 1 << 20,
        max_table_elements: 1_000,
        memory64_enabled: true,
        gc_enabled: true,
        threads_enabled: true,
        custom_page_sizes_enabled: true,
        wide_arithmetic_enabled: true,
        exceptions_enabled: true,
        tail_call_enabled: true,
        ..wasm_smith::Config::default()
    }
}

/// wasm-smith with what Cleanslate supports (no GC, no shared memories):
/// modules that load, so building and calling them is searched too.
fn supported() -> wasm_smith::Config {
    wasm_smith::Config {
        max_memory32_bytes: 1 << 20,
        max_table_elements: 1_000,
        gc_enabled: false,
        threads_enabled: false,
        ..wasm_smith::Config::default()
    }
}

/// Errors `build` may give a module that loaded.
fn acceptable_build_error(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::MissingImport
            | ErrorKind::Instantiation
            | ErrorKind::Trap(_)
            | ErrorKind::StackOverflow
            | ErrorKind::OutOfMemory
            | ErrorKind::OutOfFuel
            | ErrorKind::Timeout
            | ErrorKind::UncaughtException
            | ErrorKind::InvalidModule
    )
}

/// Load and build what `data` describes.
///
/// # Errors
///
/// A [`Finding`] when the property does not hold for `data`.
pub fn check(data: &[u8], tally: &mut Tally) -> Result<(), Finding> {
    tally.inputs += 1;
    let Some((&mode, rest)) = data.split_first() else {
        return Ok(());
    };
    let generate = |config: wasm_smith::Config, bytes: &[u8]| {
        wasm_smith::Module::new(config, &mut Unstructured::new(bytes)).map(|m| m.to_bytes())
    };
    let (how, bytes) = match mode % 5 {
        0 => ("raw", rest.to_vec()),
        1 => (
            "text",
            String::from_utf8_lossy(rest).into_owned().into_bytes(),
        ),
        2 => match generate(supported(), rest) {
            Ok(wasm) => ("generated", wasm),
            Err(_) => return Ok(()),
        },
        3 => match generate(everything(), rest) {
            Ok(wasm) => ("generated_any_proposal", wasm),
            Err(_) => return Ok(()),
        },
        _ => {
            // The last quarter of the input says where to damage the
            // module the rest generates.
            let (shape, damage) = rest.split_at(rest.len() * 3 / 4);
            match generate(supported(), shape) {
                Ok(wasm) => ("damaged", damaged(wasm, damage)),
                Err(_) => return Ok(()),
            }
        }
    };
    tally.saw(format!("{how}_input"));
    let module = match runtime().load_bytes(&bytes) {
        Ok(module) => module,
        Err(e) if e.kind() == ErrorKind::InvalidModule => {
            tally.saw("invalid_module");
            if e.to_string().trim().is_empty() {
                return Err(Finding(format!("{how} input refused without a message")));
            }
            return Ok(());
        }
        Err(e) => {
            return Err(Finding(format!(
                "{how} input: load_bytes failed with {:?}, not invalid_module: {e}",
                e.kind()
            )));
        }
    };
    tally.saw("loaded");
    let built = Sandbox::builder(&module)
        .memory_limit(1 << 20)
        .table_limit(10_000)
        .fuel(100_000)
        .timeout(Duration::from_millis(200))
        .build();
    match built {
        Ok(mut sandbox) => {
            tally.saw("built");
            // A built sandbox works: its exports run (with zero arguments)
            // or fail with a type, and reset.
            let functions: Vec<(String, Vec<Val>)> = module
                .functions()
                .filter_map(|f| {
                    let args = f.params().iter().map(|t| zero(*t)).collect::<Option<_>>()?;
                    Some((f.name().to_string(), args))
                })
                .collect();
            for (name, args) in functions.iter().take(4) {
                if let Err(e) = sandbox.call(name, args)
                    && matches!(e.kind(), ErrorKind::ResetFailed | ErrorKind::Unrecoverable)
                {
                    return Err(Finding(format!("{how} input: calling `{name}`: {e}")));
                }
                tally.calls += 1;
            }
            Ok(())
        }
        Err(e) if acceptable_build_error(e.kind()) => {
            tally.saw(format!("build_{}", e.kind().as_str()));
            Ok(())
        }
        Err(e) => Err(Finding(format!(
            "{how} input: build failed with {:?}: {e}",
            e.kind()
        ))),
    }
}

fn zero(ty: ValType) -> Option<Val> {
    Some(match ty {
        ValType::I32 => Val::I32(0),
        ValType::I64 => Val::I64(0),
        ValType::F32 => Val::F32(0.0),
        ValType::F64 => Val::F64(0.0),
        _ => return None,
    })
}

/// `wasm` with a few bytes flipped, removed or inserted where `damage` says.
fn damaged(mut wasm: Vec<u8>, damage: &[u8]) -> Vec<u8> {
    let mut u = Unstructured::new(damage);
    for _ in 0..u.int_in_range(1..=4u8).unwrap_or(1) {
        if wasm.len() <= 8 {
            break;
        }
        // Past the 8-byte header, which only ever gives one error.
        let at = u.int_in_range(8..=wasm.len() - 1).unwrap_or(8);
        match u.int_in_range(0..=2u8).unwrap_or(0) {
            0 => wasm[at] ^= u.int_in_range(1..=255u8).unwrap_or(1),
            1 => {
                wasm.remove(at);
            }
            _ => wasm.insert(at, u.arbitrary().unwrap_or(0xff)),
        }
    }
    wasm
}
