//! Core WebAssembly values that cross the boundary, and function signatures.

use std::fmt;

use crate::error::{Error, ErrorKind};

/// A core WebAssembly value passed to or returned from a guest function.
///
/// ```
/// use cleanslate::Val;
/// let v = Val::I32(7);
/// assert_eq!(v.ty(), cleanslate::ValType::I32);
/// assert_eq!(v.to_string(), "7");
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Val {
    /// A 32-bit integer.
    I32(i32),
    /// A 64-bit integer.
    I64(i64),
    /// A 32-bit float.
    F32(f32),
    /// A 64-bit float.
    F64(f64),
}

impl Val {
    /// The type of this value.
    pub fn ty(&self) -> ValType {
        match self {
            Val::I32(_) => ValType::I32,
            Val::I64(_) => ValType::I64,
            Val::F32(_) => ValType::F32,
            Val::F64(_) => ValType::F64,
        }
    }

    /// Parse `text` as a value of type `ty` (decimal or `0x` hex for
    /// integers; floats also accept `nan`, `inf`, `-inf`).
    ///
    /// ```
    /// use cleanslate::{Val, ValType};
    /// assert_eq!(Val::parse(ValType::I64, "-3")?, Val::I64(-3));
    /// assert_eq!(Val::parse(ValType::I32, "0xff")?, Val::I32(255));
    /// assert!(Val::parse(ValType::I32, "abc").is_err());
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArguments`] when `text` is not a number of type
    /// `ty`, or is out of its range.
    pub fn parse(ty: ValType, text: &str) -> Result<Val, Error> {
        let text = text.trim();
        let bad = || {
            Error::new(
                ErrorKind::InvalidArguments,
                format!("cannot read {text:?} as {ty}"),
            )
        };
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let hex = digits
            .strip_prefix("0x")
            .or_else(|| digits.strip_prefix("0X"));
        let int = |bits: u32| -> Result<i64, Error> {
            let magnitude = match hex {
                Some(h) => u64::from_str_radix(h, 16).map_err(|_| bad())?,
                None => digits.parse::<u64>().map_err(|_| bad())?,
            };
            // Accept the full signed range and, for convenience, the unsigned
            // range (so 0xffffffff is a valid i32 meaning -1).
            let value = if negative {
                let min = 1u64 << (bits - 1);
                if magnitude > min {
                    return Err(bad());
                }
                (magnitude as i64).wrapping_neg()
            } else {
                let max = if bits == 64 {
                    u64::MAX
                } else {
                    (1u64 << bits) - 1
                };
                if magnitude > max {
                    return Err(bad());
                }
                magnitude as i64
            };
            Ok(value)
        };
        Ok(match ty {
            ValType::I32 => Val::I32(int(32)? as i32),
            ValType::I64 => Val::I64(int(64)?),
            ValType::F32 => Val::F32(text.parse::<f32>().map_err(|_| bad())?),
            ValType::F64 => Val::F64(text.parse::<f64>().map_err(|_| bad())?),
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidArguments,
                    format!("values of type {other} cannot be passed from the host"),
                ));
            }
        })
    }

    pub(crate) fn to_wasmtime(self) -> wasmtime::Val {
        match self {
            Val::I32(v) => wasmtime::Val::I32(v),
            Val::I64(v) => wasmtime::Val::I64(v),
            Val::F32(v) => wasmtime::Val::F32(v.to_bits()),
            Val::F64(v) => wasmtime::Val::F64(v.to_bits()),
        }
    }

    pub(crate) fn from_wasmtime(value: &wasmtime::Val) -> Option<Val> {
        Some(match value {
            wasmtime::Val::I32(v) => Val::I32(*v),
            wasmtime::Val::I64(v) => Val::I64(*v),
            wasmtime::Val::F32(bits) => Val::F32(f32::from_bits(*bits)),
            wasmtime::Val::F64(bits) => Val::F64(f64::from_bits(*bits)),
            _ => return None,
        })
    }
}

impl fmt::Display for Val {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::I32(v) => write!(f, "{v}"),
            Val::I64(v) => write!(f, "{v}"),
            Val::F32(v) => write!(f, "{v}"),
            Val::F64(v) => write!(f, "{v}"),
        }
    }
}

impl From<i32> for Val {
    fn from(v: i32) -> Self {
        Val::I32(v)
    }
}
impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::I64(v)
    }
}
impl From<f32> for Val {
    fn from(v: f32) -> Self {
        Val::F32(v)
    }
}
impl From<f64> for Val {
    fn from(v: f64) -> Self {
        Val::F64(v)
    }
}

/// The type of a WebAssembly value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ValType {
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// 128-bit vector (cannot cross the boundary as a [`Val`]).
    V128,
    /// A function reference (cannot cross the boundary as a [`Val`]).
    FuncRef,
    /// Any other reference type (cannot cross the boundary as a [`Val`]).
    OtherRef,
}

impl ValType {
    pub(crate) fn from_wasmparser(ty: wasmparser::ValType) -> ValType {
        match ty {
            wasmparser::ValType::I32 => ValType::I32,
            wasmparser::ValType::I64 => ValType::I64,
            wasmparser::ValType::F32 => ValType::F32,
            wasmparser::ValType::F64 => ValType::F64,
            wasmparser::ValType::V128 => ValType::V128,
            wasmparser::ValType::Ref(r) if r.is_func_ref() => ValType::FuncRef,
            wasmparser::ValType::Ref(_) => ValType::OtherRef,
        }
    }

    /// Whether values of this type can be passed as a [`Val`].
    pub fn is_scalar(self) -> bool {
        matches!(
            self,
            ValType::I32 | ValType::I64 | ValType::F32 | ValType::F64
        )
    }
}

impl fmt::Display for ValType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValType::I32 => "i32",
            ValType::I64 => "i64",
            ValType::F32 => "f32",
            ValType::F64 => "f64",
            ValType::V128 => "v128",
            ValType::FuncRef => "funcref",
            ValType::OtherRef => "ref",
        })
    }
}

/// The parameter and result types of a function.
///
/// ```
/// use cleanslate::{Runtime, ValType};
/// let runtime = Runtime::new()?;
/// let module = runtime.load_bytes(br#"(module (func (export "add") (param i32 i32) (result i32)
///     local.get 0 local.get 1 i32.add))"#)?;
/// let add = module.function("add").unwrap();
/// assert_eq!(add.params(), &[ValType::I32, ValType::I32]);
/// assert_eq!(add.signature().to_string(), "(i32, i32) -> i32");
/// # Ok::<(), cleanslate::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Signature {
    params: Vec<ValType>,
    results: Vec<ValType>,
}

impl Signature {
    pub(crate) fn new(params: Vec<ValType>, results: Vec<ValType>) -> Self {
        Signature { params, results }
    }

    /// Parameter types, in order.
    pub fn params(&self) -> &[ValType] {
        &self.params
    }

    /// Result types, in order.
    pub fn results(&self) -> &[ValType] {
        &self.results
    }

    /// Read argument texts (as for [`Val::parse`]) as this signature's
    /// parameters; a wrong count or an unreadable value is
    /// [`ErrorKind::InvalidArguments`] naming the signature.
    ///
    /// ```
    /// # use cleanslate::{Runtime, Val};
    /// # let module = Runtime::new()?.load_bytes(r#"(module (func (export "f") (param i32 f64)))"#)?;
    /// let sig = module.function("f").unwrap().signature();
    /// assert_eq!(sig.parse_args("f", &["1", "2.5"])?, [Val::I32(1), Val::F64(2.5)]);
    /// assert!(sig.parse_args("f", &["1"]).is_err());
    /// # Ok::<(), cleanslate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidArguments`] when the number of texts differs from
    /// the number of parameters, or a text is not a value of its parameter's
    /// type (as for [`Val::parse`]).
    pub fn parse_args<S: AsRef<str>>(
        &self,
        function: &str,
        texts: &[S],
    ) -> Result<Vec<Val>, Error> {
        if texts.len() != self.params.len() {
            return Err(Error::new(
                ErrorKind::InvalidArguments,
                format!(
                    "`{function}` takes {self} but was given {} argument(s)",
                    texts.len()
                ),
            ));
        }
        self.params
            .iter()
            .zip(texts)
            .map(|(ty, text)| {
                Val::parse(*ty, text.as_ref())
                    .map_err(|e| e.context(format!("argument of `{function}` {self}")))
            })
            .collect()
    }

    /// Check that `args` fit the parameters.
    pub(crate) fn check_args(&self, function: &str, args: &[Val]) -> Result<(), Error> {
        let fits = args.len() == self.params.len()
            && args.iter().zip(&self.params).all(|(a, p)| a.ty() == *p);
        if fits {
            return Ok(());
        }
        let given: Vec<String> = args.iter().map(|a| a.ty().to_string()).collect();
        Err(Error::new(
            ErrorKind::InvalidArguments,
            format!(
                "`{function}` takes {self} but was given ({}); pass arguments of exactly these types",
                given.join(", ")
            ),
        ))
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |types: &[ValType]| {
            types
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        write!(f, "({})", list(&self.params))?;
        match self.results.len() {
            0 => write!(f, " -> ()"),
            1 => write!(f, " -> {}", self.results[0]),
            _ => write!(f, " -> ({})", list(&self.results)),
        }
    }
}

/// Keeps [`WasmScalar`] and [`WasmValues`] implemented by this crate only,
/// so new methods can be added to them without breaking anyone.
mod sealed {
    pub trait Scalar {}
    pub trait Values {}
}

/// A Rust type that converts to and from one [`Val`]; used by
/// [`Sandbox::call_typed`](crate::Sandbox::call_typed).
///
/// Sealed: implemented for `i32`, `i64`, `f32` and `f64` only.
pub trait WasmScalar: Sized + sealed::Scalar {
    /// The wasm type of this Rust type.
    const TYPE: ValType;
    /// Convert into a value.
    fn into_val(self) -> Val;
    /// Convert from a value of type [`Self::TYPE`].
    fn from_val(val: Val) -> Option<Self>;
}

macro_rules! scalar {
    ($ty:ty, $variant:ident) => {
        impl sealed::Scalar for $ty {}
        impl WasmScalar for $ty {
            const TYPE: ValType = ValType::$variant;
            fn into_val(self) -> Val {
                Val::$variant(self)
            }
            fn from_val(val: Val) -> Option<Self> {
                match val {
                    Val::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
scalar!(i32, I32);
scalar!(i64, I64);
scalar!(f32, F32);
scalar!(f64, F64);

/// A list of values: `()`, a single scalar, or a tuple of scalars.
/// Used for the parameters and results of
/// [`Sandbox::call_typed`](crate::Sandbox::call_typed).
///
/// Sealed: implemented for `()`, every [`WasmScalar`], and tuples of them.
pub trait WasmValues: Sized + sealed::Values {
    /// Convert into values.
    fn into_vals(self) -> Vec<Val>;
    /// Convert from values; `None` when count or types differ.
    fn from_vals(vals: &[Val]) -> Option<Self>;
}

impl sealed::Values for () {}
impl WasmValues for () {
    fn into_vals(self) -> Vec<Val> {
        Vec::new()
    }
    fn from_vals(vals: &[Val]) -> Option<Self> {
        vals.is_empty().then_some(())
    }
}

impl<T: WasmScalar> sealed::Values for T {}
impl<T: WasmScalar> WasmValues for T {
    fn into_vals(self) -> Vec<Val> {
        vec![self.into_val()]
    }
    fn from_vals(vals: &[Val]) -> Option<Self> {
        match vals {
            [one] => T::from_val(*one),
            _ => None,
        }
    }
}

macro_rules! tuple {
    ($($name:ident $index:tt),+) => {
        impl<$($name: WasmScalar),+> sealed::Values for ($($name,)+) {}
        impl<$($name: WasmScalar),+> WasmValues for ($($name,)+) {
            fn into_vals(self) -> Vec<Val> {
                vec![$(self.$index.into_val()),+]
            }
            fn from_vals(vals: &[Val]) -> Option<Self> {
                let expected = [$($index),+].len();
                if vals.len() != expected {
                    return None;
                }
                Some(($($name::from_val(vals[$index])?,)+))
            }
        }
    };
}
tuple!(A 0);
tuple!(A 0, B 1);
tuple!(A 0, B 1, C 2);
tuple!(A 0, B 1, C 2, D 3);
tuple!(A 0, B 1, C 2, D 3, E 4);
tuple!(A 0, B 1, C 2, D 3, E 4, F 5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_integers_in_signed_and_unsigned_ranges() {
        assert_eq!(
            Val::parse(ValType::I32, "-2147483648").unwrap(),
            Val::I32(i32::MIN)
        );
        assert_eq!(
            Val::parse(ValType::I32, "4294967295").unwrap(),
            Val::I32(-1)
        );
        assert!(Val::parse(ValType::I32, "4294967296").is_err());
        assert!(Val::parse(ValType::I32, "-2147483649").is_err());
        assert_eq!(Val::parse(ValType::I64, "0x10").unwrap(), Val::I64(16));
        assert_eq!(Val::parse(ValType::F64, "2.5").unwrap(), Val::F64(2.5));
        assert!(Val::parse(ValType::V128, "1").is_err());
        assert!(Val::parse(ValType::I32, "").is_err());
    }

    #[test]
    fn tuples_round_trip_and_reject_wrong_shapes() {
        let vals = (1i32, 2i64, 3.0f32).into_vals();
        assert_eq!(vals, vec![Val::I32(1), Val::I64(2), Val::F32(3.0)]);
        assert_eq!(<(i32, i64, f32)>::from_vals(&vals), Some((1, 2, 3.0)));
        assert_eq!(<(i32, i32)>::from_vals(&vals), None);
        assert_eq!(<i32>::from_vals(&[Val::I64(1)]), None);
    }

    #[test]
    fn argument_check_names_the_expected_signature() {
        let sig = Signature::new(vec![ValType::I32], vec![ValType::I32]);
        assert!(sig.check_args("f", &[Val::I32(1)]).is_ok());
        let err = sig.check_args("f", &[Val::I64(1)]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArguments);
        assert!(err.to_string().contains("(i32) -> i32"), "{err}");
    }
}
