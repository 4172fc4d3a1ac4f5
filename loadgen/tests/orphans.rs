//! Nothing `commbench run` starts outlives it, even when it is SIGKILLed (a CI timeout, the OOM
//! killer): the private broker (RabbitMQ's VM and its `epmd` too), the embedded server instances,
//! the load workers and a target profile's server all die with it. Each test starts a real run,
//! waits until every process it expects is up, kills the run with SIGKILL mid-window, and checks
//! that every process the run had started is gone within [`GONE_WITHIN`].
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    io::Read,
    process::Stdio,
    time::{Duration, Instant},
};

use commbench_loadgen::{fleet::missing_broker, scenario::BusKind};
use common::{commbench, descendants, Process};

/// How long the killed run's processes may take to go.
const GONE_WITHIN: Duration = Duration::from_secs(10);
/// How long a run may take to have everything started (a RabbitMQ node takes seconds, more on a
/// loaded machine).
const STARTED_WITHIN: Duration = Duration::from_secs(120);

/// Starts `commbench run <args>` with a window far longer than the test, waits until its
/// descendants include `count` processes running each `word` (see [`Process::runs`]), SIGKILLs
/// it, and fails unless every process it had started is gone (or a zombie) within `GONE_WITHIN`.
fn nothing_outlives_a_killed_run(name: &str, args: &[&str], expected: &[(&str, usize)]) {
    let dir = common::temp_dir(name);
    let mut run = commbench()
        .args(["run", "--quiet", "--pattern", "sse", "--clients", "20"])
        .args(["--rate", "20", "--duration", "10m", "--warmup", "500ms"])
        .args(args)
        .arg("--out")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let missing = |family: &[Process]| -> Vec<(&str, usize)> {
        let missing = expected.iter().copied();
        missing
            .filter(|(word, count)| family.iter().filter(|p| p.runs(word)).count() < *count)
            .collect()
    };
    loop {
        let family = descendants(run.id());
        let missing = missing(&family);
        if missing.is_empty() {
            break;
        }
        let ended = run.try_wait().unwrap();
        if ended.is_some() || started.elapsed() > STARTED_WITHIN {
            let _ = run.kill();
            kill_all(&family);
            let mut stderr = String::new();
            if let Some(mut pipe) = run.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
            panic!("{name}: {missing:?} never started (the run: {ended:?}): {stderr}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Mid-window: the clients are connected and the events flow.
    std::thread::sleep(Duration::from_secs(1));
    let family = descendants(run.id());
    assert!(missing(&family).is_empty(), "{name}: {family:#?}");
    run.kill().unwrap();
    let _ = run.wait();
    let deadline = Instant::now() + GONE_WITHIN;
    let survivors = loop {
        let survivors: Vec<Process> = family.iter().filter(|p| p.running()).cloned().collect();
        if survivors.is_empty() || Instant::now() >= deadline {
            break survivors;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    kill_all(&survivors);
    remove_broker_dirs(run.id());
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        survivors.is_empty(),
        "{name}: outlived the killed run by {GONE_WITHIN:?}: {survivors:#?}\nits processes \
         were: {family:#?}"
    );
}

/// Leaves nothing behind when a test fails.
fn kill_all(processes: &[Process]) {
    for process in processes.iter().filter(|p| p.running()) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &process.pid.to_string()])
            .status();
    }
}

/// The directories the killed run's brokers had (the next broker start would sweep them, too).
fn remove_broker_dirs(pid: u32) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = ["redis", "rabbitmq", "tansu"]
            .iter()
            .any(|kind| name.starts_with(&format!("commbench-{kind}-{pid}-")));
        if ours {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A killed run of two instances on a private `kind` broker (plus `args`) leaves nothing; skipped
/// with the install note when the broker is not installed.
fn on_broker(kind: BusKind, args: &[&str], expected: &[(&str, usize)]) {
    if let Some(why) = missing_broker(kind) {
        eprintln!("skipped: {why}");
        return;
    }
    let bus = kind.to_string();
    let mut all = vec!["--bus", &bus, "--instances", "2"];
    all.extend_from_slice(args);
    nothing_outlives_a_killed_run(&format!("orphans-{bus}"), &all, expected);
}

#[test]
fn nothing_outlives_a_killed_run_on_redis_with_load_workers() {
    let expected = [("redis-server", 1), ("serve", 2), ("load-worker", 2)];
    on_broker(BusKind::Redis, &["--procs", "2"], &expected);
}

/// RabbitMQ's start script `exec`s the VM, and its `epmd` runs in the foreground as our child:
/// both die with the run, as do the VM's helpers (`erl_child_setup` and its ports).
#[test]
fn nothing_outlives_a_killed_run_on_rabbitmq_epmd_included() {
    on_broker(
        BusKind::RabbitMq,
        &[],
        &[("epmd", 1), ("beam.smp", 1), ("serve", 2)],
    );
}

#[test]
fn nothing_outlives_a_killed_run_on_kafka() {
    on_broker(BusKind::Kafka, &[], &[("tansu", 1), ("serve", 2)]);
}

/// A profile's `[start]` server (here commbench's own, through targets/commbench.toml) is ours too.
#[test]
fn a_profiles_server_does_not_outlive_a_killed_run() {
    let profile = concat!(env!("CARGO_MANIFEST_DIR"), "/../targets/commbench.toml");
    nothing_outlives_a_killed_run("orphans-profile", &["--profile", profile], &[("serve", 1)]);
}

/// A profile whose `[start]` forks without `exec` (a shell that backgrounds a process, then becomes
/// the server): the kernel's parent-death signal reaches only the process commbench started, so
/// the background process used to outlive the killed run. The guard kills the whole group.
#[test]
fn a_profiles_forked_processes_do_not_outlive_a_killed_run() {
    let marker = format!("2000.{}", std::process::id());
    let path =
        std::env::temp_dir().join(format!("commbench-orphan-fork-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        format!(
            r#"name = "forking"
base_url = "http://127.0.0.1:{{port}}"
[start]
command = ["sh", "-c", "sleep $2 >/dev/null 2>&1 & exec \"$0\" serve --bind 127.0.0.1:$1", "{{commbench}}", "{{port}}", "{marker}"]
ready_url = "/health"
[publish]
url = "/publish/{{topic}}"
[patterns.sse]
url = "/sse/{{topic}}"
"#
        ),
    )
    .unwrap();
    nothing_outlives_a_killed_run(
        "orphans-forking-profile",
        &["--profile", path.to_str().unwrap()],
        &[("serve", 1), ("guard", 1), (marker.as_str(), 1)],
    );
    let _ = std::fs::remove_file(&path);
}
