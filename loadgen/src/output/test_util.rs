//! Shared test fixtures: a plausible measured cell and unique temporary paths.

use std::{collections::BTreeMap, path::PathBuf};

use crate::{
    capacity::judge::Constraint,
    output::CapacityRow,
    record::{new_histogram, CounterSnapshot, Metric},
    result::{CellResult, CellSpec, ProcessUsage},
    {pattern::Pattern, scenario::BusKind},
};

/// A unique path under the system temp directory; the test removes it.
pub fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("commbench-test-{}-{}", std::process::id(), name))
}

/// A cell whose headline histogram holds the values 1..=1000 ms (one sample each).
pub fn sample_cell(pattern: Pattern, complete: bool) -> CellResult {
    let mut latency = new_histogram();
    for ms in 1..=1000 {
        latency.record(ms * 1000).unwrap();
    }
    let mut connect = new_histogram();
    connect.record(2_500).unwrap();
    let headline = if pattern == Pattern::RequestResponse {
        Metric::RoundTrip
    } else {
        Metric::Delivery
    };
    let histograms = BTreeMap::from([(headline, latency), (Metric::Connect, connect)]);
    CellResult {
        spec: CellSpec {
            pattern,
            clients: 1000,
            rate: 50.0,
            payload: 128,
            interval_s: 0.0,
            topics: 1,
            duration_s: 30.0,
            warmup_s: 5.0,
            bus: BusKind::Memory,
            instances: 1,
            target: crate::result::COMMBENCH.to_owned(),
        },
        complete,
        measured_s: 30.0,
        counters: CounterSnapshot {
            events_received: 1_500_000,
            requests: 3_000,
            events_delivered: 1_500_000,
            events_expected: 1_500_010,
            events_lost: 10,
            bytes_up: 1_000_000,
            bytes_down: 300_000_000,
            connections_opened: 1000,
            connections_peak: 1000,
            published: 1500,
            errors: 2,
            ..Default::default()
        },
        errors: BTreeMap::from([("connect_refused".to_owned(), 2)]),
        histograms,
        server: Some(ProcessUsage {
            cpu_s: 3.0,
            peak_rss_bytes: 64 << 20,
            wait_s: 0.0,
        }),
        broker: None,
        loadgen: ProcessUsage {
            cpu_s: 10.0,
            peak_rss_bytes: 128 << 20,
            wait_s: 0.0,
        },
        achieved_rate: 50.0,
        loadgen_lag_p99_us: 800,
        warnings: vec!["load generator saturated: it used 95% of all 2 cores".to_owned()],
        notes: Vec::new(),
        placement: Default::default(),
    }
}

/// A plausible row: `capacity` clients of `pattern` per `cores` server cores.
pub fn capacity_row(
    pattern: Pattern,
    interval_s: Option<f64>,
    capacity: u64,
    cores: f64,
) -> CapacityRow {
    CapacityRow {
        run_id: "r".into(),
        pattern,
        interval_s,
        vary: "clients".into(),
        slo: "p99<100ms".into(),
        slo_metric: "delivery".into(),
        capacity,
        constraint: Constraint::Slo,
        constraint_detail: "delivery p99 130 ms ≥ 100 ms".into(),
        first_failing: Some(capacity + capacity / 10),
        cell: Some(format!("{pattern}-c{capacity}-r50-p128")),
        clients: Some(capacity),
        rate_per_s: Some(50.0),
        p50_ms: Some(3.0),
        p99_ms: Some(42.0),
        max_ms: Some(80.0),
        server_cores: Some(cores),
        capacity_per_core: Some(capacity as f64 / cores),
        server_cpu_us_per_event: Some(20.0),
        bytes_per_event: Some(180.0),
        server_peak_rss_bytes: Some(64 << 20),
        steps_run: 6,
        steps: "100 ok; 200 ok".into(),
    }
}
