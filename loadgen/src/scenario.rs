//! What to run: raw settings from flags and TOML scenario files, merged (flags win) and validated into a
//! [`Scenario`]. Every error names the flag or field it came from and the allowed range.

use std::{collections::BTreeMap, fmt, path::Path, str::FromStr, sync::Arc, time::Duration};

use commbench_servers::units::{parse_bytes, parse_count, parse_duration};
use serde::{Deserialize, Serialize};

use crate::{
    pattern::{Kind, Pattern},
    profile::Profile,
};

/// How the publisher spaces events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Evenly spaced: one event every 1/rate seconds.
    Fixed,
    /// Exponential inter-arrival times with mean 1/rate (a Poisson process).
    Poisson,
}

/// Which bus the embedded servers share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// The in-process bus: one server instance holds the feed.
    Memory,
    /// A real Redis between the instances (started by the load generator, or `--bus-url`).
    Redis,
    /// A RabbitMQ node: a stream per topic, the job log and lane queues.
    #[serde(rename = "rabbitmq")]
    RabbitMq,
    /// A Kafka-protocol broker (tansu when started here): a topic per feed topic and the job log.
    Kafka,
}

impl BusKind {
    /// Every real broker, in the order the broker comparison shows them.
    pub const BROKERS: [BusKind; 3] = [BusKind::Redis, BusKind::RabbitMq, BusKind::Kafka];

    pub fn as_str(self) -> &'static str {
        match self {
            BusKind::Memory => "memory",
            BusKind::Redis => "redis",
            BusKind::RabbitMq => "rabbitmq",
            BusKind::Kafka => "kafka",
        }
    }

    /// The name people write it with: `Redis`, `RabbitMQ`, `Kafka` (`in-process` for memory).
    pub fn title(self) -> &'static str {
        match self {
            BusKind::Memory => "in-process",
            BusKind::Redis => "Redis",
            BusKind::RabbitMq => "RabbitMQ",
            BusKind::Kafka => "Kafka",
        }
    }

    /// [`title`](Self::title) of a result row's `bus` column (the text itself when unknown).
    pub fn title_of(bus: &str) -> &str {
        Self::parse(bus).map_or(bus, |kind| kind.title())
    }

    /// A real broker between the instances (every bus but the in-process one).
    pub fn is_broker(self) -> bool {
        self != BusKind::Memory
    }

    /// `memory`, `redis`, `rabbitmq` or `kafka` (`in-process` for memory).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "memory" | "in-process" => Ok(BusKind::Memory),
            "redis" => Ok(BusKind::Redis),
            "rabbitmq" => Ok(BusKind::RabbitMq),
            "kafka" => Ok(BusKind::Kafka),
            other => Err(format!(
                "unknown bus `{other}` (use memory, redis, rabbitmq or kafka)"
            )),
        }
    }

    /// The broker an existing broker's URL names by its scheme: `redis://`, `amqp://`, `kafka://`.
    fn of_url(text: &str) -> Result<Self, String> {
        let url: http::Uri = text
            .parse()
            .map_err(|e| format!("`{text}` is not a URL: {e}"))?;
        let kind = match url.scheme_str() {
            Some("redis") => BusKind::Redis,
            Some("amqp") => BusKind::RabbitMq,
            Some("kafka") => BusKind::Kafka,
            _ => {
                return Err(format!(
                    "`{text}` is not a broker URL (use redis://host:port, amqp://host:port or \
                     kafka://host:port; TLS is not supported)"
                ))
            }
        };
        match url.host() {
            Some(_) => Ok(kind),
            None => Err(format!("`{text}` names no host")),
        }
    }
}

impl fmt::Display for BusKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated run description (also what a load worker is handed, as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scenario {
    pub patterns: Vec<Pattern>,
    pub clients: usize,
    /// Events per second published (request-response: requests per second, 0 = closed loop).
    pub rate: f64,
    #[serde(with = "secs")]
    pub duration: Duration,
    #[serde(with = "secs")]
    pub warmup: Duration,
    pub payload: usize,
    pub topics: usize,
    #[serde(with = "secs")]
    pub interval: Duration,
    #[serde(with = "secs")]
    pub long_poll_timeout: Duration,
    pub arrival: Arrival,
    /// New connections per second while clients start.
    pub ramp: u64,
    /// Request-response runs closed-loop (each connection sends as soon as the last answer arrives).
    pub closed_loop: bool,
    /// An already-running server; `None` starts the embedded one (or the profile's server).
    pub target: Option<String>,
    /// The target profile describing someone else's server (`--profile`), or the ad-hoc one the
    /// generic patterns follow; recorded as where it came from. A load worker is handed it apart
    /// (`procs::protocol::WorkerProfile`).
    #[serde(serialize_with = "profile_source", skip_deserializing)]
    pub profile: Option<Arc<Profile>>,
    /// The process of an already-running target, whose CPU and memory are then measured.
    pub target_pid: Option<u32>,
    /// Sent once after connecting, for `ws-url`.
    pub ws_message: Option<String>,
    /// After publishing stops, how long clients may take to catch up before loss is counted.
    #[serde(with = "secs")]
    pub drain: Duration,
    /// Stop early when this many errors have been counted (0 = never).
    pub max_errors: u64,
    /// Embedded server instances; clients are spread over them round-robin, publishes go to the first.
    pub instances: usize,
    pub bus: BusKind,
    /// An existing broker (`redis://`, `amqp://` or `kafka://host:port`); `None` with a broker bus
    /// starts a private one.
    pub bus_url: Option<String>,
    /// Job patterns: simulated work per job, done by a worker.
    #[serde(with = "secs")]
    pub work: Duration,
    /// Job patterns: workers inside each embedded server instance.
    pub workers: usize,
    /// Job patterns: the share of users whose jobs go to the premium lane (0..=1).
    pub premium: f64,
    /// Load-worker processes a cell's clients are split over; `None` = as many as the open-file
    /// limit needs (one: the clients run inside the runner's own process).
    #[serde(default)]
    pub procs: Option<usize>,
}

fn profile_source<S: serde::Serializer>(
    profile: &Option<Arc<Profile>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match profile {
        Some(profile) => s.serialize_str(&profile.source),
        None => s.serialize_none(),
    }
}

mod secs {
    use std::time::Duration;

    use serde::Deserialize as _;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// One setting before validation, with where it came from for error messages.
#[derive(Debug, Clone)]
pub struct RawValue {
    pub text: String,
    pub origin: String,
}

/// Settings keyed by field name (`clients`, `duration`, …), before validation.
#[derive(Debug, Clone, Default)]
pub struct RawScenario {
    values: BTreeMap<&'static str, RawValue>,
}

/// The fields a scenario file or the flags may set.
pub const FIELDS: [&str; 34] = [
    "patterns",
    "profile",
    "target_pid",
    "peers",
    "clients",
    "rate",
    "duration",
    "warmup",
    "payload",
    "topics",
    "interval",
    "long_poll_timeout",
    "arrival",
    "ramp",
    "closed_loop",
    "target",
    "ws_message",
    "drain",
    "max_errors",
    "instances",
    "bus",
    "bus_url",
    "bus_patterns",
    "bus_instances",
    "job_patterns",
    "brokers",
    "broker_patterns",
    "broker_duration",
    "work",
    "workers",
    "premium",
    "procs",
    // Read by `threshold::Thresholds::from_raw`, not by the scenario itself.
    "fail_if",
    "fail_if_missing",
];

/// A scenario could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("scenario file {path} is not valid TOML: {detail}")]
    Toml { path: String, detail: String },
    #[error("scenario file {path}: unknown field `{field}` (known: {known})")]
    UnknownField {
        path: String,
        field: String,
        known: String,
    },
    #[error("{origin}: {detail}")]
    Invalid { origin: String, detail: String },
}

impl RawScenario {
    /// The scenario's target profile, read from the file `profile` names (`None` when not set).
    fn profile(&self) -> Result<Option<Arc<Profile>>, ScenarioError> {
        let Some(value) = self.get("profile") else {
            return Ok(None);
        };
        Profile::load(Path::new(value.text.trim()))
            .map(|p| Some(Arc::new(p)))
            .map_err(|e| ScenarioError::Invalid {
                origin: value.origin.clone(),
                detail: e.to_string(),
            })
    }
}

impl RawScenario {
    /// Sets `field` from a command-line flag.
    pub fn set_flag(&mut self, field: &'static str, text: impl Into<String>) {
        let origin = match field {
            "patterns" => "--pattern".to_owned(),
            _ => format!("--{}", field.replace('_', "-")),
        };
        self.values.insert(
            field,
            RawValue {
                text: text.into(),
                origin,
            },
        );
    }

    /// Reads a TOML scenario file: top-level keys named like the fields.
    pub fn from_file(path: &Path) -> Result<Self, ScenarioError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::from_toml(&text, &shown)
    }

    pub fn from_toml(text: &str, path: &str) -> Result<Self, ScenarioError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| ScenarioError::Toml {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        let mut raw = RawScenario::default();
        for (key, value) in table {
            let Some(field) = FIELDS.iter().copied().find(|f| *f == key.replace('-', "_")) else {
                return Err(ScenarioError::UnknownField {
                    path: path.to_owned(),
                    field: key,
                    known: FIELDS.join(", "),
                });
            };
            let origin = format!("{path}: field `{field}`");
            let text = match value {
                toml::Value::Array(items) => items
                    .into_iter()
                    .map(|item| scalar_text(item, &origin))
                    .collect::<Result<Vec<_>, _>>()?
                    .join(","),
                other => scalar_text(other, &origin)?,
            };
            raw.values.insert(field, RawValue { text, origin });
        }
        Ok(raw)
    }

    /// Sets `field` to a built-in default (reported as such in errors).
    pub fn set_default(&mut self, field: &'static str, text: &str) {
        self.values.insert(
            field,
            RawValue {
                text: text.to_owned(),
                origin: format!("default {field}"),
            },
        );
    }

    /// What was given over layers of built-in defaults (each layer over the ones before it).
    pub fn over_defaults(self, layers: &[&[(&'static str, &str)]]) -> Self {
        let mut base = RawScenario::default();
        for (field, value) in layers.iter().flat_map(|layer| layer.iter()) {
            base.set_default(field, value);
        }
        base.merge(self)
    }

    /// Sets `field` to one element of the list it holds in `from`, keeping its origin.
    pub fn set_from(&mut self, field: &'static str, text: &str, from: &RawScenario) {
        let origin = from
            .get(field)
            .map_or_else(|| field.to_owned(), |v| v.origin.clone());
        self.values.insert(
            field,
            RawValue {
                text: text.to_owned(),
                origin,
            },
        );
    }

    /// Sets `field` to what `source` holds in `from`, keeping that origin, so an error names the
    /// field that was given (e.g. `duration` from `broker_duration`). Nothing when `source` is unset.
    pub fn set_from_field(
        &mut self,
        field: &'static str,
        source: &'static str,
        from: &RawScenario,
    ) {
        if let Some(value) = from.get(source) {
            self.values.insert(field, value.clone());
        }
    }

    /// The comma-separated elements of `field`, if set.
    pub fn values_of(&self, field: &'static str) -> Option<Vec<String>> {
        self.get(field).map(|v| {
            v.text
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
    }

    /// Every field given, as `{field: text}` (what `run.json` records for a study).
    pub fn to_json(&self) -> serde_json::Value {
        self.values
            .iter()
            .map(|(field, value)| ((*field).to_owned(), value.text.clone().into()))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// The raw text of `field`, if set.
    pub fn text_of(&self, field: &'static str) -> Option<&str> {
        self.get(field).map(|v| v.text.as_str())
    }

    /// Overlays `other` on `self` (values in `other` win).
    pub fn merge(mut self, other: RawScenario) -> Self {
        self.values.extend(other.values);
        self
    }

    fn get(&self, field: &'static str) -> Option<&RawValue> {
        self.values.get(field)
    }

    /// Where `field` came from (a flag, a file field or a default), for error messages.
    pub fn origin_of(&self, field: &'static str) -> String {
        self.get(field)
            .map_or_else(|| field.to_owned(), |v| v.origin.clone())
    }

    /// Validates the first element of every list field: the settings a study shares by all cells.
    pub fn validate_first(&self) -> Result<Scenario, ScenarioError> {
        self.validate_first_except("")
    }

    /// [`validate_first`](Self::validate_first), keeping `keep` whole (e.g. every pattern).
    pub fn validate_first_except(&self, keep: &str) -> Result<Scenario, ScenarioError> {
        let mut first = self.clone();
        for (field, value) in self.values.iter().filter(|(f, _)| **f != keep) {
            if let Some(head) = value.text.split(',').next() {
                first.values.insert(
                    field,
                    RawValue {
                        text: head.trim().to_owned(),
                        origin: value.origin.clone(),
                    },
                );
            }
        }
        first.validate()
    }

    /// Validates every field, applying defaults for the ones not given.
    pub fn validate(&self) -> Result<Scenario, ScenarioError> {
        let v = Validator { raw: self };
        let patterns = v.field("patterns", "sse", |t| {
            t.split(',')
                .filter(|p| !p.trim().is_empty())
                .map(Pattern::from_str)
                .collect::<Result<Vec<_>, _>>()
                .and_then(|p| {
                    if p.is_empty() {
                        Err("name at least one pattern".to_owned())
                    } else {
                        Ok(p)
                    }
                })
        })?;
        let target = v.optional("target", |t| {
            let url: http::Uri = t.parse().map_err(|e| format!("`{t}` is not a URL: {e}"))?;
            match url.scheme_str() {
                Some("http" | "ws") => Ok(t.trim_end_matches('/').to_owned()),
                Some(other) => Err(format!(
                    "scheme `{other}` is not supported (use http:// or ws://; TLS is not)"
                )),
                None => Err(format!("`{t}` needs a scheme, e.g. http://127.0.0.1:8080")),
            }
        })?;
        let scenario = Scenario {
            clients: v.field("clients", "100", |t| count(t, 1, 200_000))? as usize,
            rate: v.field("rate", "50", |t| rate(t, 0.0, 1_000_000.0))?,
            duration: v.field("duration", "10s", |t| duration(t, 1.0, 86_400.0))?,
            warmup: v.field("warmup", "2s", |t| duration(t, 0.0, 3_600.0))?,
            payload: v.field("payload", "128", |t| bytes(t, 48, 1 << 20))? as usize,
            topics: v.field("topics", "1", |t| count(t, 1, 1_000))? as usize,
            interval: v.field("interval", "1s", |t| duration(t, 0.001, 3_600.0))?,
            long_poll_timeout: v.field("long_poll_timeout", "30s", |t| duration(t, 0.01, 600.0))?,
            arrival: v.field("arrival", "fixed", |t| match t.trim() {
                "fixed" => Ok(Arrival::Fixed),
                "poisson" => Ok(Arrival::Poisson),
                other => Err(format!("unknown arrival `{other}` (use fixed or poisson)")),
            })?,
            ramp: v.field("ramp", "2000", |t| count(t, 1, 1_000_000))?,
            closed_loop: v.field("closed_loop", "false", |t| match t.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                other => Err(format!("`{other}` is not true or false")),
            })?,
            ws_message: v.optional("ws_message", |t| Ok(t.to_owned()))?,
            drain: v.field("drain", "0s", |t| duration(t, 0.0, 600.0))?,
            max_errors: v.field("max_errors", "0", |t| count(t, 0, u64::MAX))?,
            instances: v.field("instances", "1", |t| count(t, 1, 16))? as usize,
            bus: v.field("bus", "memory", BusKind::parse)?,
            bus_url: v.optional("bus_url", |t| {
                BusKind::of_url(t).map(|_| t.trim_end_matches('/').to_owned())
            })?,
            work: v.field("work", "20ms", |t| duration(t, 0.0, 60.0))?,
            workers: v.field("workers", "4", |t| count(t, 0, 4_096))? as usize,
            premium: v.field("premium", "0.2", |t| rate(t, 0.0, 1.0))?,
            procs: v
                .optional("procs", |t| count(t, 1, 256))?
                .map(|n| n as usize),
            target_pid: v.optional("target_pid", |t| {
                let pid = count(t, 1, u64::from(u32::MAX))? as u32;
                if Path::new(&format!("/proc/{pid}/stat")).exists() {
                    Ok(pid)
                } else {
                    Err(format!("no process {pid} is running on this machine"))
                }
            })?,
            profile: self.profile()?,
            patterns,
            target,
        };
        scenario.check_combinations()
    }
}

impl Scenario {
    fn check_combinations(mut self) -> Result<Self, ScenarioError> {
        let invalid = |origin: &str, detail: String| ScenarioError::Invalid {
            origin: origin.to_owned(),
            detail,
        };
        let generic = Pattern::names_where(Pattern::is_generic);
        let any_generic = self.patterns.iter().any(|p| p.is_generic());
        if any_generic && self.profile.is_some() {
            return Err(invalid(
                "--pattern",
                format!(
                    "{generic} take --target URL; with --profile use the pattern names the \
                     profile describes"
                ),
            ));
        }
        if any_generic {
            let Some(target) = &self.target else {
                return Err(invalid(
                    "--pattern",
                    format!("{generic} drive someone else's server: give --target URL"),
                ));
            };
            let ad_hoc = Profile::ad_hoc(target, self.ws_message.as_deref())
                .map_err(|detail| invalid("--target", detail))?;
            self.profile = Some(Arc::new(ad_hoc));
        } else if let Some(profile) = &self.profile {
            self.check_profile(profile)?;
        }
        if self.target_pid.is_some()
            && self.target.is_none()
            && self.profile.as_ref().is_none_or(|p| p.start.is_some())
        {
            return Err(invalid(
                "--target-pid",
                "measures a server that is already running: give its --target URL (or a \
                 --profile without [start])"
                    .into(),
            ));
        }
        if let Some(url) = &self.bus_url {
            let named = BusKind::of_url(url).map_err(|detail| invalid("--bus-url", detail))?;
            if self.bus.is_broker() && self.bus != named {
                return Err(invalid(
                    "--bus-url",
                    format!("`{url}` is a {named} URL but --bus is {}", self.bus),
                ));
            }
            self.bus = named;
        }
        if self.target.is_some() && (self.bus.is_broker() || self.instances > 1) {
            return Err(invalid(
                "--target",
                "--instances, --bus and --bus-url start commbench's own servers; an external \
                 --target runs its own bus"
                    .into(),
            ));
        }
        if self.instances > 1 && self.bus == BusKind::Memory {
            return Err(invalid(
                "--instances",
                format!(
                    "{} instances need a shared bus: add --bus redis, rabbitmq or kafka (the \
                     in-process bus lives inside one server)",
                    self.instances
                ),
            ));
        }
        if self.rate == 0.0 && self.patterns.iter().any(|p| p.counts_loss()) {
            return Err(invalid(
                "--rate",
                "feed and job patterns need a publish (submit) rate above 0".into(),
            ));
        }
        if self.rate == 0.0 && self.patterns.iter().any(|p| p.kind() == Kind::Request) {
            self.closed_loop = true;
        }
        if self.drain.is_zero() {
            // Long enough for a short poller to come round once more, and for a long poll to return.
            self.drain = (self.interval * 2).max(Duration::from_secs(2));
        }
        Ok(self)
    }

    /// A profile describes someone else's server: each pattern must be in it, and the embedded
    /// servers' options do not apply.
    fn check_profile(&self, profile: &Profile) -> Result<(), ScenarioError> {
        let invalid = |origin: &str, detail: String| ScenarioError::Invalid {
            origin: origin.to_owned(),
            detail,
        };
        if self.bus.is_broker() || self.instances > 1 {
            return Err(invalid(
                "--profile",
                "--instances, --bus and --bus-url start commbench's own servers; a profile's \
                 server runs its own bus"
                    .into(),
            ));
        }
        if self.target.is_none() {
            if let Some(missing) = profile.missing() {
                return Err(invalid(
                    "--profile",
                    format!(
                        "{}: its server cannot start here: {missing}",
                        profile.source
                    ),
                ));
            }
        }
        if let Some(missing) = self.patterns.iter().find(|p| profile.spec(**p).is_none()) {
            return Err(invalid(
                "--pattern",
                format!(
                    "{missing} is not described by the target profile {} (it describes {})",
                    profile.source,
                    profile.pattern_names()
                ),
            ));
        }
        Ok(())
    }

    /// True when `pattern`'s clients follow the profile (else commbench's own clients run).
    pub fn profiled(&self, pattern: Pattern) -> bool {
        self.profile
            .as_ref()
            .is_some_and(|p| p.spec(pattern).is_some())
    }

    /// Which server `pattern`'s cell measures: `commbench` (the embedded server), the profile's
    /// name, or `external` (`--target` with commbench's clients, or the generic patterns).
    pub fn target_name(&self, pattern: Pattern) -> String {
        match &self.profile {
            Some(profile) if self.profiled(pattern) => profile.name.clone(),
            _ if self.target.is_some() => "external".to_owned(),
            _ => "commbench".to_owned(),
        }
    }

    /// True when events are published in `pattern`'s cells: a feed pattern on commbench's server,
    /// or on a profile's server when the profile says how to publish.
    pub fn publishes(&self, pattern: Pattern) -> bool {
        pattern.uses_feed()
            && (!self.profiled(pattern)
                || self.profile.as_ref().is_some_and(|p| p.publish.is_some()))
    }

    /// Seconds in the measured window.
    pub fn measured_secs(&self) -> f64 {
        self.duration.as_secs_f64()
    }
}

struct Validator<'a> {
    raw: &'a RawScenario,
}

impl Validator<'_> {
    fn field<T>(
        &self,
        name: &'static str,
        default: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ScenarioError> {
        match self.raw.get(name) {
            Some(value) => parse(&value.text).map_err(|detail| ScenarioError::Invalid {
                origin: value.origin.clone(),
                detail,
            }),
            None => parse(default).map_err(|detail| ScenarioError::Invalid {
                origin: format!("default for {name}"),
                detail,
            }),
        }
    }

    fn optional<T>(
        &self,
        name: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ScenarioError> {
        self.raw
            .get(name)
            .map(|value| {
                parse(&value.text).map_err(|detail| ScenarioError::Invalid {
                    origin: value.origin.clone(),
                    detail,
                })
            })
            .transpose()
    }
}

/// A TOML scalar as the text the flag parsers read.
fn scalar_text(value: toml::Value, origin: &str) -> Result<String, ScenarioError> {
    match value {
        toml::Value::String(s) => Ok(s),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(ScenarioError::Invalid {
            origin: origin.to_owned(),
            detail: format!(
                "expected a string, number or boolean, found a {}",
                other.type_str()
            ),
        }),
    }
}

fn count(text: &str, min: u64, max: u64) -> Result<u64, String> {
    commbench_servers::units::in_range(parse_count(text)?, min, max)
}

fn bytes(text: &str, min: u64, max: u64) -> Result<u64, String> {
    commbench_servers::units::in_range(parse_bytes(text)?, min, max)
}

fn rate(text: &str, min: f64, max: f64) -> Result<f64, String> {
    let value: f64 = match parse_count(text) {
        Ok(n) => n as f64,
        Err(_) => text.trim().parse().map_err(|_| {
            format!("`{text}` is not a rate (events per second, e.g. 50, 2.5, 10k)")
        })?,
    };
    if !value.is_finite() || value < min || value > max {
        return Err(format!("{value} is out of range (allowed {min}..={max})"));
    }
    Ok(value)
}

fn duration(text: &str, min_s: f64, max_s: f64) -> Result<Duration, String> {
    let value = parse_duration(text)?;
    let secs = value.as_secs_f64();
    if secs < min_s || secs > max_s {
        return Err(format!(
            "{value:?} is out of range (allowed {min_s}s..={max_s}s)"
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let s = RawScenario::default().validate().unwrap();
        assert_eq!(s.patterns, vec![Pattern::Sse]);
        assert_eq!(s.clients, 100);
        assert_eq!(s.drain, Duration::from_secs(2));
    }

    #[test]
    fn scale_out_needs_a_broker_and_no_target() {
        let with = |pairs: &[(&'static str, &str)]| {
            let mut raw = RawScenario::default();
            for (field, value) in pairs {
                raw.set_flag(field, *value);
            }
            raw.validate()
        };
        let s = with(&[("instances", "3"), ("bus", "redis")]).unwrap();
        assert_eq!((s.instances, s.bus, s.bus_url), (3, BusKind::Redis, None));
        let s = with(&[("bus_url", "redis://127.0.0.1:6379")]).unwrap();
        assert_eq!(s.bus, BusKind::Redis);
        let err = with(&[("instances", "2")]).unwrap_err().to_string();
        assert!(
            err.contains("--instances") && err.contains("--bus redis"),
            "{err}"
        );
        let err = with(&[("instances", "17"), ("bus", "redis")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("1..=16"), "{err}");
        let err = with(&[("bus", "zeromq")]).unwrap_err().to_string();
        assert!(
            err.contains("--bus") && err.contains("rabbitmq or kafka"),
            "{err}"
        );
        let err = with(&[("bus_url", "http://x:1")]).unwrap_err().to_string();
        assert!(
            err.contains("--bus-url") && err.contains("redis://") && err.contains("amqp://"),
            "{err}"
        );
        // The URL's scheme names the broker; a --bus that names another is a mistake.
        let s = with(&[("instances", "2"), ("bus_url", "amqp://127.0.0.1:5672")]).unwrap();
        assert_eq!(s.bus, BusKind::RabbitMq);
        let s = with(&[("bus", "kafka"), ("bus_url", "kafka://127.0.0.1:9092")]).unwrap();
        assert_eq!(s.bus, BusKind::Kafka);
        let err = with(&[("bus", "redis"), ("bus_url", "kafka://127.0.0.1:9092")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("kafka URL but --bus is redis"), "{err}");
        let s = with(&[("instances", "2"), ("bus", "rabbitmq")]).unwrap();
        assert_eq!((s.bus, s.bus_url), (BusKind::RabbitMq, None));
        let err = with(&[("bus", "redis"), ("target", "http://127.0.0.1:1")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--target"), "{err}");
    }

    #[test]
    fn flags_override_file_and_units_work() {
        let file = RawScenario::from_toml(
            "patterns = [\"sse\", \"ws\"]\nclients = \"10k\"\nduration = \"30s\"\nrate = 5",
            "s.toml",
        )
        .unwrap();
        let mut flags = RawScenario::default();
        flags.set_flag("clients", "2k");
        let s = file.merge(flags).validate().unwrap();
        assert_eq!(s.patterns, vec![Pattern::Sse, Pattern::Ws]);
        assert_eq!(s.clients, 2_000);
        assert_eq!(s.duration, Duration::from_secs(30));
        assert_eq!(s.rate, 5.0);
    }

    #[test]
    fn bad_file_field_is_named() {
        let raw = RawScenario::from_toml("clients = 0", "bad.toml").unwrap();
        let err = raw.validate().unwrap_err().to_string();
        assert!(
            err.contains("bad.toml: field `clients`") && err.contains("1..=200000"),
            "{err}"
        );
        let err = RawScenario::from_toml("clientz = 5", "bad.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `clientz`"), "{err}");
        let err = RawScenario::from_toml("clients = [", "bad.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid TOML"), "{err}");
    }

    #[test]
    fn bad_flag_is_named() {
        let mut flags = RawScenario::default();
        flags.set_flag("duration", "forever");
        let err = flags.validate().unwrap_err().to_string();
        assert!(err.starts_with("--duration:"), "{err}");
        let mut flags = RawScenario::default();
        flags.set_flag("patterns", "sse,carrier-pigeon");
        let err = flags.validate().unwrap_err().to_string();
        assert!(
            err.contains("carrier-pigeon") && err.contains("long-poll"),
            "{err}"
        );
    }

    #[test]
    fn graphql_patterns_have_names_and_aliases() {
        for (text, pattern) in [
            ("graphql-poll", Pattern::GraphqlPoll),
            ("GQL_POLL", Pattern::GraphqlPoll),
            ("graphql-sub", Pattern::GraphqlSub),
            ("graphql-subscription", Pattern::GraphqlSub),
        ] {
            assert_eq!(text.parse::<Pattern>(), Ok(pattern), "{text}");
        }
        let poll = Pattern::GraphqlPoll;
        assert_eq!(poll.as_str().parse::<Pattern>(), Ok(poll));
        assert!(poll.uses_feed() && poll.polls_on_interval() && !poll.is_generic());
        let sub = Pattern::GraphqlSub;
        assert!(sub.uses_feed() && !sub.polls_on_interval());
        assert_eq!(
            serde_json::to_value(sub).unwrap(),
            serde_json::json!("graphql-sub")
        );
    }

    #[test]
    fn procs_are_counted_from_one_and_scenarios_cross_processes() {
        let mut flags = RawScenario::default();
        flags.set_flag("procs", "0");
        let err = flags.validate().unwrap_err().to_string();
        assert!(err.contains("--procs") && err.contains("1..=256"), "{err}");
        flags.set_flag("procs", "6");
        flags.set_flag("duration", "1.5s");
        let s = flags.validate().unwrap();
        assert_eq!(s.procs, Some(6));
        let back: Scenario = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!((back.procs, back.duration), (Some(6), s.duration));
        assert_eq!(RawScenario::default().validate().unwrap().procs, None);
    }

    #[test]
    fn generic_patterns_need_a_target() {
        let mut flags = RawScenario::default();
        flags.set_flag("patterns", "ws-url");
        assert!(flags
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--target"));
        flags.set_flag("target", "https://example.com");
        assert!(flags.validate().unwrap_err().to_string().contains("TLS"));
    }
}
