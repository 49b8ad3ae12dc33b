//! Field deserializers that never fail: an odd value becomes "absent" instead of losing the whole
//! event. Real ECS events carry a container `cpu` of `"null"`, numbers where strings are
//! documented, and fields added after this code was written.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A string field: strings are trimmed (blank is absent), numbers and booleans are spelled out,
/// anything else is absent.
pub(crate) fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::String(s) => {
            let trimmed = s.trim();
            (!trimmed.is_empty()).then(|| trimmed.to_owned())
        }
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    })
}

/// An unsigned integer field: a JSON number or a string of digits; anything else is absent.
pub(crate) fn unsigned<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// A list field: each element that parses is kept, the others are dropped; a value that is not
/// a list is an empty list.
pub(crate) fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    Ok(match Value::deserialize(deserializer)? {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| serde_json::from_value(item).ok())
            .collect(),
        _ => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Default)]
    #[serde(default)]
    struct Probe {
        #[serde(deserialize_with = "super::text")]
        text: Option<String>,
        #[serde(deserialize_with = "super::unsigned")]
        number: Option<u64>,
        #[serde(deserialize_with = "super::list")]
        items: Vec<u32>,
    }

    fn probe(json: &str) -> Probe {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn odd_values_become_absent_not_errors() {
        let p = probe(r#"{"text": {"nested": 1}, "number": "x", "items": "no"}"#);
        assert_eq!((p.text, p.number, p.items.len()), (None, None, 0));
        let p = probe(r#"{"text": 256, "number": "7", "items": [1, "two", 3]}"#);
        assert_eq!(p.text.as_deref(), Some("256"));
        assert_eq!(p.number, Some(7));
        assert_eq!(p.items, [1, 3]);
        let p = probe(r#"{"text": "  ", "number": -3}"#);
        assert_eq!((p.text, p.number), (None, None));
        let p = probe("{}");
        assert_eq!((p.text, p.number, p.items.len()), (None, None, 0));
    }
}
