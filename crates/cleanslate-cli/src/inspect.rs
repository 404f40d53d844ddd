//! `cleanslate inspect`: what a module imports and exports, the state it
//! holds, and which reset path its calls will take on this machine.

use std::path::PathBuf;

use clap::Args;
use serde_json::{Value, json};

use crate::EXIT_OK;

/// Show a module's imports, exports, memories, tables, globals, and how its
/// resets will run.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  cleanslate inspect guests/example.wat
  cleanslate inspect guest.wasm --json | jq .reset
  cleanslate inspect guest.wasm --stub env.log=0

An import marked `unresolved` is one nothing provides (not WASI, not a
cleanslate.* builtin, not cleanslate_demo.host_op, not a --stub): give it
with --stub MODULE.NAME=VALUE.")]
pub struct InspectArgs {
    /// The module: a .wasm binary or .wat text file.
    pub module: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Count the import MODULE.NAME as provided by a `--stub` (as `run`
    /// would). Repeatable.
    #[arg(long = "stub", value_name = "MODULE.NAME=VALUE", value_parser = crate::stub::parse_stub)]
    pub stubs: Vec<crate::stub::StubSpec>,
    #[command(flatten)]
    pub load: crate::load::LoadOptions,
}

pub fn inspect(args: InspectArgs) -> Result<u8, crate::CliError> {
    let module = args.load.load(&args.module)?;
    crate::stub::check(&module, &args.stubs)?;
    let report = describe(&args.module, &module, &args.stubs);
    if args.json {
        println!("{report}");
    } else {
        print!("{}", to_text(&report));
    }
    Ok(EXIT_OK)
}

fn describe(
    path: &std::path::Path,
    module: &cleanslate::Module,
    stubs: &[crate::stub::StubSpec],
) -> Value {
    let coverage = module.reset_coverage();
    let machine = module.runtime().in_place_resets();
    json!({
        "module": path.display().to_string(),
        "imports": module.imports().map(|i| json!({
            "module": i.module(),
            "name": i.name(),
            "signature": i.signature().map(|s| s.to_string()),
            "provided_by": crate::stub::provider(&i, stubs).map(|p| p.as_str()),
            "unresolved": crate::stub::provider(&i, stubs).is_none(),
        })).collect::<Vec<_>>(),
        "exports": module.functions().map(|f| json!({
            "name": f.name(),
            "signature": f.signature().to_string(),
            "data_abi": f.is_data_function(),
        })).collect::<Vec<_>>(),
        "memories": module.memories().iter().map(|m| json!({
            "initial_bytes": m.initial_bytes,
            "maximum_bytes": m.maximum_bytes,
            "memory64": m.memory64,
            "data_bytes": m.data_bytes,
        })).collect::<Vec<_>>(),
        "tables": module.tables().iter().map(|t| json!({
            "initial_elements": t.initial_elements,
            "maximum_elements": t.maximum_elements,
            "funcref": t.funcref,
        })).collect::<Vec<_>>(),
        "globals": module.globals().iter().map(|g| json!({
            "type": g.ty.to_string(),
            "mutable": g.mutable,
        })).collect::<Vec<_>>(),
        "wasi": module.uses_wasi(),
        "proposals": module.proposals(),
        "compiled_module_cache": module.cache_status().to_string(),
        "reset": {
            "default_path": if coverage.in_place().is_ok() { "in_place" } else { "fresh_instance" },
            "in_place_unavailable": coverage.in_place().err(),
            // This machine's answer for every module: whether resets can
            // run in place here at all, and why (or why not).
            "machine": {
                "in_place_available": machine.available(),
                "reason": machine.reason(),
            },
            "fallbacks": coverage.fallbacks().iter().map(|(reason, when)| json!({
                "reason": reason.as_str(),
                "when": when,
            })).collect::<Vec<_>>(),
            "notes": coverage.notes(),
        },
    })
}

fn to_text(report: &Value) -> String {
    let mut out = format!("module {}\n", report["module"].as_str().unwrap_or("?"));
    let list = |key: &str| report[key].as_array().cloned().unwrap_or_default();
    let imports = list("imports");
    out.push_str(&format!("imports ({})\n", imports.len()));
    for i in &imports {
        let by = match i["provided_by"].as_str() {
            Some(by) => format!("  [{by}]"),
            None => format!("  [unresolved: {}]", crate::stub::STUB_HINT),
        };
        out.push_str(&format!(
            "  {}.{}: {}{by}\n",
            i["module"].as_str().unwrap_or("?"),
            i["name"].as_str().unwrap_or("?"),
            i["signature"].as_str().unwrap_or("(not a function)")
        ));
    }
    let exports = list("exports");
    out.push_str(&format!("exports ({})\n", exports.len()));
    for e in &exports {
        let data = if e["data_abi"] == true {
            "  [bytes/JSON: --input]"
        } else {
            ""
        };
        out.push_str(&format!(
            "  {}: {}{data}\n",
            e["name"].as_str().unwrap_or("?"),
            e["signature"].as_str().unwrap_or("?")
        ));
    }
    for m in list("memories") {
        out.push_str(&format!(
            "memory: {} bytes initially, max {}, data initialises {} bytes{}\n",
            m["initial_bytes"],
            plain_or(&m["maximum_bytes"], "none"),
            plain_or(&m["data_bytes"], "?"),
            if m["memory64"] == true {
                " (memory64)"
            } else {
                ""
            }
        ));
    }
    for t in list("tables") {
        out.push_str(&format!(
            "table: {} elements initially, max {}{}\n",
            t["initial_elements"],
            plain_or(&t["maximum_elements"], "none"),
            if t["funcref"] == true {
                " (funcref)"
            } else {
                ""
            }
        ));
    }
    let globals = list("globals");
    let mutable = globals.iter().filter(|g| g["mutable"] == true).count();
    out.push_str(&format!("globals: {} ({mutable} mutable)\n", globals.len()));
    let proposals = list("proposals");
    let proposals: Vec<&str> = proposals.iter().filter_map(|p| p.as_str()).collect();
    out.push_str(&format!(
        "proposals: {}\n",
        if proposals.is_empty() {
            "none (WebAssembly 1.0)".to_string()
        } else {
            proposals.join(", ")
        }
    ));
    if report["wasi"] == true {
        out.push_str("wasi: imports wasi_snapshot_preview1 (a fresh context per call)\n");
    }
    let reset = &report["reset"];
    out.push_str(&format!(
        "reset: {} by default",
        reset["default_path"].as_str().unwrap_or("?")
    ));
    let machine_reason = reset["machine"]["reason"].as_str().unwrap_or("?");
    // The module's own reason, when it is not the machine's (shown next).
    if let Some(why) = reset["in_place_unavailable"].as_str()
        && why != machine_reason
    {
        out.push_str(&format!(" ({why})"));
    }
    out.push('\n');
    let verdict = if reset["machine"]["in_place_available"] == true {
        "in-place resets available"
    } else {
        "in-place resets UNAVAILABLE"
    };
    out.push_str(&format!("  this machine: {verdict}: {machine_reason}\n"));
    for f in reset["fallbacks"].as_array().cloned().unwrap_or_default() {
        out.push_str(&format!(
            "  fresh_instance because {} {}\n",
            f["reason"].as_str().unwrap_or("?"),
            f["when"].as_str().unwrap_or("")
        ));
    }
    for n in reset["notes"].as_array().cloned().unwrap_or_default() {
        out.push_str(&format!("  {}\n", n.as_str().unwrap_or("")));
    }
    out
}

fn plain_or(value: &Value, otherwise: &str) -> String {
    if value.is_null() {
        otherwise.to_string()
    } else {
        value.to_string()
    }
}
