//! What a cell's processes use: CPU and peak memory of the load generator, every server instance
//! and the broker, read at both ends of the measured window.

use crate::{
    fleet::Fleet,
    procstat::{cpu_seconds, wait_seconds, RssPeaks},
    result::ProcessUsage,
};

/// The processes whose CPU and memory a cell reports.
pub struct Processes {
    servers: Vec<u32>,
    broker: Option<u32>,
}

/// What the cell's processes used over the window.
pub struct Usage {
    pub servers: Option<ProcessUsage>,
    pub broker: Option<ProcessUsage>,
    pub loadgen: ProcessUsage,
}

/// CPU seconds used so far: the load generator, every server instance together, the broker.
pub struct CpuReading {
    loadgen: Option<f64>,
    loadgen_wait: Option<f64>,
    servers: Option<f64>,
    broker: Option<f64>,
}

impl Processes {
    pub fn of(fleet: &Fleet) -> Self {
        Self {
            servers: fleet.server_pids(),
            broker: fleet.broker_pid(),
        }
    }

    pub fn all(&self) -> Vec<u32> {
        let mut pids = vec![std::process::id()];
        pids.extend(&self.servers);
        pids.extend(self.broker);
        pids
    }

    pub fn cpu(&self) -> CpuReading {
        let servers = (!self.servers.is_empty())
            .then(|| self.servers.iter().map(|pid| cpu_seconds(*pid)).sum())
            .flatten();
        CpuReading {
            loadgen: cpu_seconds(std::process::id()),
            loadgen_wait: wait_seconds(std::process::id()),
            servers,
            broker: self.broker.and_then(cpu_seconds),
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
            wait_s: end.loadgen_wait.unwrap_or(0.0) - start.loadgen_wait.unwrap_or(0.0),
        };
        Usage {
            servers,
            broker,
            loadgen,
        }
    }
}
