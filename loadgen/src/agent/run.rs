//! `commbench agent`: waits for its coordinator's session in Redis, says hello for its shard,
//! measures its clock against Redis, then hosts each cell it is given until the coordinator says
//! bye (or its session ends).

use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use clap::Args;
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;

use super::{
    clock_sync::{self, ClockOffset},
    keys::{self, Keys, Tagged},
    parse_shard, AgentError,
};
use crate::procs::{
    host::{serve, HostOptions},
    protocol::{Command, Hello, Report},
};

/// `commbench agent` flags.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The coordinator's Redis (redis://host:port), the one given to `run --coordinator`.
    #[arg(long, value_name = "URL")]
    pub coordinator: String,
    /// This agent's shard: INDEX/COUNT, counted from 0 (e.g. `$(JOB_COMPLETION_INDEX)/3`).
    #[arg(long, value_name = "I/N")]
    pub shard: String,
    /// The run's name, the same as the coordinator's `--run-name`.
    #[arg(long, default_value = "default")]
    pub run_name: String,
    /// Every client connection from this address (e.g. one 127.0.0.x per agent on one machine).
    #[arg(long, value_name = "IP")]
    pub source: Option<Ipv4Addr>,
    /// Also write this agent's own interval logs (`<cell>.<metric>.hlog`) here.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// How long to wait for the coordinator's session.
    #[arg(long, default_value = "5m", value_parser = parse_wait)]
    pub wait: Duration,
    /// Pin this agent to these CPUs (e.g. 0-3).
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<String>,
    /// Scheduling class: auto (real-time round-robin when permitted), normal, or realtime.
    #[arg(long, default_value = "auto", value_parser = clap::value_parser!(crate::priority::PriorityRequest))]
    pub priority: crate::priority::PriorityRequest,
}

fn parse_wait(text: &str) -> Result<Duration, String> {
    commbench_servers::units::parse_duration(text)
}

/// Runs the agent until the coordinator is done with it.
pub async fn run_agent(args: AgentArgs) -> Result<(), AgentError> {
    let (shard, of) = parse_shard(&args.shard)?;
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).map_err(|e| AgentError::Out(out.clone(), e))?;
    }
    let url = args.coordinator.clone();
    let mut connection = keys::connect(&url).await?;
    let keys = Keys::new(&args.run_name);
    let session = wait_for_session(&mut connection, &keys, &args).await?;
    let clock = clock_sync::measure(&mut connection)
        .await
        .map_err(|e| AgentError::Lost(e.to_string()))?;
    let nonce = keys::nonce();
    let hello = Hello {
        shard,
        of,
        nonce: nonce.clone(),
        host: host_name(),
        pid: std::process::id(),
        clock_error_ns: clock.error_ns,
    };
    keys::push(&mut connection, &keys.hello(&session), &hello)
        .await
        .map_err(|e| AgentError::Lost(e.to_string()))?;
    eprintln!(
        "agent {shard}/{of}: registered with run `{}` at {url}",
        args.run_name
    );
    let (down_tx, down) = mpsc::unbounded_channel();
    let (up, reports) = mpsc::unbounded_channel();
    let mut reader = tokio::spawn(read_down(
        url.clone(),
        keys.clone(),
        session.clone(),
        (shard, nonce.clone()),
        clock,
        down_tx,
    ));
    tokio::spawn(write_up(
        connection.clone(),
        keys.up(&session),
        (shard, nonce),
        reports,
    ));
    let options = HostOptions {
        out: args.out.clone(),
        source: args.source,
    };
    tokio::select! {
        () = serve(options, down, up) => {}
        ended = &mut reader => return ended.unwrap_or(Err(AgentError::CoordinatorGone)),
    }
    // Let the last reports go up before exiting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    match tokio::time::timeout(Duration::from_millis(100), reader).await {
        Ok(Ok(Err(error))) => Err(error),
        _ => Ok(()),
    }
}

/// Polls until a coordinator session exists; returns its id.
async fn wait_for_session(
    connection: &mut MultiplexedConnection,
    keys: &Keys,
    args: &AgentArgs,
) -> Result<String, AgentError> {
    let deadline = tokio::time::Instant::now() + args.wait;
    loop {
        let session: Option<String> = redis::cmd("GET")
            .arg(keys.session())
            .query_async(connection)
            .await
            .map_err(|e| AgentError::Lost(e.to_string()))?;
        if let Some(session) = session {
            return Ok(session);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(AgentError::NoCoordinator {
                name: args.run_name.clone(),
                url: args.coordinator.clone(),
                waited: args.wait,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Hands the coordinator's commands to the worker (the run clock's origin converted from Redis
/// time to this machine's); ends with an error when the coordinator refuses the agent or its
/// session ends, and with `Ok` after `Bye`.
async fn read_down(
    url: String,
    keys: Keys,
    session: String,
    (shard, nonce): (usize, String),
    clock: ClockOffset,
    down: mpsc::UnboundedSender<Command>,
) -> Result<(), AgentError> {
    let mut connection = keys::connect(&url).await?;
    let key = keys.down(&session, shard, &nonce);
    let mut last_check = tokio::time::Instant::now();
    loop {
        let popped = keys::pop(&mut connection, &key)
            .await
            .map_err(|e| AgentError::Lost(e.to_string()))?;
        if let Some(text) = popped {
            match serde_json::from_str::<Command>(&text) {
                Ok(Command::Refuse { reason }) => return Err(AgentError::Refused(reason)),
                Ok(Command::Start(mut spec)) => {
                    spec.origin_ns = clock.to_local(spec.origin_ns);
                    let _ = down.send(Command::Start(spec));
                }
                Ok(Command::Bye) => {
                    let _ = down.send(Command::Bye);
                    return Ok(());
                }
                Ok(command) => {
                    let _ = down.send(command);
                }
                Err(error) => tracing::warn!(%error, "ignoring a command that does not parse"),
            }
        }
        if last_check.elapsed() >= Duration::from_secs(5) {
            last_check = tokio::time::Instant::now();
            let current: Option<String> = redis::cmd("GET")
                .arg(keys.session())
                .query_async(&mut connection)
                .await
                .map_err(|e| AgentError::Lost(e.to_string()))?;
            if current.as_deref() != Some(session.as_str()) {
                return Err(AgentError::CoordinatorGone);
            }
        }
    }
}

/// Sends the worker's reports up, tagged with the shard and this process's nonce.
async fn write_up(
    mut connection: MultiplexedConnection,
    key: String,
    (shard, nonce): (usize, String),
    mut reports: mpsc::UnboundedReceiver<Report>,
) {
    while let Some(message) = reports.recv().await {
        let tagged = Tagged {
            shard,
            nonce: nonce.clone(),
            message,
        };
        if let Err(error) = keys::push(&mut connection, &key, &tagged).await {
            tracing::warn!(%error, "cannot send a report to the coordinator");
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}
