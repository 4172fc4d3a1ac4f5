//! Load-worker processes: a cell's clients split over several processes (each with its own
//! open-file budget and its share of the load generator's CPUs), one publisher in the runner, and
//! their histograms, counters and usage merged into the cell's one result. The worker
//! (`host.rs`) is the same whether it is a local child on pipes (`pipe.rs`) or an agent on another
//! machine reached through Redis (`crate::agent`); only the link differs.

pub mod budget;
pub mod host;
pub mod pipe;
pub mod pool;
pub mod protocol;

use std::sync::Arc;

pub use protocol::Share;

use crate::{agent::Coordinator, pin::CpuPlan, priority::Scheduling};

/// Where a run's processes go: the CPU sets, and agents that host the clients when the run is
/// distributed.
#[derive(Clone, Default)]
pub struct Placement {
    pub cpus: Arc<CpuPlan>,
    /// The scheduling class every process of the run inherited.
    pub scheduling: Scheduling,
    /// Agents registered with this run's coordinator; `None` hosts clients on this machine.
    pub agents: Option<Arc<Coordinator>>,
}
