//! The WebAssembly features Cleanslate accepts: one list that module
//! validation, [`Module::proposals`](crate::Module::proposals) and the
//! engine configuration all read, so a module the validator lets through is
//! one the engine compiles, and the other way round.

use wasmparser::{Validator, WasmFeatures};

/// The proposals beyond WebAssembly 1.0 that Cleanslate accepts, by name,
/// with the feature flags that make them up: the standard set that wasmtime
/// supports without a GC heap, what mainstream toolchains emit today.
/// (Import and export of mutable globals is left out: the reset's rewrite
/// exports every mutable global, so every such module would seem to use it.)
///
/// Of the GC proposal's types only what exception handling needs is
/// accepted: exception objects live while a call throws and catches them; a
/// global or table slot that still holds one after the call is reset to its
/// snapshot's null. The rest of GC (and so function references, which only
/// GC's typed references make useful) stays out: its heap objects could
/// outlive a call where no reset can see them.
pub(crate) const PROPOSALS: &[(&str, WasmFeatures)] = &[
    ("sign-extension", WasmFeatures::SIGN_EXTENSION),
    (
        "nontrapping-float-to-int",
        WasmFeatures::SATURATING_FLOAT_TO_INT,
    ),
    ("multi-value", WasmFeatures::MULTI_VALUE),
    ("bulk-memory", WasmFeatures::BULK_MEMORY),
    ("reference-types", WasmFeatures::REFERENCE_TYPES),
    ("simd", WasmFeatures::SIMD),
    ("relaxed-simd", WasmFeatures::RELAXED_SIMD),
    ("tail-call", WasmFeatures::TAIL_CALL),
    ("extended-const", WasmFeatures::EXTENDED_CONST),
    ("multi-memory", WasmFeatures::MULTI_MEMORY),
    ("memory64", WasmFeatures::MEMORY64),
    ("custom-page-sizes", WasmFeatures::CUSTOM_PAGE_SIZES),
    ("wide-arithmetic", WasmFeatures::WIDE_ARITHMETIC),
    ("exception-handling", WasmFeatures::EXCEPTIONS),
];

/// Every feature flag Cleanslate accepts: WebAssembly 1.0 (with mutable
/// globals) and the [`PROPOSALS`].
pub(crate) const ACCEPTED: WasmFeatures = {
    let mut features = WasmFeatures::WASM1;
    let mut i = 0;
    while i < PROPOSALS.len() {
        features = features.union(PROPOSALS[i].1);
        i += 1;
    }
    features
};

/// Make an engine accept exactly [`ACCEPTED`]. Everything else is switched
/// off explicitly rather than left to wasmtime's defaults, so that a
/// wasmtime upgrade that turns on a new proposal by default does not widen
/// what the engine compiles behind the validator's back.
pub(crate) fn configure_engine(config: &mut wasmtime::Config) -> &mut wasmtime::Config {
    config
        .wasm_features(WasmFeatures::all(), false)
        .wasm_features(ACCEPTED, true)
}

/// Which of [`PROPOSALS`] `wasm` uses: those without which it does not
/// validate.
pub(crate) fn proposals_used(wasm: &[u8]) -> Vec<&'static str> {
    PROPOSALS
        .iter()
        .filter(|(_, feature)| {
            Validator::new_with_features(ACCEPTED.difference(*feature))
                .validate_all(wasm)
                .is_err()
        })
        .map(|(name, _)| *name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small module per proposal that needs that proposal to validate.
    const USES: &[(&str, &str)] = &[
        (
            "sign-extension",
            "(func (param i32) (result i32) local.get 0 i32.extend8_s)",
        ),
        (
            "nontrapping-float-to-int",
            "(func (param f32) (result i32) local.get 0 i32.trunc_sat_f32_s)",
        ),
        (
            "multi-value",
            "(func (result i32 i32) i32.const 1 i32.const 2)",
        ),
        (
            "bulk-memory",
            "(memory 1) (func (memory.fill (i32.const 0) (i32.const 0) (i32.const 8)))",
        ),
        (
            "reference-types",
            "(func (result externref) ref.null extern)",
        ),
        ("simd", "(func (result v128) v128.const i64x2 0 0)"),
        (
            "relaxed-simd",
            "(func (param v128 v128) (result v128) local.get 0 local.get 1 i8x16.relaxed_swizzle)",
        ),
        ("tail-call", "(func $f return_call $f)"),
        (
            "extended-const",
            "(global i32 (i32.add (i32.const 1) (i32.const 2)))",
        ),
        ("multi-memory", "(memory 1) (memory 1)"),
        ("memory64", "(memory i64 1)"),
        ("custom-page-sizes", "(memory 1 (pagesize 1))"),
        (
            "wide-arithmetic",
            "(func (param i64 i64 i64 i64) (result i64 i64)
                local.get 0 local.get 1 local.get 2 local.get 3 i64.add128)",
        ),
        ("exception-handling", "(tag $t) (func throw $t)"),
    ];

    /// Modules that need a feature Cleanslate refuses.
    const REFUSED: &[(&str, &str)] = &[
        (
            "gc",
            "(type (struct (field i32))) (func (result anyref) ref.null any)",
        ),
        (
            "function-references",
            "(type $t (func)) (func $f (param (ref $t)) local.get 0 call_ref $t)",
        ),
        ("threads", "(memory 1 1 shared)"),
        ("legacy-exceptions", "(tag $e) (func try catch $e end)"),
    ];

    fn wasm(body: &str) -> Vec<u8> {
        wat::parse_str(format!("(module {body})")).unwrap()
    }

    /// The engine the runtime compiles modules with (the one configured by
    /// [`configure_engine`] in `Runtime::engine`).
    fn runtime_engine() -> (crate::engine::runtime::Runtime, wasmtime::Engine) {
        let runtime = crate::engine::runtime::Runtime::new().unwrap();
        let flavor = crate::engine::runtime::EngineFlavor {
            fuel: false,
            max_stack: crate::engine::limits::DEFAULT_STACK_LIMIT,
        };
        let engine = runtime.engine(flavor).unwrap();
        (runtime, engine)
    }

    #[test]
    fn the_list_is_the_set_accepted_before_it_was_one_list() {
        let mut before = WasmFeatures::WASM2
            | WasmFeatures::TAIL_CALL
            | WasmFeatures::EXTENDED_CONST
            | WasmFeatures::MULTI_MEMORY
            | WasmFeatures::MEMORY64
            | WasmFeatures::RELAXED_SIMD
            | WasmFeatures::CUSTOM_PAGE_SIZES
            | WasmFeatures::WIDE_ARITHMETIC
            | WasmFeatures::EXCEPTIONS;
        before.remove(WasmFeatures::GC);
        assert_eq!(ACCEPTED, before);
        let tested: Vec<_> = USES.iter().map(|(name, _)| *name).collect();
        let listed: Vec<_> = PROPOSALS.iter().map(|(name, _)| *name).collect();
        assert_eq!(tested, listed, "every proposal needs a module using it");
    }

    #[test]
    fn every_accepted_proposal_passes_validation_and_the_engine() {
        let (runtime, engine) = runtime_engine();
        for (name, body) in USES {
            let wasm = wasm(body);
            Validator::new_with_features(ACCEPTED)
                .validate_all(&wasm)
                .unwrap_or_else(|e| panic!("{name}: validation refused it: {e}"));
            assert!(proposals_used(&wasm).contains(name), "{name}: {body}");
            wasmtime::Module::new(&engine, &wasm)
                .unwrap_or_else(|e| panic!("{name}: the engine refused it: {e:#}"));
            let module = runtime
                .load_bytes(&wasm)
                .unwrap_or_else(|e| panic!("{name}: loading refused it: {e}"));
            assert!(module.proposals().contains(name), "{name}: {body}");
        }
    }

    #[test]
    fn a_refused_feature_is_refused_by_both_with_the_same_error() {
        let (runtime, engine) = runtime_engine();
        for (name, body) in REFUSED {
            let wasm = wasm(body);
            let Err(validation) = Validator::new_with_features(ACCEPTED).validate_all(&wasm) else {
                panic!("{name}: validation accepted it");
            };
            let message = validation.message();
            assert!(
                message.contains(name.split('-').next().unwrap()),
                "{name}: {message}"
            );
            let engine = wasmtime::Module::new(&engine, &wasm).expect_err(name);
            assert!(
                format!("{engine:#}").contains(message),
                "{name}: the engine said `{engine:#}`, validation `{message}`"
            );
            let load = runtime.load_bytes(&wasm).expect_err(name);
            assert_eq!(load.kind(), crate::error::ErrorKind::InvalidModule);
            assert!(load.to_string().contains(message), "{name}: {load}");
        }
    }
}
