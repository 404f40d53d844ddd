//! How a module's analysis travels in a compiled-module cache entry:
//! serde for the field types of the layout that have none of their own
//! (referenced by `#[serde(with = ...)]` on those fields), kept here so
//! the public types ([`ValType`], [`Signature`]) do not gain a serde
//! contract.

use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::layout::OtherImport;
use crate::value::{Signature, ValType};

fn valtype_code(ty: ValType) -> u8 {
    match ty {
        ValType::I32 => 0,
        ValType::I64 => 1,
        ValType::F32 => 2,
        ValType::F64 => 3,
        ValType::V128 => 4,
        ValType::FuncRef => 5,
        ValType::OtherRef => 6,
    }
}

fn valtype_from_code(code: u8) -> Option<ValType> {
    Some(match code {
        0 => ValType::I32,
        1 => ValType::I64,
        2 => ValType::F32,
        3 => ValType::F64,
        4 => ValType::V128,
        5 => ValType::FuncRef,
        6 => ValType::OtherRef,
        _ => return None,
    })
}

/// A [`ValType`] as one byte.
pub(crate) mod valtype {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(ty: &ValType, s: S) -> Result<S::Ok, S::Error> {
        valtype_code(*ty).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ValType, D::Error> {
        let code = u8::deserialize(d)?;
        valtype_from_code(code).ok_or_else(|| D::Error::custom("unknown value type"))
    }
}

/// A [`Signature`] as its parameter and result type codes.
pub(crate) mod signature {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(sig: &Signature, s: S) -> Result<S::Ok, S::Error> {
        let codes = |types: &[ValType]| types.iter().map(|t| valtype_code(*t)).collect::<Vec<_>>();
        (codes(sig.params()), codes(sig.results())).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Signature, D::Error> {
        let (params, results) = <(Vec<u8>, Vec<u8>)>::deserialize(d)?;
        let types = |codes: Vec<u8>| {
            codes
                .into_iter()
                .map(|c| valtype_from_code(c).ok_or_else(|| D::Error::custom("unknown value type")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Signature::new(types(params)?, types(results)?))
    }
}

/// An import of something other than a function; its kind is one of the
/// names the analysis uses (a `&'static str`, which serde's derive would
/// borrow from the input, hence by hand).
impl<'de> Deserialize<'de> for OtherImport {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const KINDS: [&str; 4] = ["memory", "table", "global", "tag"];
        let (module, name, what) = <(String, String, String)>::deserialize(d)?;
        let what = KINDS
            .into_iter()
            .find(|k| *k == what)
            .ok_or_else(|| D::Error::custom(format!("unknown import kind {what:?}")))?;
        Ok(OtherImport { module, name, what })
    }
}

/// The abstract heap types, by position (a type missing here makes the
/// entry unstorable, never misread).
const ABSTRACT: [wasmparser::AbstractHeapType; 14] = {
    use wasmparser::AbstractHeapType::*;
    [
        Func, Extern, Any, None, NoExtern, NoFunc, Eq, Struct, Array, I31, Exn, NoExn, Cont, NoCont,
    ]
};

#[derive(Serialize, Deserialize)]
enum WireHeap {
    Abstract { shared: bool, ty: u8 },
    Concrete { exact: bool, module_index: u32 },
}

fn to_wire(ty: &wasmparser::RefType) -> Option<(bool, WireHeap)> {
    use wasmparser::{HeapType, UnpackedIndex};
    let heap = match ty.heap_type() {
        HeapType::Abstract { shared, ty } => WireHeap::Abstract {
            shared,
            ty: ABSTRACT.iter().position(|a| *a == ty)? as u8,
        },
        HeapType::Concrete(UnpackedIndex::Module(i)) => WireHeap::Concrete {
            exact: false,
            module_index: i,
        },
        HeapType::Exact(UnpackedIndex::Module(i)) => WireHeap::Concrete {
            exact: true,
            module_index: i,
        },
        _ => return None,
    };
    Some((ty.is_nullable(), heap))
}

fn from_wire((nullable, heap): (bool, WireHeap)) -> Option<wasmparser::RefType> {
    use wasmparser::{HeapType, UnpackedIndex};
    let heap = match heap {
        WireHeap::Abstract { shared, ty } => HeapType::Abstract {
            shared,
            ty: *ABSTRACT.get(usize::from(ty))?,
        },
        WireHeap::Concrete {
            exact: false,
            module_index,
        } => HeapType::Concrete(UnpackedIndex::Module(module_index)),
        WireHeap::Concrete {
            exact: true,
            module_index,
        } => HeapType::Exact(UnpackedIndex::Module(module_index)),
    };
    wasmparser::RefType::new(nullable, heap)
}

/// A [`wasmparser::RefType`]: nullability and heap type.
pub(crate) mod ref_type {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        ty: &wasmparser::RefType,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        to_wire(ty)
            .ok_or_else(|| S::Error::custom(format!("cannot store reference type {ty}")))?
            .serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<wasmparser::RefType, D::Error> {
        from_wire(<(bool, WireHeap)>::deserialize(d)?)
            .ok_or_else(|| D::Error::custom("invalid reference type"))
    }
}

/// An optional [`wasmparser::RefType`].
pub(crate) mod option_ref_type {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        ty: &Option<wasmparser::RefType>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match ty {
            Some(ty) => Some(
                to_wire(ty)
                    .ok_or_else(|| S::Error::custom(format!("cannot store reference type {ty}")))?,
            ),
            None => None,
        }
        .serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<wasmparser::RefType>, D::Error> {
        <Option<(bool, WireHeap)>>::deserialize(d)?
            .map(|w| from_wire(w).ok_or_else(|| D::Error::custom("invalid reference type")))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_imports_round_trip() {
        for what in ["memory", "table", "global", "tag"] {
            let import = OtherImport {
                module: "m".into(),
                name: "n".into(),
                what,
            };
            let bytes = postcard::to_allocvec(&import).unwrap();
            let back: OtherImport = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(format!("{back:?}"), format!("{import:?}"));
        }
        let odd = postcard::to_allocvec(&("m", "n", "thing")).unwrap();
        assert!(postcard::from_bytes::<OtherImport>(&odd).is_err());
    }

    #[test]
    fn reference_types_round_trip() {
        use wasmparser::{AbstractHeapType, HeapType, RefType, UnpackedIndex};
        let mut types = vec![
            RefType::FUNCREF,
            RefType::EXTERNREF,
            RefType::new(false, HeapType::Concrete(UnpackedIndex::Module(7))).unwrap(),
            RefType::new(true, HeapType::Exact(UnpackedIndex::Module(3))).unwrap(),
        ];
        for ty in ABSTRACT {
            for shared in [false, true] {
                types.push(RefType::new(true, HeapType::Abstract { shared, ty }).unwrap());
            }
        }
        assert!(ABSTRACT.contains(&AbstractHeapType::NoCont));
        for ty in types {
            let back = from_wire(to_wire(&ty).unwrap()).unwrap();
            assert_eq!(back, ty);
        }
    }
}
