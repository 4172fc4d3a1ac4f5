//! Text templates of a target profile: literal text with placeholders such as `{topic}`, compiled
//! once and rendered per request. Only a known name in braces is a placeholder, so JSON templates
//! (`{"topic":"{topic}"}`) need no escaping.

use std::fmt;

/// A value a template may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// The client's (or the publish's) topic.
    Topic,
    /// A poll's cursor.
    Cursor,
    /// A long poll's timeout in milliseconds.
    TimeoutMs,
    /// The published payload (stamped by the load generator).
    Payload,
    /// A free loopback port the load generator picked for a started server.
    Port,
    /// The started server's base URL, read from its readiness line.
    BaseUrl,
    /// This `commbench` executable.
    Commbench,
}

impl Var {
    const ALL: [Var; 7] = [
        Var::Topic,
        Var::Cursor,
        Var::TimeoutMs,
        Var::Payload,
        Var::Port,
        Var::BaseUrl,
        Var::Commbench,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Var::Topic => "topic",
            Var::Cursor => "cursor",
            Var::TimeoutMs => "timeout_ms",
            Var::Payload => "payload",
            Var::Port => "port",
            Var::BaseUrl => "base_url",
            Var::Commbench => "commbench",
        }
    }
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}}", self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// The values a rendering fills in (absent ones render empty; validation keeps them from being
/// asked for where they do not exist).
#[derive(Debug, Clone, Copy, Default)]
pub struct Values<'a> {
    pub topic: &'a str,
    pub cursor: &'a str,
    pub timeout_ms: u64,
    pub port: u16,
}

impl Template {
    /// Compiles `text`; a placeholder not in `allowed` is an error naming what the field takes.
    /// A `{word}` that is no placeholder name at all is an error too (a typo, most likely).
    pub fn parse(text: &str, allowed: &[Var]) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            literal.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let name_len = after
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(after.len());
            let is_word = name_len > 0 && after[name_len..].starts_with('}');
            if !is_word {
                literal.push('{');
                rest = after;
                continue;
            }
            let name = &after[..name_len];
            let var = Var::ALL.into_iter().find(|v| v.name() == name);
            match var {
                Some(var) if allowed.contains(&var) => {
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Var(var));
                }
                _ => {
                    let takes = if allowed.is_empty() {
                        "no placeholders".to_owned()
                    } else {
                        allowed
                            .iter()
                            .map(Var::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    return Err(format!(
                        "unknown placeholder `{{{name}}}` in `{text}` (this field takes {takes})"
                    ));
                }
            }
            rest = &after[name_len + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Self { parts })
    }

    /// A template of literal text only.
    pub fn literal(text: &str) -> Self {
        Self {
            parts: vec![Part::Text(text.to_owned())],
        }
    }

    /// True when the template uses `var`.
    pub fn uses(&self, var: Var) -> bool {
        self.parts.contains(&Part::Var(var))
    }

    /// True when the template is exactly `var` and nothing else (a body that is the payload).
    pub fn is_only(&self, var: Var) -> bool {
        self.parts == [Part::Var(var)]
    }

    /// Renders with `values`; `payload` fills `{payload}`, `extra` fills `{base_url}` and
    /// `{commbench}` (start fields).
    pub fn render_with(
        &self,
        values: &Values<'_>,
        payload: &[u8],
        extra: &[(Var, &str)],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + payload.len());
        for part in &self.parts {
            match part {
                Part::Text(text) => out.extend_from_slice(text.as_bytes()),
                Part::Var(Var::Topic) => out.extend_from_slice(values.topic.as_bytes()),
                Part::Var(Var::Cursor) => out.extend_from_slice(values.cursor.as_bytes()),
                Part::Var(Var::TimeoutMs) => {
                    out.extend_from_slice(values.timeout_ms.to_string().as_bytes())
                }
                Part::Var(Var::Port) => out.extend_from_slice(values.port.to_string().as_bytes()),
                Part::Var(Var::Payload) => out.extend_from_slice(payload),
                Part::Var(var) => {
                    if let Some((_, value)) = extra.iter().find(|(v, _)| v == var) {
                        out.extend_from_slice(value.as_bytes());
                    }
                }
            }
        }
        out
    }

    /// Renders to text (no payload).
    pub fn render(&self, values: &Values<'_>) -> String {
        String::from_utf8_lossy(&self.render_with(values, b"", &[])).into_owned()
    }

    /// The literal text before the first placeholder, and the text after `var` (for matching a
    /// readiness line around `{base_url}`).
    pub fn around(&self, var: Var) -> Option<(String, String)> {
        let at = self.parts.iter().position(|p| *p == Part::Var(var))?;
        let text = |parts: &[Part]| {
            parts
                .iter()
                .map(|p| match p {
                    Part::Text(t) => t.clone(),
                    Part::Var(v) => v.to_string(),
                })
                .collect::<String>()
        };
        Some((text(&self.parts[..at]), text(&self.parts[at + 1..])))
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Text(text) => f.write_str(text)?,
                Part::Var(var) => write!(f, "{var}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_braces_are_text_and_names_are_placeholders() {
        let t =
            Template::parse(r#"{"type":"subscribe","topic":"{topic}"}"#, &[Var::Topic]).unwrap();
        let values = Values {
            topic: "t0",
            ..Values::default()
        };
        assert_eq!(t.render(&values), r#"{"type":"subscribe","topic":"t0"}"#);
        assert!(t.uses(Var::Topic) && !t.uses(Var::Cursor));
        assert_eq!(t.to_string(), r#"{"type":"subscribe","topic":"{topic}"}"#);
    }

    #[test]
    fn renders_every_value_and_the_payload_unchanged() {
        let t = Template::parse(
            "/lp/{topic}?after={cursor}&t={timeout_ms}",
            &[Var::Topic, Var::Cursor, Var::TimeoutMs],
        )
        .unwrap();
        let values = Values {
            topic: "a",
            cursor: "7",
            timeout_ms: 30_000,
            port: 0,
        };
        assert_eq!(t.render(&values), "/lp/a?after=7&t=30000");
        let body = Template::parse("{payload}", &[Var::Payload]).unwrap();
        assert!(body.is_only(Var::Payload));
        assert_eq!(body.render_with(&values, b"cb:1:2:xx", &[]), b"cb:1:2:xx");
    }

    #[test]
    fn unknown_or_misplaced_placeholders_are_named() {
        let err = Template::parse("/poll/{topc}", &[Var::Topic, Var::Cursor]).unwrap_err();
        assert!(
            err.contains("`{topc}`") && err.contains("{topic}, {cursor}"),
            "{err}"
        );
        let err = Template::parse("/sse/{cursor}", &[Var::Topic]).unwrap_err();
        assert!(err.contains("`{cursor}`"), "{err}");
        assert!(Template::parse("/x/{}", &[]).is_ok());
    }

    #[test]
    fn splits_around_the_base_url() {
        let t = Template::parse("listening on {base_url}", &[Var::BaseUrl]).unwrap();
        assert_eq!(
            t.around(Var::BaseUrl),
            Some(("listening on ".to_owned(), String::new()))
        );
    }
}
