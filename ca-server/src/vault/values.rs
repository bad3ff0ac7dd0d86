//! Vault's loosely typed request values: booleans as `true` or `"true"`, durations as Go strings
//! (`"2160h0m0s"`) or seconds, lists as arrays or comma-separated strings.

use std::time::Duration;

use serde_json::{Map, Value};

use super::VaultError;

/// A boolean field; `default` when absent.
pub fn bool_field(data: &Map<String, Value>, key: &str, default: bool) -> Result<bool, VaultError> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.is_empty() => Ok(default),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "t" => Ok(true),
            "false" | "0" | "f" => Ok(false),
            _ => Err(VaultError::bad_request(format!(
                "{key}: cannot parse {s:?} as a boolean"
            ))),
        },
        Some(Value::Number(n)) => Ok(n.as_i64().unwrap_or(0) != 0),
        Some(other) => Err(VaultError::bad_request(format!(
            "{key}: cannot parse {other} as a boolean"
        ))),
    }
}

/// A string field; empty when absent.
pub fn string_field(data: &Map<String, Value>, key: &str) -> String {
    match data.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

/// A list field: a JSON array or a comma-separated string; empty items dropped.
pub fn list_field(data: &Map<String, Value>, key: &str) -> Vec<String> {
    match data.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s.trim().to_owned()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|s| !s.is_empty())
            .collect(),
        Some(Value::String(s)) => s
            .split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect(),
        _ => Vec::new(),
    }
}

/// A duration field (Go syntax or seconds); None when absent or empty.
pub fn duration_field(
    data: &Map<String, Value>,
    key: &str,
) -> Result<Option<Duration>, VaultError> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Duration::from_secs)
            .filter(|d| *d <= crate::duration::MAX)
            .map(Some)
            .ok_or_else(|| {
                VaultError::bad_request(format!(
                    "{key}: {n} is not a number of seconds between 0 and 1000 years"
                ))
            }),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => crate::duration::parse(s)
            .map(Some)
            .map_err(|e| VaultError::bad_request(format!("{key}: {e}"))),
        Some(other) => Err(VaultError::bad_request(format!(
            "{key}: cannot parse {other} as a duration"
        ))),
    }
}

/// An integer field; `default` when absent.
pub fn int_field(data: &Map<String, Value>, key: &str, default: i64) -> Result<i64, VaultError> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| VaultError::bad_request(format!("{key}: not an integer"))),
        Some(Value::String(s)) if s.is_empty() => Ok(default),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| VaultError::bad_request(format!("{key}: {s:?} is not an integer"))),
        Some(other) => Err(VaultError::bad_request(format!(
            "{key}: cannot parse {other} as an integer"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn loose_values() {
        let data = json!({"a": "true", "b": false, "ttl": "2160h0m0s", "n": 3600, "l": "x, y,,z", "arr": ["p", "q"], "i": "5"});
        let m = data.as_object().expect("object");
        assert!(bool_field(m, "a", false).expect("bool"));
        assert!(!bool_field(m, "b", true).expect("bool"));
        assert!(bool_field(m, "missing", true).expect("default"));
        assert_eq!(
            duration_field(m, "ttl").expect("ttl"),
            Some(Duration::from_secs(2160 * 3600))
        );
        assert_eq!(
            duration_field(m, "n").expect("n"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(list_field(m, "l"), vec!["x", "y", "z"]);
        assert_eq!(list_field(m, "arr"), vec!["p", "q"]);
        assert_eq!(int_field(m, "i", 0).expect("int"), 5);
        assert!(
            bool_field(
                &json!({"x": "maybe"}).as_object().expect("o").clone(),
                "x",
                false
            )
            .is_err()
        );
    }
}
