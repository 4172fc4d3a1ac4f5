//! Target profiles: a TOML file describing someone else's server — where it is or how to start
//! it, how to publish to it, and how each pattern's client talks to it — read as raw TOML and
//! checked into a [`Profile`] the run follows. Every error names the file, the field and what was
//! expected. See README "Target profiles" for the format.

pub mod guard;
pub mod pointer;
pub mod publish;
pub mod sections;
pub mod start;
pub mod template;

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;

pub use self::{
    publish::Publish,
    sections::{PatternSpec, Section},
    start::{ProfileServer, StartSpec},
    template::Template,
};
use self::{publish::RawPublish, start::RawStart, template::Var};
use crate::pattern::Pattern;

/// A profile could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read target profile {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("target profile {path} is not valid: {detail}")]
    Toml { path: String, detail: String },
    #[error("target profile {path}: {detail}")]
    Invalid { path: String, detail: String },
}

/// Where in a profile a value sits, for error messages: `patterns.sse`.
#[derive(Debug, Clone)]
pub struct Field(String);

impl Field {
    pub fn new(path: impl Into<String>) -> Self {
        Self(path.into())
    }

    /// "`patterns.sse.url`: detail".
    pub fn at(&self, key: &str, detail: impl fmt::Display) -> String {
        if self.0.is_empty() {
            format!("`{key}`: {detail}")
        } else {
            format!("`{}.{key}`: {detail}", self.0)
        }
    }
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    description: Option<String>,
    base_url: Option<String>,
    start: Option<RawStart>,
    publish: Option<RawPublish>,
    #[serde(default)]
    patterns: BTreeMap<String, toml::Table>,
}

/// A checked profile: what the run follows.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The target's name in results (`target` column, cell names): `node`.
    pub name: String,
    pub description: String,
    /// Where it came from (the file, or the flag of an ad-hoc profile), for messages.
    pub source: String,
    /// The base URL; may use `{port}`. Absent when the readiness line announces it.
    pub base_url: Option<Template>,
    pub start: Option<StartSpec>,
    /// `None`: nothing is published, so every pattern measures the server's own events.
    pub publish: Option<Publish>,
    pub patterns: BTreeMap<Pattern, PatternSpec>,
    /// The text it was read from, which load workers check again for their clients (`None`: the
    /// ad-hoc profile of `--target`, which they build again from the scenario).
    pub toml: Option<String>,
}

impl Profile {
    /// Reads and checks a profile file.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: shown.clone(),
            source,
        })?;
        let dir = path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        Self::from_toml(&text, &shown, &dir)
    }

    /// Checks a profile's text; `path` names it in errors, `dir` anchors its relative paths.
    pub fn from_toml(text: &str, path: &str, dir: &Path) -> Result<Self, ProfileError> {
        let raw: RawProfile = toml::from_str(text).map_err(|e| ProfileError::Toml {
            path: path.to_owned(),
            detail: e.to_string().trim().to_owned(),
        })?;
        raw.check(dir)
            .map_err(|detail| ProfileError::Invalid {
                path: path.to_owned(),
                detail,
            })
            .map(|mut profile| {
                profile.source = path.to_owned();
                profile.toml = Some(text.to_owned());
                profile
            })
    }

    /// The profile the generic patterns (`poll-url`, `sse-url`, `ws-url`) follow: the target URL
    /// itself for each (an empty path under it), `--ws-message` as the WebSocket's subscribe
    /// message, nothing published.
    pub fn ad_hoc(target: &str, ws_message: Option<&str>) -> Result<Self, String> {
        target
            .parse::<http::Uri>()
            .map_err(|e| format!("`{target}` is not a URL: {e}"))?;
        let path = "";
        let base = target;
        let literal = |text: &str| Template::literal(text);
        let patterns = BTreeMap::from([
            (
                Pattern::PollUrl,
                PatternSpec::Poll(sections::PollSpec {
                    url: literal(path),
                    cursor: sections::CursorRule::None,
                    start_cursor: String::new(),
                    more: None,
                    headers: Vec::new(),
                    relays: false,
                }),
            ),
            (
                Pattern::SseUrl,
                PatternSpec::Sse(sections::SseSpec {
                    url: literal(path),
                    last_event_id: true,
                    headers: Vec::new(),
                    relays: false,
                }),
            ),
            (
                Pattern::WsUrl,
                PatternSpec::WebSocket(sections::WsSpec {
                    url: literal(path),
                    subscribe: ws_message.map(literal),
                    subscribed: None,
                    frames: sections::Frames::Any,
                    resume: None,
                    relays: false,
                }),
            ),
        ]);
        Ok(Self {
            name: "external".to_owned(),
            description: format!("the server at {target}"),
            source: "--target".to_owned(),
            base_url: Some(literal(base)),
            start: None,
            publish: None,
            patterns,
            toml: None,
        })
    }

    /// The section for `pattern`.
    pub fn spec(&self, pattern: Pattern) -> Option<&PatternSpec> {
        self.patterns.get(&pattern)
    }

    /// True when clients find each event by its publish stamp on `pattern`'s route: something is
    /// published and the route relays it. Otherwise they count messages and the time between them.
    pub fn stamps(&self, pattern: Pattern) -> bool {
        self.publish.is_some() && self.spec(pattern).is_some_and(PatternSpec::relays)
    }

    /// The patterns this profile describes, by name (for messages).
    pub fn pattern_names(&self) -> String {
        self.patterns
            .keys()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Why its server cannot start here (a missing program or package), if it is started.
    pub fn missing(&self) -> Option<String> {
        self.start.as_ref().and_then(StartSpec::missing)
    }
}

impl RawProfile {
    fn check(self, dir: &Path) -> Result<Profile, String> {
        let top = Field::new("");
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(top.at(
                "name",
                format!(
                    "`{}`: expected letters, digits, `-` or `_` (it names the target in results)",
                    self.name
                ),
            ));
        }
        let base_url = self
            .base_url
            .map(|url| {
                let t = Template::parse(&url, &[Var::Port]).map_err(|e| top.at("base_url", e))?;
                let sample = t.render(&template::Values {
                    port: 1,
                    ..Default::default()
                });
                match sample.parse::<http::Uri>() {
                    Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => Ok(t),
                    _ => Err(top.at(
                        "base_url",
                        format!("`{url}`: expected http://host:port (TLS is not supported)"),
                    )),
                }
            })
            .transpose()?;
        let start = self
            .start
            .map(|s| s.check(dir, &Field::new("start")))
            .transpose()?;
        if start.is_none() && base_url.as_ref().is_some_and(|t| t.uses(Var::Port)) {
            return Err(top.at(
                "base_url",
                "`{port}` is a port the load generator picks for a server it starts: add [start]",
            ));
        }
        let announces = start
            .as_ref()
            .is_some_and(|s| matches!(&s.ready, start::Readiness::Line(t) if t.uses(Var::BaseUrl)));
        if base_url.is_none() && !announces {
            return Err(top.at(
                "base_url",
                "say where the server is: `base_url = \"http://127.0.0.1:3000\"`, or a \
                 `[start]` whose `ready_line` reads it (\"listening on {base_url}\")",
            ));
        }
        let publish = self
            .publish
            .map(|p| p.check(&Field::new("publish")))
            .transpose()?;
        let mut patterns = BTreeMap::new();
        for (name, table) in self.patterns {
            let field = Field::new(format!("patterns.{name}"));
            let pattern: Pattern = name
                .parse()
                .map_err(|e| top.at(&format!("patterns.{name}"), e))?;
            let Some(section) = pattern.about().section else {
                return Err(top.at(
                    &format!("patterns.{name}"),
                    format!(
                        "{pattern} is not driven from a profile (a profile may describe: {})",
                        Pattern::names_where(|p| p.about().section.is_some() && !p.is_generic())
                    ),
                ));
            };
            let spec = section.parse(table, &field).map_err(|e| {
                if e.starts_with('`') {
                    e
                } else {
                    format!("`patterns.{name}`: {e}")
                }
            })?;
            if patterns.insert(pattern, spec).is_some() {
                return Err(top.at(
                    &format!("patterns.{name}"),
                    format!("{pattern} is described twice"),
                ));
            }
        }
        if patterns.is_empty() {
            return Err(top.at(
                "patterns",
                "describe at least one pattern, e.g. [patterns.sse] url = \"/events/{topic}\"",
            ));
        }
        Ok(Profile {
            name: self.name,
            description: self.description.unwrap_or_default(),
            source: String::new(),
            base_url,
            start,
            publish,
            patterns,
            toml: None,
        })
    }
}

#[cfg(test)]
mod tests;
