//! Scheduling class of a benchmark's processes. On a machine shared with other work (a compile, a
//! test suite) an ordinary process waits behind its neighbours for milliseconds at a time, and with
//! autogroup scheduling no nice value helps: the load generator then reports its own waiting as
//! latency and a server stalls. By default `run` and `compare` put themselves in the real-time
//! round-robin class at its lowest priority before any thread or child starts, so the load
//! generator, its workers and publisher, the embedded servers and the private Redis all inherit
//! it. The kernel still keeps 5% of every CPU for everything else (`sched_rt_runtime_us`), and
//! the CPU sets keep the two sides apart.

use std::fmt;

use serde::Serialize;
use thread_priority::{
    set_thread_priority_and_policy, thread_native_id, RealtimeThreadSchedulePolicy, ThreadPriority,
    ThreadSchedulePolicy,
};

/// What `--priority` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PriorityRequest {
    /// Real-time round-robin when this process may (root, `CAP_SYS_NICE` or an `RLIMIT_RTPRIO`),
    /// ordinary scheduling otherwise.
    #[default]
    Auto,
    /// Ordinary scheduling: share the CPUs with everything else.
    Normal,
    /// Real-time round-robin, or an error.
    #[value(alias = "rt")]
    Realtime,
}

/// How the run's processes were scheduled, as `run.json` and the report say it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Scheduling {
    /// `SCHED_RR 1` or `normal`.
    pub class: String,
    /// Why, in words.
    pub note: String,
}

impl fmt::Display for Scheduling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.class, self.note)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("--priority realtime: this process may not use real-time scheduling ({0}); run as root, grant CAP_SYS_NICE, or use --priority normal")]
pub struct PriorityError(String);

/// Puts the calling thread (and so every thread and child it starts later) in the class asked for.
pub fn apply(request: PriorityRequest) -> Result<Scheduling, PriorityError> {
    if request == PriorityRequest::Normal {
        return Ok(Scheduling {
            class: "normal".into(),
            note: "--priority normal".into(),
        });
    }
    let policy = ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::RoundRobin);
    match set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, policy) {
        Ok(()) => Ok(Scheduling {
            class: "SCHED_RR 1".into(),
            note: "real-time round-robin at its lowest priority for the load generator, the \
                   servers and the broker, so other work on the machine does not delay them; the \
                   kernel keeps 5% of each CPU for everything else"
                .into(),
        }),
        Err(error) if request == PriorityRequest::Auto => Ok(Scheduling {
            class: "normal".into(),
            note: format!("real-time scheduling not permitted ({error:?}): other work on the machine may delay the measurement"),
        }),
        Err(error) => Err(PriorityError(format!("{error:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        use clap::ValueEnum as _;
        let parse = |text| PriorityRequest::from_str(text, false);
        assert_eq!(parse("auto"), Ok(PriorityRequest::Auto));
        assert_eq!(parse("rt"), Ok(PriorityRequest::Realtime));
        assert!(parse("urgent").is_err());
    }

    #[test]
    fn normal_changes_nothing_and_auto_never_fails() {
        assert_eq!(apply(PriorityRequest::Normal).unwrap().class, "normal");
        // On a thread of its own, so the test harness's threads keep their class.
        let scheduling = std::thread::spawn(|| apply(PriorityRequest::Auto).unwrap())
            .join()
            .unwrap();
        assert!(["SCHED_RR 1", "normal"].contains(&scheduling.class.as_str()));
    }
}
