//! `FUNC` or `FUNC:ARG,ARG,...`: a call written on the command line, with
//! its arguments read according to the export's signature.

use cleanslate::{Error, Module, Val};

/// What a call passes to the guest.
#[derive(Debug, Clone, PartialEq)]
pub enum CallRequest {
    Values(Vec<Val>),
    Bytes(Vec<u8>),
}

/// A call as the user wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallSpec {
    pub function: String,
    /// The argument texts, in order.
    pub args: Vec<String>,
}

impl CallSpec {
    /// Split `text` into function name and argument texts. Never fails: a
    /// call that cannot be made is reported when it is made, so later calls
    /// still run.
    pub fn parse(text: &str) -> CallSpec {
        let text = text.trim();
        match text.split_once(':') {
            Some((function, args)) if !args.trim().is_empty() => CallSpec {
                function: function.trim().to_string(),
                args: args.split(',').map(|a| a.trim().to_string()).collect(),
            },
            Some((function, _)) => CallSpec {
                function: function.trim().to_string(),
                args: Vec::new(),
            },
            None => CallSpec {
                function: text.to_string(),
                args: Vec::new(),
            },
        }
    }

    /// What to pass: bytes when `--input` is given, or when the export has
    /// the data-ABI type and no arguments are written (empty input);
    /// otherwise the argument texts read as core values.
    pub fn request(&self, module: &Module, input: Option<&[u8]>) -> Result<CallRequest, Error> {
        if let Some(input) = input {
            if !self.args.is_empty() {
                return Err(Error::invalid_arguments(format!(
                    "`{}` is given both ARGs and --input: a bytes function takes only --input",
                    self.function
                )));
            }
            return Ok(CallRequest::Bytes(input.to_vec()));
        }
        if self.args.is_empty()
            && module
                .function(&self.function)
                .is_some_and(|f| f.is_data_function())
        {
            return Ok(CallRequest::Bytes(Vec::new()));
        }
        self.values(module).map(CallRequest::Values)
    }

    /// Read the argument texts as the export's parameter types. An unknown
    /// function is left for the sandbox to refuse, so the error kind is the
    /// library's `function_not_found`.
    pub fn values(&self, module: &Module) -> Result<Vec<Val>, Error> {
        match module.function(&self.function) {
            Some(function) => function.signature().parse_args(&self.function, &self.args),
            None => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_function_and_arguments() {
        assert_eq!(
            CallSpec::parse("add:2, 3"),
            CallSpec {
                function: "add".into(),
                args: vec!["2".into(), "3".into()]
            }
        );
        assert_eq!(
            CallSpec::parse("nop"),
            CallSpec {
                function: "nop".into(),
                args: vec![]
            }
        );
        assert_eq!(
            CallSpec::parse("nop:"),
            CallSpec {
                function: "nop".into(),
                args: vec![]
            }
        );
        assert_eq!(
            CallSpec::parse("f:,"),
            CallSpec {
                function: "f".into(),
                args: vec!["".into(), "".into()]
            }
        );
    }
}
