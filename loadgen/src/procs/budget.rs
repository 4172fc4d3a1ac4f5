//! The file-descriptor budget of a cell, checked before anything connects: clients (split over
//! load workers), the publisher, each server instance and the broker, against the per-process
//! open-file limit. It also picks the default number of load workers.

use crate::{
    pattern::Pattern,
    publisher,
    scenario::{BusKind, Scenario},
};

/// Descriptors a process needs beside its sockets: standard streams, the runtime, interval logs,
/// pipes to its workers, `/proc` reads.
pub const RESERVE: u64 = 128;
/// Connections Redis accepts unless told otherwise (`maxclients`).
const REDIS_MAX_CLIENTS: u64 = 10_000;

/// How a cell's clients are hosted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcCount {
    /// Load-worker processes; 1 = the runner's own process hosts every client.
    pub procs: usize,
    /// True when the count was chosen for the user (not `--procs`).
    pub automatic: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BudgetError {
    #[error(
        "{who} would hold {clients} clients = {needed} open files, but the open-file limit is \
         {limit} per process (`ulimit -Hn`): {fix}"
    )]
    Clients {
        who: String,
        clients: u64,
        needed: u64,
        limit: u64,
        fix: String,
    },
    #[error(
        "each of the {instances} server instances would hold about {connections} connections, but \
         the open-file limit is {limit} per process (`ulimit -Hn`): use --instances {fix} or more \
         (with --bus redis), or raise the hard limit"
    )]
    Servers {
        instances: usize,
        connections: u64,
        limit: u64,
        fix: u64,
    },
    #[error(
        "the {instances} server instances would open about {connections} connections to Redis \
         ({per_instance} each: one per topic and the shared link), over its limit of \
         {REDIS_MAX_CLIENTS}: use fewer --topics or --instances"
    )]
    Broker {
        instances: usize,
        per_instance: u64,
        connections: u64,
    },
    #[error(
        "the cell needs about {needed} open files on this machine, but the system allows {max} \
         (/proc/sys/fs/file-max)"
    )]
    System { needed: u64, max: u64 },
}

/// Open files one client holds: a job user may hold a connection to learn the result besides the
/// one it submits on.
pub fn files_per_client(pattern: Pattern) -> u64 {
    if pattern.is_job() {
        2
    } else {
        1
    }
}

/// The machine's limits the budget is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Hard `RLIMIT_NOFILE`: what every process of the run can raise itself to.
    pub per_process: u64,
    /// `/proc/sys/fs/file-max`.
    pub system: u64,
}

impl Limits {
    pub fn of_this_machine() -> Self {
        let per_process = rlimit::getrlimit(rlimit::Resource::NOFILE)
            .map_or(1_024, |(_, hard)| hard)
            .min(u64::from(u32::MAX));
        let system = std::fs::read_to_string("/proc/sys/fs/file-max")
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(u64::MAX);
        Self {
            per_process,
            system,
        }
    }
}

/// Checks the cell's budget and chooses how many load workers host its clients: `--procs` as
/// given, or (`None`) as few as the limit allows. `remote` workers (agents on other machines)
/// check their own limits; only the servers, the broker and the publisher are checked here.
pub fn check(
    scenario: &Scenario,
    pattern: Pattern,
    limits: Limits,
    remote: Option<usize>,
) -> Result<ProcCount, BudgetError> {
    let per_client = files_per_client(pattern);
    let clients = scenario.clients as u64;
    let client_files = clients * per_client;
    let room = limits.per_process.saturating_sub(RESERVE).max(1);
    let publisher = if scenario.publishes(pattern) {
        publisher::route(scenario, pattern).connections as u64
    } else {
        0
    };
    let count = match (remote, scenario.procs) {
        (Some(agents), _) => ProcCount {
            procs: agents,
            automatic: false,
        },
        (None, Some(procs)) => ProcCount {
            procs,
            automatic: false,
        },
        (None, None) if client_files + publisher <= room => ProcCount {
            procs: 1,
            automatic: true,
        },
        (None, None) => ProcCount {
            procs: client_files.div_ceil(room) as usize,
            automatic: true,
        },
    };
    if remote.is_none() {
        let procs = count.procs as u64;
        let (who, share, extra) = if procs == 1 {
            ("the load generator".to_owned(), clients, publisher)
        } else {
            (
                format!("each of the {procs} load workers"),
                clients.div_ceil(procs),
                0,
            )
        };
        let needed = share * per_client + extra;
        if needed > room {
            let enough = client_files.div_ceil(room);
            return Err(BudgetError::Clients {
                who,
                clients: share,
                needed: needed + RESERVE,
                limit: limits.per_process,
                fix: format!("use --procs {enough} or more (or leave --procs out)"),
            });
        }
    }
    let mut machine = RESERVE + publisher;
    if remote.is_none() {
        machine += client_files + RESERVE * count.procs as u64;
    }
    if scenario.target.is_none() {
        let instances = scenario.instances as u64;
        let per_instance = client_files.div_ceil(instances) + publisher + RESERVE;
        if per_instance > limits.per_process {
            let fix = (client_files + publisher).div_ceil(room);
            return Err(BudgetError::Servers {
                instances: scenario.instances,
                connections: per_instance - RESERVE,
                limit: limits.per_process,
                fix,
            });
        }
        machine += per_instance * instances;
        if scenario.bus_url.is_none() && scenario.instances > 1 {
            let per_instance = scenario.topics as u64 + 2;
            let connections = per_instance * instances;
            // The broker's side of those connections is on this machine too; only Redis has a
            // connection limit of its own (RabbitMQ takes one connection per instance).
            if scenario.bus == BusKind::Redis && connections > REDIS_MAX_CLIENTS {
                return Err(BudgetError::Broker {
                    instances: scenario.instances,
                    per_instance,
                    connections,
                });
            }
            machine += connections;
        }
    }
    if machine > limits.system {
        return Err(BudgetError::System {
            needed: machine,
            max: limits.system,
        });
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::RawScenario;

    fn scenario(pairs: &[(&'static str, &str)]) -> Scenario {
        let mut raw = RawScenario::default();
        for (field, value) in pairs {
            raw.set_flag(field, *value);
        }
        raw.validate().unwrap()
    }

    const HERE: Limits = Limits {
        per_process: 20_000,
        system: 2_000_000,
    };

    #[test]
    fn one_process_while_it_fits_then_as_few_workers_as_needed() {
        let small = scenario(&[("clients", "10k")]);
        let count = check(&small, Pattern::Ws, HERE, None).unwrap();
        assert_eq!((count.procs, count.automatic), (1, true));
        let big = scenario(&[("clients", "30k"), ("instances", "2"), ("bus", "redis")]);
        assert_eq!(check(&big, Pattern::Ws, HERE, None).unwrap().procs, 2);
        let huge = scenario(&[
            ("clients", "100k"),
            ("instances", "6"),
            ("bus", "redis"),
            ("topics", "100"),
        ]);
        assert_eq!(check(&huge, Pattern::Ws, HERE, None).unwrap().procs, 6);
    }

    #[test]
    fn refusals_name_the_numbers() {
        let s = scenario(&[
            ("clients", "30k"),
            ("procs", "1"),
            ("instances", "2"),
            ("bus", "redis"),
        ]);
        let err = check(&s, Pattern::Ws, HERE, None).unwrap_err().to_string();
        assert!(
            err.contains("30000 clients")
                && err.contains("20000 per process")
                && err.contains("--procs 2"),
            "{err}"
        );
        let s = scenario(&[("clients", "30k"), ("procs", "2")]);
        let err = check(&s, Pattern::Ws, HERE, None).unwrap_err().to_string();
        assert!(
            err.contains("1 server instances") && err.contains("--instances 2"),
            "{err}"
        );
        let s = scenario(&[
            ("clients", "1k"),
            ("instances", "16"),
            ("bus", "redis"),
            ("topics", "1000"),
        ]);
        let err = check(&s, Pattern::Ws, HERE, None).unwrap_err().to_string();
        assert!(err.contains("Redis") && err.contains("16032"), "{err}");
        let tiny = Limits {
            per_process: 20_000,
            system: 1_000,
        };
        let s = scenario(&[("clients", "2k")]);
        let err = check(&s, Pattern::Ws, tiny, None).unwrap_err().to_string();
        assert!(err.contains("file-max"), "{err}");
    }

    #[test]
    fn agents_check_their_own_share() {
        let s = scenario(&[("clients", "100k"), ("target", "http://127.0.0.1:9")]);
        let count = check(&s, Pattern::Ws, HERE, Some(3)).unwrap();
        assert_eq!((count.procs, count.automatic), (3, false));
    }
}
