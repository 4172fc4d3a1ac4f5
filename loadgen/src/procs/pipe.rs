//! The local link: load workers are child processes (`commbench load-worker`), commands go down
//! their standard input and reports come up their standard output, one JSON message per line. A
//! worker whose output ends before its result is reported lost with its exit status; a worker
//! whose input ends (its runner died) exits.

use std::time::Duration;

use commbench_servers::child;
use serde::{de::DeserializeOwned, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    process::Child,
    sync::mpsc,
};

use super::{
    host::{serve, HostOptions},
    pool::{Links, Up},
    protocol::{Command, Report},
};
use crate::{pin::CpuList, target::child_process};

/// The longest message line accepted (a cell's spec, an interval's histograms).
const MAX_LINE: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    #[error("cannot start load worker {index} ({program}): {source}")]
    Spawn {
        index: usize,
        program: String,
        source: std::io::Error,
    },
}

/// Running local workers; killed when dropped.
pub struct Children {
    watchers: Vec<tokio::task::JoinHandle<()>>,
    kill: tokio_util::sync::DropGuard,
    pids: Vec<u32>,
}

impl Children {
    /// Lets each worker exit on its own (it has been told `Bye`), then kills what is left.
    pub async fn reap(self) {
        let all = futures_util::future::join_all(self.watchers);
        let _ = tokio::time::timeout(Duration::from_secs(5), all).await;
        drop(self.kill);
    }

    pub fn pids(&self) -> &[u32] {
        &self.pids
    }
}

/// Starts `cpus.len()` workers, worker `i` pinned to `cpus[i]` when given.
pub fn spawn(cpus: &[Option<CpuList>]) -> Result<(Links, Children), PipeError> {
    let program = std::env::current_exe()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "commbench".into());
    let (up_tx, up) = mpsc::unbounded_channel();
    let mut down = Vec::new();
    let mut names = Vec::new();
    let mut watchers = Vec::new();
    let mut pids = Vec::new();
    let kill = tokio_util::sync::CancellationToken::new();
    for (index, cpus) in cpus.iter().enumerate() {
        let mut process = child_process(&program);
        process.arg("load-worker");
        if let Some(cpus) = cpus {
            process.args(["--cpus", &cpus.to_string()]);
        }
        let mut child = child::spawn_tokio(process).map_err(|source| PipeError::Spawn {
            index,
            program: program.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or(0);
        names.push(format!("load worker {index} (pid {pid})"));
        let (tx, commands) = mpsc::unbounded_channel();
        if let Some(stdin) = child.stdin.take() {
            tokio::spawn(write_lines(commands, stdin));
        }
        let up = up_tx.clone();
        watchers.push(tokio::spawn(watch(index, child, up, kill.clone())));
        down.push(tx);
        pids.push(pid);
    }
    let links = Links {
        down,
        up,
        names,
        clock_error_ns: 0,
    };
    let children = Children {
        watchers,
        kill: kill.drop_guard(),
        pids,
    };
    Ok((links, children))
}

/// Hands on a worker's reports until its output ends, then says how it ended; kills it on `kill`.
async fn watch(
    index: usize,
    mut child: Child,
    up: mpsc::UnboundedSender<(usize, Up)>,
    kill: tokio_util::sync::CancellationToken,
) {
    let Some(stdout) = child.stdout.take() else {
        return;
    };
    let read = read_lines(stdout, |report: Report| {
        let _ = up.send((index, Up::Report(report)));
    });
    tokio::select! {
        why = read => {
            let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
            let why = match status {
                Ok(Ok(status)) => format!("{why}; it exited ({status})"),
                _ => why,
            };
            let _ = up.send((index, Up::Gone(why)));
            tokio::select! {
                _ = child.wait() => {}
                () = kill.cancelled() => { let _ = child.kill().await; }
            }
        }
        () = kill.cancelled() => { let _ = child.kill().await; }
    }
}

/// The worker process's side: commands from standard input, reports to standard output. Ctrl-C
/// at a terminal reaches the whole process group; the worker leaves it to its runner, which ends
/// the window and drains, and stops when its input closes.
pub async fn serve_stdio(options: HostOptions) {
    tokio::spawn(async { while tokio::signal::ctrl_c().await.is_ok() {} });
    let (down_tx, down) = mpsc::unbounded_channel();
    let (up, reports) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let why = read_lines(tokio::io::stdin(), |command: Command| {
            let _ = down_tx.send(command);
        })
        .await;
        tracing::debug!(%why, "the runner's commands ended");
    });
    let writer = tokio::spawn(write_lines(reports, tokio::io::stdout()));
    serve(options, down, up).await;
    let _ = writer.await;
}

/// Writes each message as one JSON line until the channel closes or the pipe breaks.
async fn write_lines<T: Serialize>(
    mut messages: mpsc::UnboundedReceiver<T>,
    mut out: impl AsyncWrite + Unpin,
) {
    while let Some(message) = messages.recv().await {
        let Ok(mut line) = serde_json::to_vec(&message) else {
            continue;
        };
        line.push(b'\n');
        if out.write_all(&line).await.is_err() || out.flush().await.is_err() {
            return;
        }
    }
}

/// Reads JSON lines into `each` until the stream ends; returns why it ended.
async fn read_lines<T: DeserializeOwned>(
    input: impl AsyncRead + Unpin,
    mut each: impl FnMut(T),
) -> String {
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = {
            use tokio::io::AsyncReadExt as _;
            (&mut reader)
                .take(MAX_LINE)
                .read_until(b'\n', &mut line)
                .await
        };
        match read {
            Ok(0) => return "its output ended".into(),
            Err(error) => return format!("reading it failed: {error}"),
            Ok(_) if !line.ends_with(b"\n") && line.len() as u64 >= MAX_LINE => {
                return format!("it sent a line over {MAX_LINE} bytes");
            }
            Ok(_) => match serde_json::from_slice::<T>(&line) {
                Ok(message) => each(message),
                Err(error) => return format!("it sent a message that does not parse: {error}"),
            },
        }
    }
}
