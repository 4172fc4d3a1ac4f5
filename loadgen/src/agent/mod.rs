//! Distributed runs: `commbench agent` processes on other machines host shares of each cell for a
//! coordinator (`commbench run --agents N --coordinator redis://…`). They meet in a Redis both can
//! reach — register, receive commands, stream reports with serialized HDR histograms back — and
//! agree on one clock through it: each side estimates its offset to the Redis clock with `TIME`
//! round trips and the report states the combined error. The agent hosts its share with the same
//! worker (`crate::procs::host`) a local load worker uses; only the link differs.

pub mod clock_sync;
pub mod coordinator;
pub mod keys;
pub mod run;

use std::time::Duration;

pub use coordinator::Coordinator;
pub use run::{run_agent, AgentArgs};

/// Why a distributed run could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot reach the coordinator's Redis at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("--shard {0}: {1}")]
    BadShard(String, String),
    #[error("no coordinator opened the run `{name}` at {url} within {waited:?}")]
    NoCoordinator {
        name: String,
        url: String,
        waited: Duration,
    },
    #[error("only {registered} of {count} agents registered in time (missing shards: {missing})")]
    Missing {
        registered: usize,
        count: usize,
        missing: String,
    },
    #[error("the coordinator refused this agent: {0}")]
    Refused(String),
    #[error("the coordinator's Redis went away: {0}")]
    Lost(String),
    #[error("the coordinator went away (its session ended)")]
    CoordinatorGone,
    #[error("cannot create --out {0}: {1}")]
    Out(std::path::PathBuf, std::io::Error),
}

/// Parses `i/N` (shard `i` of `N`, counted from 0).
pub fn parse_shard(text: &str) -> Result<(usize, usize), AgentError> {
    let bad = |why: &str| AgentError::BadShard(text.to_owned(), why.to_owned());
    let (index, count) = text
        .split_once('/')
        .ok_or_else(|| bad("write it as INDEX/COUNT, e.g. 0/3"))?;
    let index: usize = index
        .trim()
        .parse()
        .map_err(|_| bad("the index is not a number"))?;
    let count: usize = count
        .trim()
        .parse()
        .map_err(|_| bad("the count is not a number"))?;
    if count == 0 || count > 1_024 {
        return Err(bad("the count must be 1..=1024"));
    }
    if index >= count {
        return Err(bad(&format!(
            "the index is out of range (shards of {count} are 0..={})",
            count - 1
        )));
    }
    Ok((index, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_checked() {
        assert_eq!(parse_shard("2/3").unwrap(), (2, 3));
        for (text, says) in [
            ("3/3", "0..=2"),
            ("1", "INDEX/COUNT"),
            ("a/3", "not a number"),
            ("0/0", "1..=1024"),
        ] {
            let error = parse_shard(text).unwrap_err().to_string();
            assert!(
                error.contains(says) && error.starts_with("--shard"),
                "{error}"
            );
        }
    }
}
