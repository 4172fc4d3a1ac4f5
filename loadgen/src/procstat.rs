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
    let (mut on_cpu, mut waited) = (0.0, 0.0);
    let mut any = false;
    // A thread may exit between listing and reading; it simply no longer counts.
    for (run, wait) in tasks
        .flatten()
        .filter_map(|task| task_schedstat(&task.path()))
    {
        on_cpu += run;
        waited += wait;
        any = true;
    }
    any.then_some((on_cpu, waited))
}

/// `(on CPU, waiting for a CPU)` in seconds of one thread, from its directory (e.g.
/// `/proc/thread-self`): its `schedstat`, in nanoseconds.
fn task_schedstat(task: &std::path::Path) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(task.join("schedstat")).ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    let (Some(Some(run)), Some(Some(wait))) = (fields.next(), fields.next()) else {
        return None;
    };
    Some((run as f64 / 1e9, wait as f64 / 1e9))
}

/// CPU seconds one thread has run so far (see [`task_schedstat`]).
pub fn task_cpu_seconds(task: &std::path::Path) -> Option<f64> {
    task_schedstat(task).map(|(on_cpu, _)| on_cpu)
}

/// The fields of `/proc/<pid>/stat` after the command name (which may contain spaces), so the
/// parent is `[1]`, utime `[11]`, stime `[12]`, cutime `[13]` and cstime `[14]`.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

/// The sum of two tick counts among `fields`, in seconds.
fn ticks_seconds(fields: &[String], first: usize, second: usize) -> Option<f64> {
    let first: u64 = fields.get(first)?.parse().ok()?;
    let second: u64 = fields.get(second)?.parse().ok()?;
    Some((first + second) as f64 / TICKS_PER_SECOND)
}

fn stat_seconds(pid: u32) -> Option<f64> {
    ticks_seconds(&stat_fields(pid)?, 11, 12)
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

/// Each process's parent, from `/proc/*/stat`, as it is now.
fn parents() -> HashMap<u32, u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            Some((pid, stat_fields(pid)?.get(1)?.parse().ok()?))
        })
        .collect()
}

/// `root` and every process below it (its children, theirs, …), as they are now.
pub fn tree(root: u32) -> Vec<u32> {
    tree_in(root, &parents())
}

/// The process group of `pid`, unless it is gone or a zombie.
pub fn group_of_live(pid: u32) -> Option<i32> {
    let fields = stat_fields(pid)?;
    if matches!(fields.first().map(String::as_str), Some("Z" | "X")) {
        return None;
    }
    fields.get(2)?.parse().ok()
}

/// `root` and every process below it (its children, theirs, …) in `parents`.
fn tree_in(root: u32, parents: &HashMap<u32, u32>) -> Vec<u32> {
    let mut tree = vec![root];
    let mut next = 0;
    while next < tree.len() {
        let parent = tree[next];
        tree.extend(
            parents
                .iter()
                .filter(|(pid, p)| **p == parent && **pid != parent)
                .map(|(pid, _)| *pid),
        );
        next += 1;
    }
    tree
}

/// CPU seconds of `root`'s process tree: each member's own (as [`cpu_seconds`]) plus what its
/// children that ended and were waited for used (`cutime + cstime`). So a server behind a launcher
/// that forks it (`sh -c …`, `npm start`, a pre-forking master) counts with the launcher, and a
/// child that exits in the window keeps counting through its parent. `None` when `root` is gone.
pub fn tree_cpu_seconds(root: u32) -> Option<f64> {
    let with_reaped = |pid| Some(cpu_seconds(pid)? + reaped_children_seconds(pid).unwrap_or(0.0));
    let own = with_reaped(root)?;
    let below: f64 = tree_in(root, &parents())
        .into_iter()
        .skip(1)
        .filter_map(with_reaped)
        .sum();
    Some(own + below)
}

/// CPU seconds of `pid`'s children that ended and were waited for (`cutime + cstime`).
fn reaped_children_seconds(pid: u32) -> Option<f64> {
    ticks_seconds(&stat_fields(pid)?, 13, 14)
}

/// Resident set size of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Samples between two reads of who is below each process tree [`RssPeaks`] adds up.
const TREE_RESCAN_TICKS: u64 = 8;

/// Samples the RSS of some processes every `period` and keeps each one's peak.
#[derive(Clone, Default)]
pub struct RssPeaks {
    peaks: Arc<Mutex<HashMap<u32, u64>>>,
}

impl RssPeaks {
    /// Samples until the returned handle is aborted: each of `pids` alone, and each of `trees`
    /// with every process below it added up (see [`tree_cpu_seconds`]).
    pub fn start(
        pids: Vec<u32>,
        trees: Vec<u32>,
        period: Duration,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let peaks = Self::default();
        let sampler = peaks.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            // Who is below each root is read from all of /proc, so only now and then: a server's
            // processes rarely change, and this runs beside the load generator's own work.
            let mut members: Vec<Vec<u32>> = Vec::new();
            for tick in 0u64.. {
                ticks.tick().await;
                if tick % TREE_RESCAN_TICKS == 0 && !trees.is_empty() {
                    let parents = parents();
                    members = trees.iter().map(|root| tree_in(*root, &parents)).collect();
                }
                let mut peaks = sampler.peaks.lock().await;
                let alone = pids.iter().map(|pid| (*pid, rss_bytes(*pid)));
                let whole = members.iter().map(|tree| {
                    let rss = rss_bytes(tree[0]).map(|own| {
                        own + tree[1..].iter().filter_map(|p| rss_bytes(*p)).sum::<u64>()
                    });
                    (tree[0], rss)
                });
                for (pid, rss) in alone.chain(whole) {
                    if let Some(rss) = rss {
                        let peak = peaks.entry(pid).or_insert(0);
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

    #[test]
    fn a_process_tree_counts_its_children() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let tree = tree_in(me, &parents());
        // Read in this order: CPU time only grows, so the tree read later holds at least as much.
        let own = cpu_seconds(me).unwrap();
        let whole = tree_cpu_seconds(me).unwrap();
        // Gone before any assertion can fail, so a failing run leaves nothing behind.
        let (sleeper, _) = (child.id(), child.kill());
        let _ = child.wait();
        assert_eq!(tree[0], me);
        assert!(tree.contains(&sleeper), "{tree:?}");
        assert!(whole >= own, "{whole} < {own}");
        assert!(tree_cpu_seconds(u32::MAX).is_none());
    }
}
