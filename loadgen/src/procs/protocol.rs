//! What the runner and its load workers say to each other, one JSON message per line (pipes) or
//! per list entry (Redis): commands down, reports up. Histograms travel in hdrhistogram's V2
//! serialization (base64), so the runner merges them exactly.

use std::{collections::BTreeMap, collections::HashMap, net::Ipv4Addr, path::Path};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use hdrhistogram::{
    serialization::{Deserializer, Serializer as _, V2Serializer},
    Histogram,
};
use serde::{Deserialize, Serialize};

use crate::{
    pattern::Pattern,
    pin::CpuList,
    profile::Profile,
    record::{CounterSnapshot, Metric},
    scenario::Scenario,
};

/// Which of a cell's clients one worker hosts: ids `index, index + of, index + 2·of, …`, so each
/// worker's clients spread over topics and instances exactly as in a single process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub index: usize,
    pub of: usize,
}

impl Share {
    pub const WHOLE: Share = Share { index: 0, of: 1 };

    /// The client ids of this share among `clients`.
    pub fn ids(self, clients: usize) -> impl Iterator<Item = usize> {
        (self.index..clients).step_by(self.of.max(1))
    }

    /// How many of `clients` this share hosts.
    pub fn len(self, clients: usize) -> usize {
        self.ids(clients).count()
    }
}

/// Everything a worker needs to host its share of one cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub cell: String,
    pub scenario: Scenario,
    pub pattern: Pattern,
    /// The server instances, as `http://host:port` (client `i` uses `targets[i % len]`).
    pub targets: Vec<String>,
    pub topics: Vec<String>,
    pub queue: String,
    pub share: Share,
    /// The run clock's zero on the worker's `CLOCK_MONOTONIC` (the Redis link converts it from
    /// the coordinator's Redis time before the worker sees it).
    pub origin_ns: u64,
    /// Run-clock instant at which every worker starts its ramp.
    pub ramp_at_ns: u64,
    /// Source address for every client connection (an agent on its own 127.0.0.x); `None`
    /// spreads over 127.0.0.x as a single process would.
    #[serde(default)]
    pub source: Option<Ipv4Addr>,
    /// The CPUs the worker runs on, as pinned (recorded, not applied here).
    #[serde(default)]
    pub cpus: Option<CpuList>,
    /// The target profile the clients follow, when one describes the target.
    #[serde(default)]
    pub profile: Option<WorkerProfile>,
}

/// A target profile as it crosses to a worker: the file's text, checked again there (its
/// `[start]` only matters to the runner, which starts the server), or the ad-hoc profile of
/// `--target`, built again from the scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkerProfile {
    File { source: String, toml: String },
    AdHoc,
}

impl WorkerProfile {
    pub fn of(profile: &Profile) -> Self {
        match &profile.toml {
            Some(toml) => Self::File {
                source: profile.source.clone(),
                toml: toml.clone(),
            },
            None => Self::AdHoc,
        }
    }

    /// The profile again, for `scenario`'s clients.
    pub fn load(&self, scenario: &Scenario) -> Result<Profile, String> {
        match self {
            Self::File { source, toml } => {
                Profile::from_toml(toml, source, Path::new(".")).map_err(|e| e.to_string())
            }
            Self::AdHoc => Profile::ad_hoc(
                scenario.target.as_deref().unwrap_or_default(),
                scenario.ws_message.as_deref(),
            ),
        }
    }
}

/// Runner → worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Host a share of a cell: connect the clients, report them ready.
    Start(Box<WorkerSpec>),
    /// Publishing starts; the measured window is `window_start_ns..window_end_ns` (run clock).
    Run {
        window_start_ns: u64,
        window_end_ns: u64,
    },
    /// Publishing stopped at these heads, after `issued` publishes per topic (what books kept by
    /// stamp close at), of which `unpublished` failed: catch up, close the books, report `Done`.
    Drain {
        final_heads: HashMap<String, u64>,
        #[serde(default)]
        issued: Vec<u64>,
        #[serde(default)]
        unpublished: Vec<crate::ordinals::Ranges>,
    },
    /// No more cells: exit.
    Bye,
    /// The coordinator does not take this agent (Redis link only).
    Refuse { reason: String },
}

/// Worker → runner.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Report {
    /// Ramp progress: clients subscribed and clients that gave up so far.
    Ramp { ready: usize, failed: usize },
    /// Every client of the share has settled.
    Ready { ready: usize, failed: usize },
    /// One collector interval: its histograms and the worker's live counters.
    Interval {
        histograms: Vec<EncodedHistogram>,
        live: CounterSnapshot,
        connections_open: i64,
    },
    /// The share's result; the worker sends nothing more for this cell.
    Done(Box<WorkerOutcome>),
    /// The worker could not host its share (e.g. a target it cannot resolve).
    Failed { error: String },
}

/// Who an agent is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub shard: usize,
    pub of: usize,
    /// Distinguishes this agent process from an earlier one with the same shard.
    pub nonce: String,
    pub host: String,
    pub pid: u32,
    /// Half the shortest round trip of its clock estimate against the coordinator's Redis (ns).
    pub clock_error_ns: u64,
}

/// What a worker measured over its share of the cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerOutcome {
    /// Traffic over the window, loss accounting over each client's subscription.
    pub counters: CounterSnapshot,
    pub errors: BTreeMap<String, u64>,
    /// The worker's own timer lag (µs).
    pub lag: EncodedHistogram,
    pub cpu_s: f64,
    /// Seconds its threads waited, runnable, for a CPU in the window.
    #[serde(default)]
    pub wait_s: f64,
    pub peak_rss_bytes: u64,
    pub ready: usize,
    pub failed: usize,
    pub clients: usize,
}

/// One histogram, V2-serialized and base64-encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedHistogram {
    pub metric: Metric,
    pub v2: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot serialize a histogram: {0}")]
    Serialize(String),
    #[error("a histogram that does not decode: {0}")]
    Deserialize(String),
}

impl EncodedHistogram {
    pub fn encode(metric: Metric, histogram: &Histogram<u64>) -> Result<Self, CodecError> {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(histogram, &mut bytes)
            .map_err(|e| CodecError::Serialize(format!("{e:?}")))?;
        Ok(Self {
            metric,
            v2: STANDARD.encode(bytes),
        })
    }

    pub fn decode(&self) -> Result<Histogram<u64>, CodecError> {
        let bytes = STANDARD
            .decode(&self.v2)
            .map_err(|e| CodecError::Deserialize(e.to_string()))?;
        Deserializer::new()
            .deserialize(&mut &bytes[..])
            .map_err(|e| CodecError::Deserialize(format!("{e:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::new_histogram;

    #[test]
    fn shares_cover_every_client_once() {
        let shares: Vec<Vec<usize>> = (0..3)
            .map(|index| Share { index, of: 3 }.ids(10).collect())
            .collect();
        assert_eq!(shares, [vec![0, 3, 6, 9], vec![1, 4, 7], vec![2, 5, 8]]);
        assert_eq!(Share { index: 1, of: 3 }.len(10), 3);
        assert_eq!(Share::WHOLE.len(10), 10);
    }

    #[test]
    fn histograms_cross_exactly() {
        let mut h = new_histogram();
        for v in [1, 7, 1_000, 12_345, 3_600_000_000] {
            h.record(v).unwrap();
        }
        let encoded = EncodedHistogram::encode(Metric::Delivery, &h).unwrap();
        let back = encoded.decode().unwrap();
        assert_eq!(back, h);
        let json = serde_json::to_string(&Report::Interval {
            histograms: vec![encoded],
            live: CounterSnapshot::default(),
            connections_open: 3,
        })
        .unwrap();
        assert!(json.starts_with("{\"type\":\"interval\""), "{json}");
        let Report::Interval { histograms, .. } = serde_json::from_str(&json).unwrap() else {
            panic!("{json}");
        };
        assert_eq!(histograms[0].decode().unwrap().len(), 5);
        let bad = EncodedHistogram {
            metric: Metric::Delivery,
            v2: "AAAA".into(),
        };
        assert!(bad.decode().is_err());
    }
}
