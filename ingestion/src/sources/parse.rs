//! Reading fields out of source documents with an error that names the
//! field and what was wrong with it.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{ItemError, Response, SourceError};
use lizards_shared::Symbol;

/// The body as JSON; a body that ends early is `Truncated`.
pub fn json(response: &Response) -> Result<Value, SourceError> {
    serde_json::from_slice(&response.body).map_err(|error| match error.classify() {
        serde_json::error::Category::Eof => SourceError::Truncated(error.to_string()),
        _ => SourceError::Malformed(error.to_string()),
    })
}

/// The body as UTF-8 text.
pub fn text(response: &Response) -> Result<&str, SourceError> {
    std::str::from_utf8(&response.body).map_err(|error| SourceError::Malformed(format!("not UTF-8: {error}")))
}

/// `value[name]`, present and not null.
pub fn field<'a>(value: &'a Value, name: &str) -> Result<&'a Value, SourceError> {
    match value.get(name) {
        None | Some(Value::Null) => Err(SourceError::MissingField(name.to_string())),
        Some(found) => Ok(found),
    }
}

/// A short description of a JSON value for error messages.
pub fn describe(value: &Value) -> String {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let text = value.to_string();
    if text.len() <= 40 { format!("{kind} {text}") } else { kind.to_string() }
}

fn wrong_type(name: &str, expected: &'static str, found: &Value) -> SourceError {
    SourceError::WrongType { field: name.to_string(), expected, found: describe(found) }
}

/// A JSON number.
pub fn number(value: &Value, name: &str) -> Result<f64, SourceError> {
    let found = field(value, name)?;
    found.as_f64().ok_or_else(|| wrong_type(name, "a number", found))
}

/// A number written as a JSON string (`"228.50"`), as Binance and Alpha
/// Vantage send them.
pub fn numeric_string(value: &Value, name: &str) -> Result<f64, SourceError> {
    let found = field(value, name)?;
    let text = found.as_str().ok_or_else(|| wrong_type(name, "a numeric string", found))?;
    decimal(text, name)
}

/// A decimal number in text; `NaN` and `inf` parse (and fail as prices).
pub fn decimal(text: &str, name: &str) -> Result<f64, SourceError> {
    text.trim().parse::<f64>().map_err(|_| wrong_type(name, "a decimal number", &Value::String(text.to_string())))
}

/// A Unix time in seconds (or milliseconds when `millis`).
pub fn unix_time(value: &Value, name: &str, millis: bool) -> Result<DateTime<Utc>, SourceError> {
    let found = field(value, name)?;
    let count = found.as_i64().ok_or_else(|| wrong_type(name, "a Unix time", found))?;
    let ts = if millis { DateTime::from_timestamp_millis(count) } else { DateTime::from_timestamp(count, 0) };
    ts.ok_or_else(|| wrong_type(name, "a Unix time", found))
}

/// A price must be finite and above zero.
pub fn price(value: f64) -> Result<f64, SourceError> {
    if value.is_finite() && value > 0.0 { Ok(value) } else { Err(SourceError::InvalidPrice(value.to_string())) }
}

/// A volume, when present, must be finite and not negative; anything else
/// is dropped rather than failing the price.
pub fn volume(value: Option<f64>) -> Option<f64> {
    value.filter(|v| v.is_finite() && *v >= 0.0)
}

/// An item error about `symbol`, keeping `body`.
pub fn item_error(symbol: &Symbol, error: SourceError, body: &Value) -> Box<ItemError> {
    Box::new(ItemError { symbol: symbol.clone(), error, body: body.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn response(body: &str) -> Response {
        Response { status: 200, body: bytes::Bytes::from(body.to_string()), received_at: Utc::now() }
    }

    #[test]
    fn json_errors_say_truncated_or_malformed() {
        assert!(matches!(json(&response(r#"{"a": [1, 2"#)), Err(SourceError::Truncated(_))));
        assert!(matches!(json(&response("<html>")), Err(SourceError::Malformed(_))));
        assert_eq!(json(&response(r#"{"a":1}"#)).unwrap(), json!({"a": 1}));
    }

    #[test]
    fn fields_name_what_is_missing_or_mistyped() {
        let doc = json!({"p": "1.5", "n": 2.5, "x": null, "o": {}, "t": 1_700_000_000});
        assert_eq!(number(&doc, "n"), Ok(2.5));
        assert_eq!(numeric_string(&doc, "p"), Ok(1.5));
        assert_eq!(number(&doc, "q"), Err(SourceError::MissingField("q".into())));
        assert_eq!(number(&doc, "x"), Err(SourceError::MissingField("x".into())));
        assert!(matches!(number(&doc, "p"), Err(SourceError::WrongType { expected: "a number", .. })));
        assert!(matches!(numeric_string(&doc, "n"), Err(SourceError::WrongType { .. })));
        assert!(matches!(number(&doc, "o"), Err(SourceError::WrongType { .. })));
        assert_eq!(unix_time(&doc, "t", false).unwrap().timestamp(), 1_700_000_000);
        assert!(decimal("abc", "p").is_err());
        assert!(decimal("NaN", "p").unwrap().is_nan());
    }

    #[test]
    fn prices_must_be_finite_and_positive() {
        assert_eq!(price(1.5), Ok(1.5));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(price(bad), Err(SourceError::InvalidPrice(_))), "{bad}");
        }
        assert_eq!(volume(Some(-1.0)), None);
        assert_eq!(volume(Some(3.0)), Some(3.0));
    }
}
