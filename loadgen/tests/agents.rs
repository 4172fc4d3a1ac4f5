//! Distributed runs: a coordinator and three `commbench agent` processes on their own 127.0.0.x
//! addresses, meeting in a private redis-server, measure what one process measures on the same
//! workload; the merged histograms are exactly the merge of the agents' own; a missing or
//! unreachable coordinator and a bad shard are clear errors.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use commbench_loadgen::{
    output::{read_summary, SummaryRow},
    record::new_histogram,
};
use hdrhistogram::{
    serialization::{
        interval_log::{IntervalLogIterator, LogEntry},
        Deserializer,
    },
    Histogram,
};

use common::{commbench, exit_within, private_redis, succeed, SMALL_WS};

const OPTIONS: [&str; 2] = ["--quiet", "--no-pin"];

/// Every interval of a `.hlog` file added up.
fn hlog_total(path: &Path) -> Histogram<u64> {
    let bytes = std::fs::read(path).unwrap();
    let mut total = new_histogram();
    let mut deserializer = Deserializer::new();
    for entry in IntervalLogIterator::new(&bytes) {
        if let LogEntry::Interval(interval) = entry.unwrap() {
            let raw = STANDARD.decode(interval.encoded_histogram()).unwrap();
            let h: Histogram<u64> = deserializer.deserialize(&mut &raw[..]).unwrap();
            total.add(&h).unwrap();
        }
    }
    total
}

fn summary(dir: &Path) -> SummaryRow {
    read_summary(&dir.join("summary.csv")).unwrap().remove(0)
}

#[test]
fn three_agents_measure_what_one_process_measures() {
    let Some((_runtime, redis)) = private_redis() else {
        return;
    };
    let url = redis.url().to_owned();
    let root = common::temp_dir("agents");
    let agents: Vec<_> = (0..3)
        .map(|i| {
            commbench()
                .args(["agent", "--coordinator", &url, "--run-name", "merge-test"])
                .args(["--shard", &format!("{i}/3"), "--wait", "60s"])
                .args(["--source", &format!("127.0.0.{}", 11 + i)])
                .arg("--out")
                .arg(root.join(format!("agent-{i}")))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let coordinated = root.join("coordinator");
    let coordinator_args = [
        "--agents",
        "3",
        "--coordinator",
        &url,
        "--run-name",
        "merge-test",
    ];
    succeed(
        commbench()
            .arg("run")
            .args(OPTIONS)
            .args(SMALL_WS)
            .args(coordinator_args)
            .arg("--out")
            .arg(&coordinated),
    );
    let started = Instant::now();
    for mut agent in agents {
        let status = exit_within(
            &mut agent,
            started,
            Duration::from_secs(20),
            "agent runs on",
        );
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut agent.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(status.success(), "agent failed: {stderr}");
    }
    let single = root.join("single");
    succeed(
        commbench()
            .arg("run")
            .args(OPTIONS)
            .args(SMALL_WS)
            .args(["--procs", "1", "--out"])
            .arg(&single),
    );

    let (merged, alone) = (summary(&coordinated), summary(&single));
    assert_eq!(merged.loadgen_procs, 3);
    for row in [&merged, &alone] {
        assert!(row.complete, "{row:?}");
        assert_eq!(row.events_published, 40);
        assert_eq!(row.events_expected, Some(500));
        assert_eq!(row.connections_peak, 30);
    }
    assert_eq!(merged.events_published, alone.events_published);
    assert_eq!(merged.events_expected, alone.events_expected);
    assert_eq!(merged.events_delivered, alone.events_delivered);
    assert_eq!(merged.connections_peak, alone.connections_peak);
    assert!(merged.clock_error_ms.is_some_and(|e| e < 5.0), "{merged:?}");

    // The coordinator's histograms are the agents' merged, bucket for bucket.
    let file = format!("{}.delivery.hlog", merged.cell);
    let mut agents_merged = new_histogram();
    for i in 0..3 {
        agents_merged
            .add(hlog_total(&root.join(format!("agent-{i}")).join(&file)))
            .unwrap();
    }
    let coordinator = hlog_total(&coordinated.join(&file));
    assert_eq!(coordinator.len(), 400, "40 events to 10 clients each");
    assert_eq!(coordinator, agents_merged);
    let p99_ms = coordinator.value_at_quantile(0.99) as f64 / 1_000.0;
    assert!(
        (merged.p99_ms.unwrap() - p99_ms).abs() < 0.002,
        "{merged:?}"
    );
    drop(redis);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn an_unreachable_coordinator_or_a_bad_shard_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let started = Instant::now();
    let out = commbench()
        .args(["agent", "--coordinator", &url, "--shard", "0/3"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot reach the coordinator's Redis") && stderr.contains(&url),
        "{stderr}"
    );
    let out = commbench()
        .args(["run", "--agents", "3", "--coordinator", &url])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("cannot reach the coordinator's Redis"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    let out = commbench()
        .args(["agent", "--coordinator", &url, "--shard", "3/3"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--shard 3/3") && stderr.contains("out of range"),
        "{stderr}"
    );
}

#[test]
fn agents_without_a_coordinator_give_up_and_say_so() {
    let Some((_runtime, redis)) = private_redis() else {
        return;
    };
    let out = commbench()
        .args(["agent", "--coordinator", redis.url(), "--shard", "1/2"])
        .args(["--run-name", "nobody", "--wait", "1s"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("no coordinator opened the run `nobody`"),
        "{stderr}"
    );
    // A coordinator whose agents never come names the shards it misses.
    let out = commbench()
        .args(["run", "--agents", "2", "--coordinator", redis.url()])
        .args(["--run-name", "lonely", "--agent-wait", "1s"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("only 0 of 2 agents registered") && stderr.contains("missing shards: 0, 1"),
        "{stderr}"
    );
    drop(redis);
}
