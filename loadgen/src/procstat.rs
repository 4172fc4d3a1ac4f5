//! CPU time and memory of a process from `/proc/<pid>`: how the server (and the load generator
//! itself) pays for a pattern.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::sync::Mutex;

/// Linux reports CPU time in clock ticks of 1/100 s (USER_HZ) on every mainstream architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user + system) used so far by `pid`, or `None` if it is gone. Summed from each
/// thread's `schedstat` (nanoseconds) when the kernel has it, since `stat` counts only in 10 ms ticks.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    schedstat_seconds(pid).or_else(|| stat_seconds(pid))
}

fn schedstat_seconds(pid: u32) -> Option<f64> {
    schedstat(pid).map(|(on_cpu, _)| on_cpu)
}

/// Seconds `pid`'s threads waited, runnable, for a CPU so far (`schedstat`'s run delay): how much
/// more CPU it wanted than it got.
pub fn wait_seconds(pid: u32) -> Option<f64> {
    schedstat(pid).map(|(_, waited)| waited)
}

/// `(on CPU, waiting for a CPU)` in seconds, summed over `pid`'s threads.
fn schedstat(pid: u32) -> Option<(f64, f64)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let (mut on_cpu, mut waited) = (0u64, 0u64);
    let mut any = false;
    for task in tasks.flatten() {
        // A thread may exit between listing and reading; it simply no longer counts.
        let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
        if let (Some(Some(run)), Some(Some(wait))) = (fields.next(), fields.next()) {
            on_cpu += run;
            waited += wait;
            any = true;
        }
    }
    any.then_some((on_cpu as f64 / 1e9, waited as f64 / 1e9))
}

fn stat_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields are counted after its closing parenthesis.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((user + system) as f64 / TICKS_PER_SECOND)
}

/// Idle and total time (in clock ticks) of `cpus` so far, from `/proc/stat`: how busy a CPU set
/// was, whoever kept it busy.
pub fn cpu_set_ticks(cpus: &[usize]) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let (mut idle, mut total) = (0, 0);
    for line in stat.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let Some(cpu) = fields.next().and_then(|n| n.parse::<usize>().ok()) else {
            continue;
        };
        if !cpus.contains(&cpu) {
            continue;
        }
        let ticks: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal (guest time is already in user).
        total += ticks.iter().take(8).sum::<u64>();
        idle += ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    }
    (total > 0).then_some((idle, total))
}

/// Resident set size of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Samples the RSS of some processes every `period` and keeps each one's peak.
#[derive(Clone, Default)]
pub struct RssPeaks {
    peaks: Arc<Mutex<HashMap<u32, u64>>>,
}

impl RssPeaks {
    /// Samples until the returned handle is aborted.
    pub fn start(pids: Vec<u32>, period: Duration) -> (Self, tokio::task::JoinHandle<()>) {
        let peaks = Self::default();
        let sampler = peaks.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            loop {
                ticks.tick().await;
                let mut peaks = sampler.peaks.lock().await;
                for pid in &pids {
                    if let Some(rss) = rss_bytes(*pid) {
                        let peak = peaks.entry(*pid).or_insert(0);
                        *peak = (*peak).max(rss);
                    }
                }
            }
        });
        (peaks, task)
    }

    pub async fn peak(&self, pid: u32) -> u64 {
        self.peaks.lock().await.get(&pid).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me).is_some());
        assert!(stat_seconds(me).is_some());
        assert!(rss_bytes(me).is_some_and(|b| b > 1024 * 1024));
        assert!(cpu_seconds(u32::MAX).is_none());
        let (idle, total) = cpu_set_ticks(&[0]).unwrap();
        assert!(idle <= total && total > 0);
        assert!(cpu_set_ticks(&[usize::MAX]).is_none());
    }
}
