//! Load-worker processes (`--procs`): the merged result equals a single process's on the same
//! workload, a worker killed mid-run is reported lost without hanging the run, the descriptor
//! budget and bad values are refused with the numbers, and a saturated load generator is flagged.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use commbench_loadgen::{
    output::{read_summary, SummaryRow},
    pin::{self, CpuList},
};

use common::{commbench, exit_within, succeed, SMALL_WS};

/// Runs `commbench run` with `args` into `dir` and returns its summary rows.
fn run(dir: &Path, args: &[&str]) -> Vec<SummaryRow> {
    succeed(
        commbench()
            .args(["run", "--quiet", "--out"])
            .arg(dir)
            .args(args),
    );
    read_summary(&dir.join("summary.csv")).unwrap()
}

/// The total count of a `.hgrm` file (`#[Max = …, Total count = N]`).
fn hgrm_count(path: &Path) -> u64 {
    let text = std::fs::read_to_string(path).unwrap();
    let tail = text.split("Total count").nth(1).unwrap();
    let digits: String = tail
        .trim_start_matches([' ', '='])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

#[test]
fn workers_merge_into_what_one_process_measures() {
    let (one, three) = (
        common::temp_dir("procs-one"),
        common::temp_dir("procs-three"),
    );
    let single = &run(&one, &[&SMALL_WS[..], &["--procs", "1"]].concat())[0];
    let merged = &run(&three, &[&SMALL_WS[..], &["--procs", "3"]].concat())[0];
    assert_eq!((single.loadgen_procs, merged.loadgen_procs), (1, 3));
    for row in [single, merged] {
        assert_eq!(row.events_published, 40, "{}", row.cell);
        // Every client subscribed before the first publish: each expects its topic's 50 events.
        assert_eq!(row.events_expected, Some(30 * 50 / 3), "{}", row.cell);
        assert_eq!(row.events_delivered, row.events_expected, "{}", row.cell);
        assert_eq!(row.events_lost, Some(0));
        assert_eq!(row.connections_peak, 30);
        assert!(row.complete);
    }
    // Delivery samples in the window: each of the 40 events reaches the 10 clients of its topic.
    let delivery = |dir: &Path| hgrm_count(&dir.join(format!("{}.delivery.hgrm", merged.cell)));
    assert_eq!(delivery(&one), 400);
    assert_eq!(delivery(&three), delivery(&one));
    let run_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(three.join("run.json")).unwrap()).unwrap();
    let workers = &run_json["placement"][&merged.cell]["workers"];
    assert_eq!(workers.as_array().unwrap().len(), 3, "{workers}");
    assert_eq!(workers[1]["clients"], 10);
    let _ = std::fs::remove_dir_all(&one);
    let _ = std::fs::remove_dir_all(&three);
}

/// The pids of `parent`'s children whose command line has `word`.
fn children_with(parent: u32, word: &str) -> Vec<u32> {
    common::processes()
        .into_iter()
        .filter(|p| p.ppid == parent && p.cmdline.contains(word))
        .map(|p| p.pid)
        .collect()
}

#[test]
fn a_worker_killed_mid_run_is_reported_lost_and_nothing_hangs() {
    let dir = common::temp_dir("procs-killed");
    let mut child = commbench()
        .args([
            "run",
            "--quiet",
            "--pattern",
            "sse",
            "--clients",
            "20",
            "--rate",
            "20",
            "--duration",
            "8s",
            "--warmup",
            "500ms",
            "--procs",
            "2",
            "--out",
        ])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let victim = loop {
        let workers = children_with(child.id(), "load-worker");
        if workers.len() == 2 && started.elapsed() > Duration::from_secs(3) {
            break workers[1];
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no workers");
        std::thread::sleep(Duration::from_millis(100));
    };
    let killed = Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let limit = Duration::from_secs(60);
    let status = exit_within(
        &mut child,
        started,
        limit,
        "the run hangs after losing a worker",
    );
    assert_eq!(status.code(), Some(130), "an incomplete run");
    let rows = read_summary(&dir.join("summary.csv")).unwrap();
    let row = &rows[0];
    assert!(!row.complete);
    assert!(
        row.warnings.contains("was lost mid-run") && row.warnings.contains("10 clients"),
        "{}",
        row.warnings
    );
    // The lost share's events are counted lost; the other share's were delivered.
    let (expected, delivered) = (row.events_expected.unwrap(), row.events_delivered.unwrap());
    assert_eq!(row.events_lost, Some(expected - delivered));
    assert!(
        delivered > 0 && row.events_lost.unwrap() >= 10 * 100,
        "{row:?}"
    );
    let run_json = std::fs::read_to_string(dir.join("run.json")).unwrap();
    assert!(run_json.contains("\"complete\": false"), "{run_json}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_worker_counts_and_budgets_are_refused_with_the_numbers() {
    let refuse = |args: &[&str]| {
        let started = Instant::now();
        let out = commbench().arg("run").args(args).output().unwrap();
        assert!(!out.status.success());
        assert!(started.elapsed() < Duration::from_secs(20));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refuse(&["--procs", "0"]);
    assert!(err.contains("--procs") && err.contains("1..=256"), "{err}");
    let limit = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap().1;
    let too_many = (limit + 1_000).to_string();
    let err = refuse(&[
        "--clients",
        &too_many,
        "--procs",
        "1",
        "--instances",
        "4",
        "--bus",
        "redis",
    ]);
    assert!(
        err.contains(&format!("{too_many} clients"))
            && err.contains(&format!("{limit} per process"))
            && err.contains("--procs 2"),
        "{err}"
    );
    let err = refuse(&["--clients", &too_many, "--procs", "2"]);
    assert!(
        err.contains("server instances") && err.contains("--instances 2"),
        "{err}"
    );
    let err = refuse(&["--server-cpus", "0", "--loadgen-cpus", "0"]);
    assert!(
        err.contains("overlap") || err.contains("not one this process may use"),
        "{err}"
    );
}

#[test]
fn a_saturated_load_generator_is_flagged() {
    let cpus = pin::available().unwrap();
    if cpus.len() < 2 {
        eprintln!("skipped: one CPU, nothing to pin apart");
        return;
    }
    // 50 clients each receiving 200 events/s of 64 KiB on one CPU. On loopback the sender pays
    // for most of a transfer (its send runs the receive path too), so the load generator's own
    // work alone cannot be relied on to outgrow the server's: CPU hogs pinned to the load
    // generator's set make it saturated for sure, as other processes on a crowded box do (the
    // flag must catch both: a set run full, or a load generator waiting for its set). In the
    // ordinary scheduling class, so the hogs share the set with it.
    let loadgen_set: CpuList = cpus.cpus()[0].to_string().parse().unwrap();
    let hogs = Hogs::on(&loadgen_set, 3);
    let flagged = saturated_cells_flag(&cpus);
    drop(hogs);
    if let Err(seen) = flagged {
        panic!("not flagged in 3 tries: {seen:?}");
    }
}

/// Threads that keep a CPU set busy until dropped (also when a test panics).
struct Hogs {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Hogs {
    fn on(set: &CpuList, count: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..count)
            .map(|_| {
                let (set, stop) = (set.clone(), stop.clone());
                std::thread::spawn(move || {
                    pin::pin_self(&set).unwrap();
                    let mut spin = 0u64;
                    while !stop.load(Relaxed) {
                        spin = std::hint::black_box(spin.wrapping_add(1));
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Runs the saturating cell up to three times; `Err` holds what each try said instead.
fn saturated_cells_flag(cpus: &CpuList) -> Result<(), Vec<String>> {
    let mut seen = Vec::new();
    for attempt in 0..3 {
        let dir = common::temp_dir(&format!("saturated-{attempt}"));
        let rows = run(
            &dir,
            &[
                "--pattern",
                "ws",
                "--clients",
                "50",
                "--rate",
                "200",
                "--payload",
                "64KiB",
                "--duration",
                "3s",
                "--warmup",
                "500ms",
                "--max-errors",
                "0",
                "--priority",
                "normal",
            ],
        );
        let _ = std::fs::remove_dir_all(&dir);
        let row = &rows[0];
        assert_eq!(
            row.loadgen_cpus,
            cpus.cpus()[..1]
                .iter()
                .map(ToString::to_string)
                .collect::<String>()
        );
        if row.warnings.contains("the load generator was saturated")
            || row.warnings.contains("the load generator was up to")
        {
            eprintln!("flagged on try {attempt}: {}", row.warnings);
            return Ok(());
        }
        seen.push(format!("{} (notes: {})", row.warnings, row.notes));
    }
    Err(seen)
}
