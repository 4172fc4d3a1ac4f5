//! What a cell's processes use: CPU and peak memory of the load generator, every server instance
//! and the broker, read at both ends of the measured window.

use crate::{
    fleet::Fleet,
    procstat::{cpu_seconds, cpu_set_ticks, tree_cpu_seconds, wait_seconds, RssPeaks},
    result::ProcessUsage,
};

/// The processes whose CPU and memory a cell reports.
pub struct Processes {
    servers: Vec<u32>,
    broker: Option<u32>,
    /// The load generator's CPU set, whose busy share is read too.
    loadgen_cpus: Vec<usize>,
}

/// What the cell's processes used over the window.
pub struct Usage {
    pub servers: Option<ProcessUsage>,
    pub broker: Option<ProcessUsage>,
    pub loadgen: ProcessUsage,
    /// Share of the window the load generator's CPUs were busy (anyone's work), when pinned.
    pub loadgen_set_busy: Option<f64>,
}

/// CPU seconds used so far: the load generator, every server instance together, the broker.
pub struct CpuReading {
    loadgen: Option<f64>,
    loadgen_wait: Option<f64>,
    servers: Option<f64>,
    broker: Option<f64>,
    loadgen_set: Option<(u64, u64)>,
}

impl Processes {
    pub fn of(fleet: &Fleet, loadgen_cpus: Option<&crate::pin::CpuList>) -> Self {
        Self {
            servers: fleet.server_pids(),
            broker: fleet.broker_pid(),
            loadgen_cpus: loadgen_cpus.map(|s| s.cpus().to_vec()).unwrap_or_default(),
        }
    }

    /// Processes measured alone: the load generator (whose children are the servers, brokers and
    /// workers, each measured in its own right) and the broker.
    pub fn alone(&self) -> Vec<u32> {
        let mut pids = vec![std::process::id()];
        pids.extend(self.broker);
        pids
    }

    /// Processes measured with everything below them: the servers, so one behind a launcher that
    /// forks it (or a master with workers) is measured whole.
    pub fn trees(&self) -> Vec<u32> {
        self.servers.clone()
    }

    pub fn cpu(&self) -> CpuReading {
        let servers = (!self.servers.is_empty())
            .then(|| self.servers.iter().map(|pid| tree_cpu_seconds(*pid)).sum())
            .flatten();
        CpuReading {
            loadgen: cpu_seconds(std::process::id()),
            loadgen_wait: wait_seconds(std::process::id()),
            servers,
            broker: self.broker.and_then(cpu_seconds),
            loadgen_set: (!self.loadgen_cpus.is_empty())
                .then(|| cpu_set_ticks(&self.loadgen_cpus))
                .flatten(),
        }
    }

    /// CPU between `start` and `end` and peak memory (from `rss`) of the servers (added up), the
    /// broker and the load generator; `None` for a process that was not measured (an external
    /// target, no broker).
    pub async fn usage(&self, rss: &RssPeaks, start: &CpuReading, end: &CpuReading) -> Usage {
        let servers = match (start.servers, end.servers) {
            (Some(start), Some(end)) => {
                let mut peak_rss_bytes = 0;
                for pid in &self.servers {
                    peak_rss_bytes += rss.peak(*pid).await;
                }
                Some(ProcessUsage {
                    cpu_s: end - start,
                    peak_rss_bytes,
                    wait_s: 0.0,
                })
            }
            _ => None,
        };
        let broker = match (self.broker, start.broker, end.broker) {
            (Some(pid), Some(start), Some(end)) => Some(ProcessUsage {
                cpu_s: end - start,
                peak_rss_bytes: rss.peak(pid).await,
                wait_s: 0.0,
            }),
            _ => None,
        };
        let loadgen = ProcessUsage {
            cpu_s: end.loadgen.unwrap_or(0.0) - start.loadgen.unwrap_or(0.0),
            peak_rss_bytes: rss.peak(std::process::id()).await,
            // A thread that ended in the window takes its share with it: never below zero.
            wait_s: (end.loadgen_wait.unwrap_or(0.0) - start.loadgen_wait.unwrap_or(0.0)).max(0.0),
        };
        let loadgen_set_busy = match (start.loadgen_set, end.loadgen_set) {
            (Some((idle0, total0)), Some((idle1, total1))) if total1 > total0 => {
                let idle = idle1.saturating_sub(idle0) as f64 / (total1 - total0) as f64;
                Some((1.0 - idle).clamp(0.0, 1.0))
            }
            _ => None,
        };
        Usage {
            servers,
            broker,
            loadgen,
            loadgen_set_busy,
        }
    }
}
