//! The outcome of one run cell (one pattern at one parameter setting), as handed to the output
//! writers. Everything a report needs is here or in the files written from it.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{
    pin::CpuList,
    procs::pool::{LostWorker, WorkerUsage},
    record::{CounterSnapshot, Metric},
    {pattern::Pattern, scenario::BusKind},
};

/// The parameters that identify a cell.
#[derive(Debug, Clone, Serialize)]
pub struct CellSpec {
    pub pattern: Pattern,
    pub clients: usize,
    /// Target publish (or request) rate per second; 0 for closed loop.
    pub rate: f64,
    pub payload: usize,
    /// Short-poll / poll-url interval in seconds; 0 where not applicable.
    pub interval_s: f64,
    pub topics: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub bus: BusKind,
    /// Server instances the clients were spread over.
    pub instances: usize,
    /// Which server the cell measured: `commbench` (the embedded server), a target profile's
    /// name (`node`), or `external` (a bare `--target`).
    pub target: String,
}

/// The target name of commbench's own (embedded) server.
pub const COMMBENCH: &str = "commbench";

impl CellSpec {
    /// A file-name-safe, unique name: `sse-c1000-r50-p128` (`-i1s` for pollers, `-node` for a
    /// profile's server).
    pub fn name(&self) -> String {
        let mut name = format!(
            "{}-c{}-r{}-p{}",
            self.pattern,
            self.clients,
            trim_float(self.rate),
            self.payload
        );
        if self.interval_s > 0.0 {
            name.push_str(&format!("-i{}s", trim_float(self.interval_s)));
        }
        if self.bus != BusKind::Memory {
            name.push_str(&format!("-{}-x{}", self.bus, self.instances));
        }
        if self.target != COMMBENCH && self.target != "external" {
            name.push_str(&format!("-{}", self.target));
        }
        name
    }
}

fn trim_float(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// CPU and memory of one process over the measured window.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ProcessUsage {
    /// User + system CPU seconds used in the window.
    pub cpu_s: f64,
    /// Highest resident set size seen, in bytes.
    pub peak_rss_bytes: u64,
    /// Seconds its threads waited, runnable, for a CPU in the window (0 where not read).
    pub wait_s: f64,
}

/// One measured cell.
#[derive(Debug, Clone)]
pub struct CellResult {
    pub spec: CellSpec,
    /// False when the run was interrupted (Ctrl-C) or stopped on errors.
    pub complete: bool,
    /// Seconds actually measured (shorter than `spec.duration_s` when interrupted).
    pub measured_s: f64,
    /// Counters over the measured window (traffic) and the subscription lifetime (loss accounting).
    pub counters: CounterSnapshot,
    pub errors: BTreeMap<String, u64>,
    /// Whole-run histograms (µs), warm-up excluded. Only metrics with samples are present.
    pub histograms: BTreeMap<Metric, Histogram<u64>>,
    /// `None` for an external target (its process is not ours to measure); with several instances,
    /// their CPU and peak memory added up.
    pub server: Option<ProcessUsage>,
    /// The Redis the load generator started (`None` for the in-process bus or `--bus-url`).
    pub broker: Option<ProcessUsage>,
    pub loadgen: ProcessUsage,
    /// Events published per second in the window (or requests per second for request-response).
    pub achieved_rate: f64,
    /// 99th percentile of the load generator's own scheduling delay (µs): how late its timers fire.
    pub loadgen_lag_p99_us: u64,
    /// Figures that would mislead, each with why (empty when fine): the cell is flagged.
    pub warnings: Vec<String>,
    /// What a reader should know that does not make a figure wrong (not a flag).
    pub notes: Vec<String>,
    pub placement: CellPlacement,
}

/// Where a cell's processes ran.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CellPlacement {
    /// Processes that hosted the clients (1: the runner's own process).
    pub procs: usize,
    pub server_cpus: Option<CpuList>,
    pub broker_cpus: Option<CpuList>,
    pub loadgen_cpus: Option<CpuList>,
    /// CPUs the load generator could use: its set, or every CPU when unpinned.
    pub loadgen_cpu_count: usize,
    /// True when the servers and the load generator ran on disjoint CPU sets.
    pub separated: bool,
    /// Share of the window the load generator's CPU set was busy, by anyone (when pinned).
    pub loadgen_set_busy: Option<f64>,
    /// Estimated clock error between the coordinator and its agents (µs); distributed runs only.
    pub clock_error_us: Option<f64>,
    /// Each load worker's share and cost (empty when the runner hosted the clients itself).
    pub workers: Vec<WorkerUsage>,
    /// Workers lost mid-run.
    pub lost: Vec<LostWorker>,
}

/// Facts about the run as a whole, written to `run.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub run_id: String,
    pub started_unix_s: u64,
    pub complete: bool,
    pub commbench_version: String,
    pub git_commit: Option<String>,
    pub cpu_model: Option<String>,
    pub cpus: usize,
    pub kernel: Option<String>,
    pub rustc: Option<String>,
    pub target: String,
    pub scenario: serde_json::Value,
    pub cells: Vec<String>,
    /// What the run left out and why (a peer that cannot start here, a cell whose target could
    /// not be reached); the report lists them.
    pub notes: Vec<String>,
    /// The CPU sets of the servers, the broker and the load generator.
    pub cpu_sets: crate::pin::CpuPlan,
    /// Their scheduling class.
    pub scheduling: crate::priority::Scheduling,
    /// Per cell: how many processes hosted its clients and what each used.
    pub placement: std::collections::BTreeMap<String, CellPlacement>,
}
