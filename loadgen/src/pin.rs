//! CPU sets: which CPUs the embedded servers, the broker and the load generator may run on, so on a
//! machine with two or more cores they do not compete for the same CPUs (`sched_setaffinity`).

use std::{fmt, str::FromStr};

use nix::{
    sched::{sched_getaffinity, sched_setaffinity, CpuSet},
    unistd::Pid,
};
use serde::{Deserialize, Serialize};

/// A set of CPU numbers, sorted and without repeats (`0`, `0-3`, `0,2-3`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuList(Vec<usize>);

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("{flag}: `{text}` is not a CPU list (e.g. 0, 0-3, 0,2-3)")]
    Syntax { flag: &'static str, text: String },
    #[error("{flag} {list}: CPU {cpu} is not one this process may use (allowed: {allowed})")]
    Unavailable {
        flag: &'static str,
        list: CpuList,
        cpu: usize,
        allowed: CpuList,
    },
    #[error("--server-cpus {server} and --loadgen-cpus {loadgen} overlap; the sets must be disjoint (or pass --no-pin)")]
    Overlap { server: CpuList, loadgen: CpuList },
    #[error("cannot read or set the CPU affinity of {what}: {source}")]
    Affinity {
        what: String,
        source: nix::errno::Errno,
    },
}

impl PinError {
    /// True when the sets asked for are wrong (the flag's fault, a usage error), not when the
    /// system refused to apply them.
    pub fn is_usage(&self) -> bool {
        !matches!(self, PinError::Affinity { .. })
    }
}

impl CpuList {
    /// Parses `text` (see [`CpuList::parse_flag`]) and checks every CPU is one of `available`.
    pub fn parse_within(
        flag: &'static str,
        text: &str,
        available: &CpuList,
    ) -> Result<Self, PinError> {
        let list = CpuList::parse_flag(flag, text)?;
        if let Some(cpu) = list.0.iter().find(|c| !available.0.contains(c)) {
            return Err(PinError::Unavailable {
                flag,
                cpu: *cpu,
                list: list.clone(),
                allowed: available.clone(),
            });
        }
        Ok(list)
    }

    /// The first CPU of the list alone (empty for an empty list).
    pub fn first(&self) -> CpuList {
        CpuList(self.0.iter().take(1).copied().collect())
    }

    /// These CPUs without any of `other`'s.
    pub fn without(&self, other: &CpuList) -> CpuList {
        CpuList(
            self.0
                .iter()
                .copied()
                .filter(|c| !other.0.contains(c))
                .collect(),
        )
    }

    pub fn cpus(&self) -> &[usize] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses the value of `flag`, naming it in the error.
    pub fn parse_flag(flag: &'static str, text: &str) -> Result<Self, PinError> {
        text.parse().map_err(|()| PinError::Syntax {
            flag,
            text: text.to_owned(),
        })
    }

    /// Splits the set into `parts` nearly equal, non-empty pieces when it has enough CPUs;
    /// otherwise every part shares the whole set.
    pub fn split(&self, parts: usize) -> Vec<CpuList> {
        let parts = parts.max(1);
        if self.len() < parts {
            return vec![self.clone(); parts];
        }
        (0..parts)
            .map(|part| {
                let cpus = self.0.iter().enumerate();
                CpuList(
                    cpus.filter(|(i, _)| i % parts == part)
                        .map(|(_, cpu)| *cpu)
                        .collect(),
                )
            })
            .collect()
    }

    fn to_cpu_set(&self) -> Result<CpuSet, nix::errno::Errno> {
        let mut set = CpuSet::new();
        for cpu in &self.0 {
            set.set(*cpu)?;
        }
        Ok(set)
    }
}

impl FromStr for CpuList {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let mut cpus = Vec::new();
        for part in text.split(',').map(str::trim) {
            let number = |s: &str| s.trim().parse::<usize>().map_err(|_| ());
            let (low, high) = match part.split_once('-') {
                Some((low, high)) => (number(low)?, number(high)?),
                None => (number(part)?, number(part)?),
            };
            if low > high || high >= CpuSet::count() {
                return Err(());
            }
            cpus.extend(low..=high);
        }
        cpus.sort_unstable();
        cpus.dedup();
        Ok(Self(cpus))
    }
}

impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ranges: Vec<String> = Vec::new();
        let mut iter = self.0.iter().copied().peekable();
        while let Some(start) = iter.next() {
            let mut end = start;
            while iter.peek() == Some(&(end + 1)) {
                end += 1;
                iter.next();
            }
            ranges.push(if end == start {
                start.to_string()
            } else {
                format!("{start}-{end}")
            });
        }
        f.write_str(&ranges.join(","))
    }
}

impl Serialize for CpuList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CpuList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|()| serde::de::Error::custom(format!("`{text}` is not a CPU list")))
    }
}

/// The CPUs this process may run on now.
pub fn available() -> Result<CpuList, PinError> {
    let set = sched_getaffinity(Pid::from_raw(0)).map_err(|source| PinError::Affinity {
        what: "this process".into(),
        source,
    })?;
    let cpus = (0..CpuSet::count())
        .filter(|cpu| set.is_set(*cpu).unwrap_or(false))
        .collect();
    Ok(CpuList(cpus))
}

/// Pins the calling thread, and so every thread it starts later, to `cpus`. Call it before the
/// async runtime starts, so the runtime sizes itself to the set.
pub fn pin_self(cpus: &CpuList) -> Result<(), PinError> {
    let set = cpus.to_cpu_set().map_err(|source| PinError::Affinity {
        what: "this process".into(),
        source,
    })?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|source| PinError::Affinity {
        what: "this process".into(),
        source,
    })
}

/// Pins every thread of another process (e.g. `redis-server`) to `cpus`.
pub fn pin_process(pid: u32, cpus: &CpuList) -> Result<(), PinError> {
    let error = |source| PinError::Affinity {
        what: format!("process {pid}"),
        source,
    };
    let set = cpus.to_cpu_set().map_err(error)?;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|_| error(nix::errno::Errno::ESRCH))?;
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // A thread may exit between listing and pinning; only the process as a whole matters.
        let _ = sched_setaffinity(Pid::from_raw(tid), &set);
    }
    sched_setaffinity(Pid::from_raw(pid as i32), &set).map_err(error)
}

/// Pins every thread of `root` and of every process below it (a launcher and the server it forked).
pub fn pin_tree(root: u32, cpus: &CpuList) -> Result<(), PinError> {
    let mut tree = crate::procstat::tree(root).into_iter();
    // The root must be pinnable; a process below it may end meanwhile.
    pin_process(tree.next().unwrap_or(root), cpus)?;
    for pid in tree {
        let _ = pin_process(pid, cpus);
    }
    Ok(())
}

/// What the user asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct PinRequest {
    pub server: Option<String>,
    pub loadgen: Option<String>,
    pub broker: Option<String>,
    pub no_pin: bool,
}

/// The CPU sets of a run, recorded in `run.json` and the report. `None` = not pinned (may run on
/// any CPU of the machine).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuPlan {
    /// The CPUs the run could use at all.
    pub available: CpuList,
    pub server: Option<CpuList>,
    pub broker: Option<CpuList>,
    pub loadgen: Option<CpuList>,
    /// Why the sets are what they are, in words (shown in the report).
    pub note: String,
}

impl CpuPlan {
    /// Chooses the sets: with two or more CPUs and embedded servers, the load generator gets the
    /// first half and the servers the rest, and the broker shares the servers' set; an external
    /// target or `--no-pin` leaves everything unpinned unless a set is named.
    pub fn choose(request: &PinRequest, embedded: bool) -> Result<Self, PinError> {
        let available = available()?;
        Self::choose_from(request, embedded, available)
    }

    fn choose_from(
        request: &PinRequest,
        embedded: bool,
        available: CpuList,
    ) -> Result<Self, PinError> {
        let named = |flag: &'static str, text: &Option<String>| -> Result<_, PinError> {
            let Some(text) = text else { return Ok(None) };
            CpuList::parse_within(flag, text, &available).map(Some)
        };
        let server = named("--server-cpus", &request.server)?;
        let loadgen = named("--loadgen-cpus", &request.loadgen)?;
        let broker = named("--broker-cpus", &request.broker)?;
        if let (Some(server), Some(loadgen)) = (&server, &loadgen) {
            if server.0.iter().any(|c| loadgen.0.contains(c)) {
                return Err(PinError::Overlap {
                    server: server.clone(),
                    loadgen: loadgen.clone(),
                });
            }
        }
        let mut plan = Self {
            available: available.clone(),
            server,
            broker,
            loadgen,
            note: String::new(),
        };
        let automatic = !request.no_pin && embedded && available.len() >= 2;
        if automatic {
            let half = available.len() / 2;
            let (first, rest) = available.0.split_at(half);
            match (&plan.server, &plan.loadgen) {
                (None, None) => {
                    plan.loadgen = Some(CpuList(first.to_vec()));
                    plan.server = Some(CpuList(rest.to_vec()));
                }
                (Some(server), None) => plan.loadgen = Some(complement(&available, server)),
                (None, Some(loadgen)) => plan.server = Some(complement(&available, loadgen)),
                (Some(_), Some(_)) => {}
            }
            // A set that took every CPU leaves the other side nothing: run it unpinned instead.
            for side in [&mut plan.server, &mut plan.loadgen] {
                if side.as_ref().is_some_and(CpuList::is_empty) {
                    *side = None;
                }
            }
        }
        if plan.broker.is_none() && embedded {
            plan.broker = plan.server.clone();
        }
        plan.note = plan.describe(request, embedded);
        Ok(plan)
    }

    fn describe(&self, request: &PinRequest, embedded: bool) -> String {
        let show = |set: &Option<CpuList>| {
            set.as_ref()
                .map_or_else(|| "any CPU".to_owned(), |s| format!("CPUs {s}"))
        };
        let why = if request.no_pin {
            "--no-pin: nothing pinned unless named"
        } else if !embedded {
            "an external target: only the sets named are pinned"
        } else if self.available.len() < 2 {
            "one CPU: nothing to separate"
        } else if request.broker.is_none() {
            "disjoint sets by default; the broker shares the servers' set"
        } else {
            "disjoint sets by default"
        };
        format!(
            "servers on {}, broker on {}, load generator on {} ({why})",
            show(&self.server),
            show(&self.broker),
            show(&self.loadgen)
        )
    }

    /// The number of CPUs the load generator may use (its set, or every available CPU).
    pub fn loadgen_cpus(&self) -> usize {
        self.loadgen
            .as_ref()
            .map_or(self.available.len(), CpuList::len)
            .max(1)
    }

    /// True when the servers and the load generator cannot run on the same CPU.
    pub fn separated(&self) -> bool {
        match (&self.server, &self.loadgen) {
            (Some(server), Some(loadgen)) => !server.0.iter().any(|c| loadgen.0.contains(c)),
            _ => false,
        }
    }
}

fn complement(all: &CpuList, taken: &CpuList) -> CpuList {
    CpuList(
        all.0
            .iter()
            .copied()
            .filter(|c| !taken.0.contains(c))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> CpuList {
        text.parse().unwrap()
    }

    #[test]
    fn lists_parse_and_print_compactly() {
        assert_eq!(list("3,0-1,1").cpus(), [0, 1, 3]);
        assert_eq!(list("0-2,4").to_string(), "0-2,4");
        assert_eq!(list("5").to_string(), "5");
        for bad in ["", "a", "2-1", "1-", "-1", "0,,1", "99999"] {
            assert!(bad.parse::<CpuList>().is_err(), "{bad}");
        }
        assert_eq!(
            serde_json::to_string(&list("0-1")).unwrap(),
            "\"0-1\"".to_owned()
        );
    }

    #[test]
    fn splits_share_a_set_fairly() {
        assert_eq!(
            list("0-3").split(2),
            [list("0,2"), list("1,3")],
            "two CPUs each"
        );
        assert_eq!(list("0").split(3), [list("0"), list("0"), list("0")]);
    }

    #[test]
    fn default_sets_are_disjoint_halves() {
        let request = PinRequest::default();
        let plan = CpuPlan::choose_from(&request, true, list("0-1")).unwrap();
        assert_eq!(plan.loadgen, Some(list("0")));
        assert_eq!(plan.server, Some(list("1")));
        assert_eq!(plan.broker, Some(list("1")));
        assert!(plan.separated());
        assert!(plan.note.contains("broker shares"), "{}", plan.note);
        let plan = CpuPlan::choose_from(&request, true, list("0")).unwrap();
        assert_eq!((plan.server, plan.loadgen), (None, None));
        let plan = CpuPlan::choose_from(&request, false, list("0-3")).unwrap();
        assert_eq!((plan.server, plan.loadgen), (None, None));
        let no_pin = PinRequest {
            no_pin: true,
            ..Default::default()
        };
        let plan = CpuPlan::choose_from(&no_pin, true, list("0-3")).unwrap();
        assert!(!plan.separated() && plan.loadgen_cpus() == 4);
    }

    #[test]
    fn named_sets_are_checked() {
        let ask = |server: Option<&str>, loadgen: Option<&str>| PinRequest {
            server: server.map(str::to_owned),
            loadgen: loadgen.map(str::to_owned),
            ..Default::default()
        };
        let plan = CpuPlan::choose_from(&ask(Some("3"), None), true, list("0-3")).unwrap();
        assert_eq!(plan.loadgen, Some(list("0-2")));
        let err = CpuPlan::choose_from(&ask(Some("0-1"), Some("1")), true, list("0-3"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("overlap"), "{err}");
        let err = CpuPlan::choose_from(&ask(Some("7"), None), true, list("0-1"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--server-cpus 7") && err.contains("allowed: 0-1"),
            "{err}"
        );
        let err = CpuPlan::choose_from(&ask(Some("x"), None), true, list("0-1"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a CPU list"), "{err}");
    }

    #[test]
    fn this_process_can_read_and_keep_its_affinity() {
        let now = available().unwrap();
        assert!(!now.is_empty());
        // Pinning a thread to the set it already has changes nothing for the other tests.
        std::thread::spawn(move || pin_self(&now).unwrap())
            .join()
            .unwrap();
    }
}
