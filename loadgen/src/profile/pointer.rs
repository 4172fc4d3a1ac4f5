//! JSON pointers (RFC 6901) into a server's answer, where a profile says its poll cursor or
//! `more` flag is, with one extension: the token `-1` names an array's last element
//! (`/events/-1/seq`: the sequence number of the last event of a page).

use serde_json::Value;

/// A checked pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl Pointer {
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!(
                "`{text}` is not a JSON pointer (it starts with `/`, e.g. `/events/-1/seq`)"
            ));
        }
        let tokens = text[1..]
            .split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        Ok(Self {
            text: text.to_owned(),
            tokens,
        })
    }

    /// The value the pointer names, if the answer has it.
    pub fn get<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        self.tokens
            .iter()
            .try_fold(root, |value, token| match value {
                Value::Object(map) => map.get(token),
                Value::Array(items) if token == "-1" => items.last(),
                Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            })
    }

    /// The value as cursor text: a string as it is, a number or boolean in JSON form; `None` for
    /// null, arrays, objects or a missing value.
    pub fn text(&self, root: &Value) -> Option<String> {
        match self.get(root)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

impl std::fmt::Display for Pointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_indexes_and_the_last_element() {
        let page: Value = serde_json::json!({
            "head": 9, "more": true,
            "events": [{"seq": 4}, {"seq": 5}], "a/b": {"c~d": "x"}
        });
        let p = |t: &str| Pointer::parse(t).unwrap();
        assert_eq!(p("/events/-1/seq").text(&page).as_deref(), Some("5"));
        assert_eq!(p("/events/0/seq").text(&page).as_deref(), Some("4"));
        assert_eq!(p("/more").text(&page).as_deref(), Some("true"));
        assert_eq!(p("/a~1b/c~0d").text(&page).as_deref(), Some("x"));
        assert_eq!(p("/events").text(&page), None);
        let empty: Value = serde_json::json!({"events": []});
        assert_eq!(p("/events/-1/seq").text(&empty), None);
        assert!(Pointer::parse("events")
            .unwrap_err()
            .contains("JSON pointer"));
    }
}
