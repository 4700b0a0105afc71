//! The `Symbol` newtype: parsed once at the edge, trusted everywhere after.

use std::{fmt, sync::Arc};

use serde::{Deserialize, Serialize};

/// Longest accepted symbol, in characters.
pub const MAX_LEN: usize = 20;

/// A market symbol such as `AAPL`, `BRK.B`, `BTC-USD`, `^GSPC` or `EURUSD=X`:
/// 1–20 characters of `A-Z 0-9 . - ^ =` after upper-casing.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Symbol(Arc<str>);

/// The text that failed to parse (its first [`SHOWN`] characters); its
/// message is the one clients see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid stock symbol: {0}")]
pub struct SymbolError(pub String);

/// Characters of a refused text an error shows: enough to recognise it,
/// not a way to have a 64 KiB frame echoed back.
pub const SHOWN: usize = 32;

impl SymbolError {
    fn of(text: &str) -> SymbolError {
        match text.char_indices().nth(SHOWN) {
            Some((end, _)) => SymbolError(format!("{}…", &text[..end])),
            None => SymbolError(text.to_string()),
        }
    }
}

impl Symbol {
    pub fn parse(text: &str) -> Result<Symbol, SymbolError> {
        let upper = text.to_ascii_uppercase();
        let valid_char = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || ".-^=".contains(c);
        if upper.is_empty() || upper.len() > MAX_LEN || !upper.chars().all(valid_char) {
            return Err(SymbolError::of(text));
        }
        Ok(Symbol(upper.into()))
    }

    /// Two clones of one parsed symbol: a comparison of two pointers, for
    /// hot paths that hold shared copies (text equality is `==`).
    pub fn same(&self, other: &Symbol) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// RabbitMQ routing key: `.` becomes `_` so a symbol is one key word.
    pub fn routing_key(&self) -> String {
        format!("quote.{}", self.0.replace('.', "_"))
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Symbol({})", self.0)
    }
}

impl TryFrom<String> for Symbol {
    type Error = SymbolError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Symbol::parse(&value)
    }
}

impl From<Symbol> for String {
    fn from(value: Symbol) -> Self {
        value.0.to_string()
    }
}

impl std::str::FromStr for Symbol {
    type Err = SymbolError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Symbol::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_case_is_upper_cased() {
        assert_eq!(Symbol::parse("aapl").unwrap().as_str(), "AAPL");
    }

    #[test]
    fn special_symbols_are_accepted() {
        for s in ["BRK.B", "BTC-USD", "^GSPC", "EURUSD=X", "A", "ABCDEFGHIJKLMNOPQRST"] {
            assert!(Symbol::parse(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn invalid_symbols_are_rejected_with_the_text() {
        for s in ["", "AA PL", "ABCDEFGHIJKLMNOPQRSTU", "AAPL!", "ÄPFEL", "a/b"] {
            assert_eq!(Symbol::parse(s), Err(SymbolError(s.to_string())));
        }
        assert_eq!(SymbolError("XYZ!".into()).to_string(), "Invalid stock symbol: XYZ!");
    }

    #[test]
    fn a_long_refused_text_is_shown_cut_short() {
        let long = "ä".repeat(10_000);
        let error = Symbol::parse(&long).unwrap_err();
        assert_eq!(error.0, format!("{}…", "ä".repeat(SHOWN)));
    }

    #[test]
    fn routing_key_replaces_dots() {
        assert_eq!(Symbol::parse("BRK.B").unwrap().routing_key(), "quote.BRK_B");
        assert_eq!(Symbol::parse("^GSPC").unwrap().routing_key(), "quote.^GSPC");
    }
}
