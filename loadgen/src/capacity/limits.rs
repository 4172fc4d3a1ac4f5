//! What bounds a capacity besides the goal: the load generator (is it the bottleneck?), the
//! server's CPU, and — checked before a step, so a search never fails half-way through a ramp — open
//! files and memory.

use crate::{
    health::{self, FlagKind},
    procstat,
    result::CellResult,
};

/// Descriptors a cell needs besides one per client: the publisher, monitors, the runtime, the
/// server's own listener and pipes.
const FD_OVERHEAD: u64 = 256;

/// Share of `MemAvailable` a step may be projected to take.
const MEMORY_SHARE: f64 = 0.8;

/// Share of its CPU budget at which the server counts as saturated.
const SERVER_SATURATED: f64 = 0.9;

/// Whether the load generator may have been the bottleneck: the first flag of `health.rs` that
/// blames the harness (not errors or missing clients, which a search judges by themselves, nor
/// CPUs shared with a server that used more of them). The one place capacity asks.
///
/// Latencies are measured from intended send times, so a late, saturated or short-of-rate load
/// generator can only add its own delay to them: a goal met despite such a warning was met, and a
/// goal missed with one may be the load generator's doing.
pub fn loadgen_bottleneck(cell: &CellResult) -> Option<String> {
    let server_led = server_cores(cell).is_some_and(|server| server >= loadgen_cores(cell));
    cell.warnings
        .iter()
        .find(|flag| match health::kind_of(flag) {
            FlagKind::Harness => true,
            FlagKind::SharedCpus => !server_led,
            FlagKind::MissingClients | FlagKind::Errors => false,
        })
        .cloned()
}

/// Server CPU seconds per second over the window (all instances together).
pub fn server_cores(cell: &CellResult) -> Option<f64> {
    cell.server
        .map(|server| server.cpu_s / cell.measured_s.max(1e-9))
}

fn loadgen_cores(cell: &CellResult) -> f64 {
    cell.loadgen.cpu_s / cell.measured_s.max(1e-9)
}

/// The cores the server may use: its CPU set's when it was pinned, else every core of the machine.
pub fn server_core_budget(cell: &CellResult) -> f64 {
    match &cell.placement.server_cpus {
        Some(set) => set.len().max(1) as f64,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
    }
}

/// Whether the server's CPU was the limit: it used nearly all the cores it may use, or it shared
/// the machine's CPUs with the load generator, they were saturated, and the server used more.
pub fn server_cpu_saturated(cell: &CellResult) -> Option<String> {
    let server = server_cores(cell)?;
    let budget = server_core_budget(cell);
    let machine_full = cell
        .warnings
        .iter()
        .any(|flag| health::kind_of(flag) == FlagKind::SharedCpus);
    let loadgen = loadgen_cores(cell);
    if server >= budget * SERVER_SATURATED {
        Some(format!(
            "server CPU saturated: {server:.2} of {budget} cores"
        ))
    } else if machine_full && server >= loadgen {
        Some(format!(
            "server CPU saturated: {server:.2} cores while the load generator used {loadgen:.2} \
             of the machine's {budget}"
        ))
    } else {
        None
    }
}

/// The most clients this process can open sockets for, after the open-file limit and what is
/// already open; `None` when the limit cannot be read. (The embedded server raises its own limit to
/// the same hard limit and holds one socket per client, so the load generator's budget is the tighter.)
pub fn fd_client_budget() -> Option<u64> {
    let (soft, _hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).ok()?;
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(soft.saturating_sub(open).saturating_sub(FD_OVERHEAD))
}

/// The text of a step refused for descriptors.
pub fn fd_limit_detail(clients: u64, budget: u64) -> String {
    format!(
        "{clients} clients need about {} open files; the limit leaves room for {budget} clients \
         (raise `ulimit -n`)",
        clients + FD_OVERHEAD
    )
}

/// Memory one step used: the varied value, and the server's and the load generator's peak RSS.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryPoint {
    pub value: u64,
    pub bytes: f64,
}

impl MemoryPoint {
    pub fn of(value: u64, cell: &CellResult) -> Self {
        let server = cell.server.map_or(0, |s| s.peak_rss_bytes);
        Self {
            value,
            bytes: (server + cell.loadgen.peak_rss_bytes) as f64,
        }
    }
}

/// The largest value whose memory, extrapolated along the line through the two largest steps
/// measured, fits in `available` bytes (plus what the load generator already holds, which it
/// keeps); `None` when fewer than two steps give a growing line.
pub fn memory_allowed(points: &[MemoryPoint], available: f64, held_now: f64) -> Option<u64> {
    let mut sorted: Vec<MemoryPoint> = points.to_vec();
    sorted.sort_by_key(|p| p.value);
    sorted.dedup_by_key(|p| p.value);
    let [.., low, high] = sorted.as_slice() else {
        return None;
    };
    let slope = (high.bytes - low.bytes) / (high.value - low.value) as f64;
    if slope.is_nan() || slope <= 0.0 {
        return None;
    }
    let room = available * MEMORY_SHARE + held_now - high.bytes;
    Some((high.value as f64 + room / slope).max(0.0) as u64)
}

/// `MemAvailable` from `/proc/meminfo`, bytes.
pub fn memory_available() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// The load generator's resident memory now, bytes.
pub fn loadgen_rss() -> f64 {
    procstat::rss_bytes(std::process::id()).unwrap_or(0) as f64
}

/// The text of a step refused for memory.
pub fn memory_detail(value: u64, allowed: u64, available: f64) -> String {
    format!(
        "{value} would need more memory than the {:.0} MiB available (the steps so far project at \
         most {allowed})",
        available / 1_048_576.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        health, output::test_util::sample_cell, pattern::Pattern, result::ProcessUsage,
        scenario::RawScenario,
    };

    /// A cell whose warnings are what `health.rs` says about it, `missing` clients short.
    fn with_health(cell: &mut CellResult, missing: usize) {
        let ready = cell.spec.clients - missing;
        let mut raw = RawScenario::default();
        raw.set_flag("clients", cell.spec.clients.to_string());
        let scenario = raw.validate().unwrap();
        cell.warnings = health::assess(cell, &scenario, ready).flags;
    }

    fn quiet_cell() -> CellResult {
        let mut cell = sample_cell(Pattern::Sse, true);
        cell.loadgen.cpu_s = 0.1;
        cell.server = Some(ProcessUsage {
            cpu_s: 0.1,
            peak_rss_bytes: 1 << 20,
            wait_s: 0.0,
        });
        cell.counters.errors = 0;
        cell
    }

    /// Every delivery took `ms`.
    fn delivered_in(cell: &mut CellResult, ms: u64) {
        let mut h = crate::record::new_histogram();
        h.record(ms * 1_000).unwrap();
        cell.histograms.insert(crate::record::Metric::Delivery, h);
    }

    #[test]
    fn a_healthy_cell_has_no_bottleneck() {
        let mut cell = quiet_cell();
        with_health(&mut cell, 0);
        assert_eq!(loadgen_bottleneck(&cell), None);
        assert_eq!(server_cpu_saturated(&cell), None);
    }

    #[test]
    fn the_harness_warnings_name_the_load_generator() {
        let mut cell = quiet_cell();
        delivered_in(&mut cell, 50);
        cell.loadgen_lag_p99_us = 40_000;
        with_health(&mut cell, 0);
        let found = loadgen_bottleneck(&cell).unwrap();
        assert!(found.contains("to run what woke it"), "{found}");

        let mut cell = quiet_cell();
        cell.achieved_rate = 10.0;
        with_health(&mut cell, 0);
        assert!(loadgen_bottleneck(&cell)
            .unwrap()
            .starts_with("the rate: achieved"));

        let mut cell = quiet_cell();
        cell.loadgen.cpu_s = cell.measured_s * server_core_budget(&cell);
        with_health(&mut cell, 0);
        let found = loadgen_bottleneck(&cell).unwrap();
        assert!(found.contains("load generator was saturated"), "{found}");
    }

    #[test]
    fn errors_and_missing_clients_are_not_the_harness() {
        let mut cell = quiet_cell();
        // More than one error in a thousand operations: a flag, not a note.
        cell.counters.errors = 3_000;
        with_health(&mut cell, 5);
        assert!(cell.warnings.len() == 2, "{:?}", cell.warnings);
        assert_eq!(loadgen_bottleneck(&cell), None);
    }

    #[test]
    fn a_machine_saturated_by_the_server_is_the_servers_cpu() {
        let mut cell = quiet_cell();
        let cores = server_core_budget(&cell);
        // Unpinned, both may use every CPU.
        cell.placement.loadgen_cpu_count = cores as usize;
        // The server takes most of the machine, the load generator a little: the machine is full.
        cell.server.as_mut().unwrap().cpu_s = cell.measured_s * cores * 0.8;
        cell.loadgen.cpu_s = cell.measured_s * cores * 0.15;
        with_health(&mut cell, 0);
        assert!(cell
            .warnings
            .iter()
            .any(|w| health::kind_of(w) == FlagKind::SharedCpus));
        assert_eq!(loadgen_bottleneck(&cell), None);
        assert!(server_cpu_saturated(&cell)
            .unwrap()
            .contains("server CPU saturated"));
        // The other way round, the load generator is the bottleneck.
        cell.server.as_mut().unwrap().cpu_s = cell.measured_s * cores * 0.15;
        cell.loadgen.cpu_s = cell.measured_s * cores * 0.8;
        with_health(&mut cell, 0);
        assert!(loadgen_bottleneck(&cell).is_some());
        assert_eq!(server_cpu_saturated(&cell), None);
    }

    #[test]
    fn a_pinned_server_is_held_to_its_cpu_set() {
        let mut cell = quiet_cell();
        cell.placement.server_cpus = Some("1".parse().unwrap());
        cell.placement.loadgen_cpus = Some("0".parse().unwrap());
        cell.placement.separated = true;
        assert_eq!(server_core_budget(&cell), 1.0);
        cell.server.as_mut().unwrap().cpu_s = cell.measured_s * 0.95;
        with_health(&mut cell, 0);
        let found = server_cpu_saturated(&cell).unwrap();
        assert!(found.contains("0.95 of 1 cores"), "{found}");
        cell.placement.server_cpus = Some("1-3".parse().unwrap());
        assert_eq!(server_core_budget(&cell), 3.0);
        assert_eq!(server_cpu_saturated(&cell), None);
    }

    #[test]
    fn memory_is_extrapolated_from_the_two_largest_steps() {
        let points = [
            MemoryPoint {
                value: 100,
                bytes: 50e6,
            },
            MemoryPoint {
                value: 200,
                bytes: 60e6,
            },
            MemoryPoint {
                value: 400,
                bytes: 80e6,
            },
        ];
        // 100 kB per client above 400: 1 GB available × 0.8 leaves room for 720 MB more.
        let allowed = memory_allowed(&points, 1e9, 0.0).unwrap();
        assert_eq!(allowed, 400 + 7_200);
        // What the load generator already holds is not needed twice.
        assert!(memory_allowed(&points, 1e9, 40e6).unwrap() > allowed);
        assert_eq!(memory_allowed(&points[..1], 1e9, 0.0), None);
        let flat = [
            MemoryPoint {
                value: 100,
                bytes: 50e6,
            },
            MemoryPoint {
                value: 200,
                bytes: 50e6,
            },
        ];
        assert_eq!(memory_allowed(&flat, 1e9, 0.0), None);
    }

    #[test]
    fn the_descriptor_budget_is_below_the_limit() {
        let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        let budget = fd_client_budget().unwrap();
        assert!(budget < soft);
        assert!(fd_limit_detail(30_000, budget).contains("ulimit -n"));
    }
}
