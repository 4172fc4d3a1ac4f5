//! `commbench worker`: a separate worker process for the server's message queue. `--concurrency`
//! tasks, each on its own HTTP connection, take a job (held take), sleep its `work_ms`, and ack it,
//! until Ctrl-C/SIGTERM, `--duration` or `--max-jobs`; then it reports what it processed.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Args;
use commbench_servers::{
    topic::TopicName,
    units::{in_range, parse_count, parse_duration},
};
use http::Method;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::{
    http::{ClientError, HttpConn},
    record::Recorder,
    target::{Target, TargetError},
};

/// Pause after a failed request before trying again, so a restarting server is not hammered.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The commbench server, http://host:port.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The queue to serve.
    #[arg(long, default_value = "jobs", value_parser = topic_name)]
    pub queue: TopicName,
    /// Jobs processed at once, each by its own task and connection (1..=10k).
    #[arg(long, default_value = "1", value_parser = concurrency)]
    pub concurrency: usize,
    /// Worker name the server sees (task i takes as NAME-i). [default: worker-<pid>]
    #[arg(long, value_parser = topic_name)]
    pub name: Option<TopicName>,
    /// Stop after this long (e.g. 30s).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after processing this many jobs.
    #[arg(long, value_parser = max_jobs)]
    pub max_jobs: Option<u64>,
    /// How long the server may hold one take (must not exceed the server's --max-wait).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub take_wait: Duration,
}

fn topic_name(text: &str) -> Result<TopicName, String> {
    TopicName::parse(text).map_err(|e| e.to_string())
}

fn concurrency(text: &str) -> Result<usize, String> {
    Ok(in_range(parse_count(text)?, 1, 10_000)? as usize)
}

fn max_jobs(text: &str) -> Result<u64, String> {
    in_range(parse_count(text)?, 1, u64::MAX)
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("the server refused the worker: {0}")]
    Refused(String),
}

/// What a worker run did.
#[derive(Debug, Clone, Default)]
pub struct WorkerReport {
    pub name: String,
    /// Jobs taken, worked on and acknowledged.
    pub processed: u64,
    /// Of those, acknowledgements the server called duplicates (another worker finished first).
    pub duplicates: u64,
    /// Failed requests (each retried).
    pub errors: u64,
    pub elapsed: Duration,
}

impl fmt::Display for WorkerReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "worker {}: processed={} duplicates={} errors={} elapsed_s={:.3}",
            self.name,
            self.processed,
            self.duplicates,
            self.errors,
            self.elapsed.as_secs_f64()
        )
    }
}

/// One taken job, as the take answer carries it.
#[derive(Deserialize)]
struct Job {
    id: String,
    work_ms: u64,
    lease: String,
}

#[derive(Deserialize)]
struct Acked {
    duplicate: bool,
}

struct Ctx {
    target: Target,
    recorder: Arc<Recorder>,
    queue: TopicName,
    name: String,
    take_wait_ms: u128,
    max_jobs: Option<u64>,
    stop: CancellationToken,
    /// Jobs processed plus takes in flight, so `--max-jobs` is never overshot.
    reserved: AtomicU64,
    processed: AtomicU64,
    duplicates: AtomicU64,
    errors: AtomicU64,
    refused: Mutex<Option<String>>,
}

impl Ctx {
    /// Reserves one job of `--max-jobs`; `None` when the limit is reached for good.
    fn reserve(&self) -> Option<bool> {
        let Some(max) = self.max_jobs else {
            return Some(true);
        };
        if self.processed.load(Relaxed) >= max {
            return None;
        }
        if self.reserved.fetch_add(1, Relaxed) < max {
            return Some(true);
        }
        self.reserved.fetch_sub(1, Relaxed);
        Some(false)
    }

    fn release(&self) {
        if self.max_jobs.is_some() {
            self.reserved.fetch_sub(1, Relaxed);
        }
    }

    fn error(&self, what: &str, error: &ClientError) {
        if self.errors.fetch_add(1, Relaxed) < 5 {
            tracing::warn!(worker = self.name, %error, "{what} failed; retrying");
        }
    }
}

/// Runs the worker until `stop` is cancelled (or `--duration` / `--max-jobs` ends it).
pub async fn run(args: WorkerArgs, stop: CancellationToken) -> Result<WorkerReport, WorkerError> {
    let target = Target::external(&args.server).await?;
    target.check_reachable(Duration::from_secs(5)).await?;
    let name = args.name.map_or_else(
        || format!("worker-{}", std::process::id()),
        |n| n.to_string(),
    );
    let ctx = Arc::new(Ctx {
        target,
        recorder: Arc::new(Recorder::new(1)),
        queue: args.queue,
        name,
        take_wait_ms: args.take_wait.as_millis(),
        max_jobs: args.max_jobs,
        stop: stop.child_token(),
        reserved: AtomicU64::new(0),
        processed: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        refused: Mutex::new(None),
    });
    let started = Instant::now();
    if let Some(duration) = args.duration {
        let stop = ctx.stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            stop.cancel();
        });
    }
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|i| tokio::spawn(serve(ctx.clone(), i)))
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    if let Some(reason) = ctx.refused.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(WorkerError::Refused(reason));
    }
    Ok(WorkerReport {
        name: ctx.name.clone(),
        processed: ctx.processed.load(Relaxed),
        duplicates: ctx.duplicates.load(Relaxed),
        errors: ctx.errors.load(Relaxed),
        elapsed: started.elapsed(),
    })
}

/// One task: take → work → ack on one connection, reconnecting after failures. A job in hand is
/// finished and acknowledged even when the stop comes meanwhile; a held take is abandoned.
async fn serve(ctx: Arc<Ctx>, index: usize) {
    let take_path = format!(
        "/queues/{}/take?worker={}-{index}&wait_ms={}",
        ctx.queue, ctx.name, ctx.take_wait_ms
    );
    let mut conn: Option<HttpConn> = None;
    while !ctx.stop.is_cancelled() {
        match ctx.reserve() {
            None => {
                ctx.stop.cancel();
                break;
            }
            Some(false) => {
                pause(&ctx.stop, Duration::from_millis(20)).await;
                continue;
            }
            Some(true) => {}
        }
        let connection = match conn.as_mut() {
            Some(connection) => connection,
            None => match HttpConn::open(&ctx.target, None, &ctx.recorder).await {
                Ok(connection) => conn.insert(connection),
                Err(error) => {
                    ctx.error("connect", &error);
                    ctx.release();
                    pause(&ctx.stop, RETRY_PAUSE).await;
                    continue;
                }
            },
        };
        let taken = tokio::select! {
            taken = connection.fetch(Method::POST, &take_path, Bytes::new()) => taken,
            () = ctx.stop.cancelled() => {
                ctx.release();
                break;
            }
        };
        let job = match taken {
            Ok(body) if body.is_empty() => {
                ctx.release();
                continue;
            }
            Ok(body) => match serde_json::from_slice::<Job>(&body) {
                Ok(job) => job,
                Err(e) => {
                    ctx.error("take", &ClientError::Protocol(e.to_string()));
                    ctx.release();
                    continue;
                }
            },
            Err(ClientError::Status(status)) if status.is_client_error() => {
                // A 4xx on take is a misconfiguration (e.g. --take-wait above the server's --max-wait).
                *ctx.refused.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(format!("take answered {status}"));
                ctx.stop.cancel();
                ctx.release();
                break;
            }
            Err(error) => {
                ctx.error("take", &error);
                conn = None;
                ctx.release();
                pause(&ctx.stop, RETRY_PAUSE).await;
                continue;
            }
        };
        tokio::time::sleep(Duration::from_millis(job.work_ms)).await;
        let acked = ack(&ctx, conn.as_mut(), &job).await;
        match acked {
            Ok(duplicate) => {
                ctx.processed.fetch_add(1, Relaxed);
                if duplicate {
                    ctx.duplicates.fetch_add(1, Relaxed);
                }
            }
            Err(error) => {
                ctx.error("ack", &error);
                conn = None;
                ctx.release();
            }
        }
    }
}

/// Acknowledges `job`, on `conn` or (when the connection broke meanwhile) a fresh one.
async fn ack(ctx: &Ctx, conn: Option<&mut HttpConn>, job: &Job) -> Result<bool, ClientError> {
    let path = format!("/queues/{}/jobs/{}/ack", ctx.queue, job.id);
    let body = Bytes::from(serde_json::json!({ "lease": job.lease }).to_string());
    let headers = [("content-type", "application/json")];
    let answer = match conn {
        Some(conn) => conn.fetch_with(Method::POST, &path, &headers, body).await?,
        None => {
            let mut fresh = HttpConn::open(&ctx.target, None, &ctx.recorder).await?;
            fresh
                .fetch_with(Method::POST, &path, &headers, body)
                .await?
        }
    };
    let acked: Acked =
        serde_json::from_slice(&answer).map_err(|e| ClientError::Protocol(e.to_string()))?;
    Ok(acked.duplicate)
}

async fn pause(stop: &CancellationToken, how_long: Duration) {
    tokio::select! {
        () = tokio::time::sleep(how_long) => {}
        () = stop.cancelled() => {}
    }
}
