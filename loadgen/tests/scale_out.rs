//! `commbench run --instances N --bus redis`: the binary starts its own redis-server and N server
//! instances, balances clients over them, and reports cross-instance delivery and Redis's own cost.
#![allow(clippy::unwrap_used)]

mod common;

use common::{commbench, summary_rows as rows};

#[test]
fn three_instances_on_redis_deliver_every_event_once_across_instances() {
    let dir = std::env::temp_dir().join(format!("commbench-scale-out-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = commbench()
        .args(["run", "--quiet", "--instances", "3", "--bus", "redis"])
        .args([
            "-p",
            "sse,ws,long-poll,short-poll,job-sse",
            "-c",
            "30",
            "-r",
            "20",
        ])
        .args(["-d", "2s", "--warmup", "500ms", "--interval", "250ms"])
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rows = rows(&dir);
    assert_eq!(rows.len(), 5, "{rows:?}");
    for row in &rows {
        let cell = &row.cell;
        assert_eq!((row.bus.as_str(), row.instances), ("redis", 3), "{cell}");
        assert!(cell.ends_with("-redis-x3"), "{cell}");
        assert_eq!(row.events_lost, Some(0), "{cell}: {row:?}");
        assert_eq!(row.events_duplicated, Some(0), "{cell}: {row:?}");
        assert!(row.events_expected.unwrap() > 0, "{cell}");
        assert_eq!(row.events_delivered, row.events_expected, "{cell}");
        assert_eq!(row.errors, 0, "{cell}: {}", row.error_kinds);
        // Two of every three clients sit on an instance the events were not published through
        // (job users hear their own topic from whichever instance's worker finished the job).
        if !row.pattern.is_job() {
            assert!(row.cross_instance_p99_ms.is_some(), "{cell}");
        }
        assert!(
            row.broker_cpu_s.unwrap() > 0.0,
            "{cell}: Redis CPU not read"
        );
        assert!(row.broker_peak_rss_bytes.unwrap() > 1 << 20, "{cell}");
        assert!(row.server_cpu_s.is_some(), "{cell}");
    }
    // Re-rendering reads the new columns back and writes the comparison section.
    let out = commbench().arg("report").arg(&dir).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn several_instances_without_redis_is_a_clear_error() {
    let out = commbench()
        .args(["run", "--quiet", "--instances", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--instances") && stderr.contains("--bus redis"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_bus_url_is_named() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for scheme in ["redis", "amqp", "kafka"] {
        let url = format!("{scheme}://127.0.0.1:{port}");
        let out = commbench()
            .args(["run", "--quiet", "-d", "1s", "--instances", "2"])
            .args(["--bus-url", &url])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&url) && stderr.contains("does not answer"),
            "{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_against_an_existing_redis_leave_it_as_they_found_it() {
    use commbench_servers::redis::server::{RedisOptions, RedisServer};
    let redis = RedisServer::start(RedisOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("commbench-bus-url-{}", std::process::id()));
    // Twice, with a topic limit the first run's topics would exhaust if they stayed claimed.
    for _ in 0..2 {
        let _ = std::fs::remove_dir_all(&dir);
        let out = commbench()
            .args([
                "run",
                "--quiet",
                "--instances",
                "2",
                "--bus-url",
                redis.url(),
            ])
            .args(["-p", "sse,job-ws", "-c", "10", "-r", "20", "-d", "1s"])
            .args(["--warmup", "200ms", "--server-arg=--max-topics=12"])
            .arg("--out")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for row in rows(&dir) {
            assert_eq!(row.events_lost, Some(0), "{}", row.cell);
            assert_eq!(row.errors, 0, "{}: {}", row.cell, row.error_kinds);
            // Someone else's Redis: not ours to measure.
            assert_eq!(row.broker_cpu_s, None);
        }
    }
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("cb:*")
        .query_async(&mut connection)
        .await
        .unwrap();
    // Only job hashes remain, and they expire on their own, and the data epoch every instance on
    // this Redis shares (one key; removing it would look like a loss of Redis's data to them).
    assert!(
        keys.iter().all(|k| k.contains(":job:") || k == "cb:epoch"),
        "left behind: {keys:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
