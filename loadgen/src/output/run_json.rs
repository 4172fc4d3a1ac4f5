//! `run.json` (the run's metadata) and the facts about this machine that go into it.

use std::{fs, path::Path, process::Command};

use serde::Serialize;

use super::OutputError;
use crate::result::RunInfo;

/// Writes `info` as pretty-printed JSON with a trailing newline.
pub fn write_run_json(path: &Path, info: &RunInfo) -> Result<(), OutputError> {
    let mut text = serde_json::to_string_pretty(info).map_err(|source| OutputError::Json {
        path: path.to_owned(),
        source,
    })?;
    text.push('\n');
    fs::write(path, text).map_err(OutputError::write(path))
}

/// What a reader of the results needs to know about where they were measured. Each fact is
/// `None` when it cannot be found out (not Linux, no `rustc` or `git` on the `PATH`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MachineFacts {
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: Option<String>,
    /// CPUs this process may use.
    pub cpus: usize,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: Option<String>,
    /// `rustc --version`.
    pub rustc: Option<String>,
    /// `git rev-parse HEAD` in the current directory.
    pub git_commit: Option<String>,
}

/// Gathers [`MachineFacts`]; runs `rustc` and `git` once each.
pub fn machine_facts() -> MachineFacts {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").ok();
    MachineFacts {
        cpu_model: cpuinfo.as_deref().and_then(cpu_model),
        // The machine's count, not this process's: by the time facts are gathered the load
        // generator may already be pinned to its own CPU set.
        cpus: cpuinfo
            .as_deref()
            .map(|text| text.lines().filter(|l| l.starts_with("processor")).count())
            .filter(|&n| n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(non_empty),
        rustc: command_output("rustc", &["--version"]),
        git_commit: command_output("git", &["rev-parse", "HEAD"]),
    }
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == "model name")
            .then(|| non_empty(value.to_owned()))
            .flatten()
    })
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    non_empty(String::from_utf8(output.stdout).ok()?)
}

fn non_empty(text: String) -> Option<String> {
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::test_util::temp_path;

    #[test]
    fn finds_the_cpu_model() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) \
                       CPU @ 2.20GHz\nflags\t\t: fpu\n";
        assert_eq!(
            cpu_model(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(cpu_model("processor : 0\n"), None);
    }

    #[test]
    fn facts_are_gathered() {
        let facts = machine_facts();
        assert!(facts.cpus >= 1);
        if let Some(rustc) = facts.rustc {
            assert!(rustc.starts_with("rustc "), "{rustc}");
        }
    }

    #[test]
    fn writes_pretty_json() {
        let path = temp_path("run.json");
        let info = RunInfo {
            run_id: "20260101-000000".into(),
            started_unix_s: 1,
            complete: true,
            commbench_version: "0.1.0".into(),
            git_commit: None,
            cpu_model: Some("cpu".into()),
            cpus: 2,
            kernel: None,
            rustc: None,
            target: "embedded".into(),
            scenario: serde_json::json!({ "clients": 10 }),
            cells: vec!["sse-c10-r50-p128".into()],
            notes: Vec::new(),
            cpu_sets: Default::default(),
            scheduling: Default::default(),
            placement: Default::default(),
        };
        write_run_json(&path, &info).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(
            text.contains("\n  \"run_id\": \"20260101-000000\",\n"),
            "{text}"
        );
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["scenario"]["clients"], 10);
        assert_eq!(value["git_commit"], serde_json::Value::Null);
    }
}
