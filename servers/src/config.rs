//! Server configuration: every limit is a flag with a default, a unit-friendly parser and a range.

use std::{net::SocketAddr, time::Duration};

use clap::Args;

use crate::{
    bus::MemoryBusConfig,
    units::{duration_in, in_range, parse_bytes, parse_count, parse_duration},
};

/// Flags shared by `commbench-server` and `commbench serve`.
#[derive(Debug, Clone, Args)]
pub struct ServerConfig {
    /// Address to listen on. Loopback by default; use 0.0.0.0 deliberately.
    #[arg(long, default_value = "127.0.0.1:8080", env = "COMMBENCH_BIND")]
    pub bind: SocketAddr,

    /// Events of history kept per topic for cursor reads (1..=1M).
    #[arg(long, default_value = "1024", value_parser = history_events)]
    pub history: usize,

    /// Bytes of history kept per topic; older events go first (4KiB..=1GiB).
    #[arg(long, default_value = "4MiB", value_parser = history_bytes)]
    pub history_bytes: usize,

    /// Most topics held at once; publishing to or subscribing to a new topic beyond it gets 429 (1..=1M).
    #[arg(long, default_value = "1024", value_parser = max_topics)]
    pub max_topics: usize,

    /// Largest request body or WebSocket message (16B..=16MiB); larger gets 413 / close 1009.
    #[arg(long, default_value = "64KiB", value_parser = max_body)]
    pub max_body: usize,

    /// Most events in one short- or long-poll answer; `more: true` marks a cut (1..=100k).
    #[arg(long, default_value = "256", value_parser = poll_max_events)]
    pub poll_max_events: usize,

    /// Longest long-poll or job wait a client may ask for (0s..=10m).
    #[arg(long, default_value = "60s", value_parser = max_wait)]
    pub max_wait: Duration,

    /// Long-poll wait when the client names none (must not exceed --max-wait).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub default_wait: Duration,

    /// Interval of SSE comment heartbeats and WebSocket pings (100ms..=1h).
    #[arg(long, default_value = "15s", value_parser = heartbeat)]
    pub heartbeat: Duration,

    /// Events a live subscriber may fall behind before it is disconnected (1..=1M).
    #[arg(long, default_value = "1024", value_parser = subscriber_buffer)]
    pub subscriber_buffer: usize,

    /// A WebSocket send that stalls this long disconnects the (slow) client (10ms..=10m).
    #[arg(long, default_value = "10s", value_parser = send_timeout)]
    pub send_timeout: Duration,

    /// Most topics one WebSocket may subscribe to (1..=10k).
    #[arg(long, default_value = "64", value_parser = ws_max_subscriptions)]
    pub ws_max_subscriptions: usize,

    /// Concurrent TCP connections; beyond it a connection gets 503 and is closed (1..=1M). Lowered
    /// at start-up to fit the open-file limit (which is first raised as far as the hard limit allows).
    #[arg(long, default_value = "50000", value_parser = max_connections)]
    pub max_connections: usize,

    /// A request head must arrive complete within this long of its first byte; otherwise 408 and
    /// close (100ms..=1h).
    #[arg(long, default_value = "10s", value_parser = conn_timeout)]
    pub header_timeout: Duration,

    /// A connection with no request in progress (new, or kept alive between requests) is closed after
    /// this long (100ms..=1h). Streams, WebSockets and held requests are in progress, never idle.
    #[arg(long, default_value = "60s", value_parser = conn_timeout)]
    pub idle_timeout: Duration,

    /// A request body must arrive complete within this long once its handler reads it; otherwise
    /// 408 `request_timeout` and close (100ms..=1h).
    #[arg(long, default_value = "10s", value_parser = conn_timeout)]
    pub body_timeout: Duration,

    /// Bytes of events one GraphQL answer may carry (4KiB..=64MiB); a page is cut there
    /// (`more: true`) and further aliases get `response_too_large`.
    #[arg(long, default_value = "1MiB", value_parser = graphql_max_response)]
    pub graphql_max_response: usize,

    /// GraphQL queries and mutations over HTTP executed at once; more wait their turn (1..=1024).
    #[arg(long, default_value = "16", value_parser = graphql_concurrency)]
    pub graphql_concurrency: usize,

    /// How long a graphql-transport-ws client has to send `connection_init` (close 4408 after it)
    /// (100ms..=1m).
    #[arg(long, default_value = "3s", value_parser = graphql_init_timeout)]
    pub graphql_init_timeout: Duration,

    /// Simulated work time of a job created with POST /jobs, the handle long-poll demo (0s..=10m);
    /// message-queue jobs carry their own `work_ms`.
    #[arg(long, default_value = "100ms", value_parser = job_work)]
    pub job_work: Duration,

    /// POST /jobs handle long-poll demo: jobs remembered at once (pending and finished); finished ones
    /// are forgotten oldest first (1..=1M).
    #[arg(long, default_value = "10000", value_parser = max_jobs)]
    pub max_jobs: usize,

    /// Message queue: most distinct queues; a new one beyond it gets 429 (1..=10k).
    #[arg(long, default_value = "64", value_parser = max_queues)]
    pub max_queues: usize,

    /// Message queue: unfinished (waiting or running) jobs per queue; an enqueue beyond it gets 503
    /// `queue_full` (1..=10M).
    #[arg(long, default_value = "100000", value_parser = max_queued_jobs)]
    pub max_queued_jobs: usize,

    /// Message queue: largest `work_ms` a job may ask for (0..=600000).
    #[arg(long, default_value = "60000", value_parser = max_work_ms)]
    pub max_work_ms: u64,

    /// Message queue: a taken job not acknowledged within this is redelivered (10ms..=1h).
    #[arg(long, default_value = "30s", value_parser = visibility_timeout)]
    pub visibility_timeout: Duration,

    /// Message queue: how long finished jobs stay visible to status reads (1s..=7d; in process also
    /// at most --max-queued-jobs per queue).
    #[arg(long, default_value = "10m", value_parser = queue_retention)]
    pub queue_retention: Duration,

    /// Message queue: at least one of every N takes goes to the normal lane while both lanes have
    /// waiting jobs; premium otherwise goes first (2..=1M).
    #[arg(long, default_value = "4", value_parser = normal_every)]
    pub normal_every: u32,

    /// Message queue: in-server worker tasks (0 disables them; 0..=1024).
    #[arg(long, default_value = "2", value_parser = workers)]
    pub workers: usize,

    /// Message queue: the queue the in-server workers serve.
    #[arg(long, default_value = "jobs", value_parser = worker_queue)]
    pub worker_queue: crate::topic::TopicName,

    /// On shutdown, how long open streams and held requests get to finish (0s..=1m).
    #[arg(long, default_value = "5s", value_parser = shutdown_grace)]
    pub shutdown_grace: Duration,

    /// Event bus (and message queue) shared by several instances: `redis://host:port`,
    /// `amqp://host:port` (RabbitMQ) or `kafka://host:port`; in-process when absent.
    #[arg(long, value_parser = bus_url)]
    pub bus: Option<String>,

    /// With --bus: publishes held in memory while Redis is unreachable, replayed in order when it
    /// returns; beyond it a publish gets 503 `spool_full` (1..=10M).
    #[arg(long, default_value = "10000", value_parser = spool_events)]
    pub spool_events: usize,

    /// With --bus: bytes of payload the outage spool may hold (1KiB..=4GiB).
    #[arg(long, default_value = "64MiB", value_parser = spool_bytes)]
    pub spool_bytes: usize,

    /// Test-only: stall every request for LEN once, AT after start (`AT+LEN`, e.g. `3s+500ms`), to
    /// check that the load generator's corrected latency sees what uncorrected latency hides.
    #[arg(long, hide = true, value_parser = parse_stall)]
    pub debug_stall: Option<Stall>,
}

/// A one-off server stall injected for tests: requests arriving in `[at, at + len)` after start wait
/// until `at + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    pub at: Duration,
    pub len: Duration,
}

fn parse_stall(text: &str) -> Result<Stall, String> {
    let (at, len) = text
        .split_once('+')
        .ok_or_else(|| format!("`{text}` is not AT+LEN (e.g. 3s+500ms)"))?;
    Ok(Stall {
        at: parse_duration(at)?,
        len: parse_duration(len)?,
    })
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            history: 1024,
            history_bytes: 4 << 20,
            max_topics: 1024,
            max_body: 64 << 10,
            poll_max_events: 256,
            max_wait: Duration::from_secs(60),
            default_wait: Duration::from_secs(30),
            heartbeat: Duration::from_secs(15),
            subscriber_buffer: 1024,
            send_timeout: Duration::from_secs(10),
            ws_max_subscriptions: 64,
            max_connections: 50_000,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(10),
            graphql_max_response: 1 << 20,
            graphql_concurrency: 16,
            graphql_init_timeout: Duration::from_secs(3),
            job_work: Duration::from_millis(100),
            max_jobs: 10_000,
            max_queues: 64,
            max_queued_jobs: 100_000,
            max_work_ms: 60_000,
            visibility_timeout: Duration::from_secs(30),
            queue_retention: Duration::from_secs(600),
            normal_every: 4,
            workers: 2,
            worker_queue: crate::topic::TopicName::parse("jobs").unwrap_or_else(|_| unreachable!()),
            shutdown_grace: Duration::from_secs(5),
            bus: None,
            spool_events: 10_000,
            spool_bytes: 64 << 20,
            debug_stall: None,
        }
    }
}

impl ServerConfig {
    /// Cross-flag checks clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.default_wait > self.max_wait {
            return Err(format!(
                "--default-wait ({:?}) must not exceed --max-wait ({:?})",
                self.default_wait, self.max_wait
            ));
        }
        Ok(())
    }

    pub fn queue_config(&self) -> crate::queue::QueueConfig {
        crate::queue::QueueConfig {
            max_queues: self.max_queues,
            max_queued_jobs: self.max_queued_jobs,
            visibility_timeout: self.visibility_timeout,
            retention: self.queue_retention,
            normal_every: self.normal_every,
        }
    }

    /// Bounds of the Redis bus's outage spool.
    pub fn spool_limits(&self) -> crate::spool::SpoolLimits {
        crate::spool::SpoolLimits {
            events: self.spool_events,
            bytes: self.spool_bytes,
        }
    }

    pub fn bus_config(&self) -> MemoryBusConfig {
        MemoryBusConfig {
            history_events: self.history,
            history_bytes: self.history_bytes,
            max_topics: self.max_topics,
            subscriber_buffer: self.subscriber_buffer,
        }
    }
}

fn count_in(text: &str, min: u64, max: u64) -> Result<usize, String> {
    Ok(in_range(parse_count(text)?, min, max)? as usize)
}

fn bytes_in(text: &str, min: u64, max: u64) -> Result<usize, String> {
    Ok(in_range(parse_bytes(text)?, min, max)? as usize)
}

/// Plain `redis://`, `amqp://` and `kafka://` are built in (no TLS); anything else is refused up
/// front with the forms.
fn bus_url(text: &str) -> Result<String, String> {
    let wrong = || {
        format!(
            "`{text}` is not a broker URL; expected redis://host:port, amqp://host:port or \
             kafka://host:port"
        )
    };
    match BrokerKind::of_url(text) {
        Some(BrokerKind::Redis) if text.len() > "redis://".len() => Ok(text.to_owned()),
        Some(BrokerKind::RabbitMq) => {
            crate::log::rabbitmq::check_url(text).map(|()| text.to_owned())
        }
        Some(BrokerKind::Kafka) => crate::log::kafka::bootstrap(text).map(|_| text.to_owned()),
        _ => Err(wrong()),
    }
}

/// The brokers a `--bus` URL can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Redis,
    RabbitMq,
    Kafka,
}

impl BrokerKind {
    pub const ALL: [BrokerKind; 3] = [BrokerKind::Redis, BrokerKind::RabbitMq, BrokerKind::Kafka];

    /// The broker a URL names by its scheme.
    pub fn of_url(url: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| url.starts_with(kind.scheme()))
    }

    pub fn scheme(self) -> &'static str {
        match self {
            BrokerKind::Redis => "redis://",
            BrokerKind::RabbitMq => "amqp://",
            BrokerKind::Kafka => "kafka://",
        }
    }

    /// The name used in flags, cell names and reports.
    pub fn label(self) -> &'static str {
        match self {
            BrokerKind::Redis => "redis",
            BrokerKind::RabbitMq => "rabbitmq",
            BrokerKind::Kafka => "kafka",
        }
    }
}

fn spool_events(t: &str) -> Result<usize, String> {
    count_in(t, 1, 10_000_000)
}
fn spool_bytes(t: &str) -> Result<usize, String> {
    bytes_in(t, 1 << 10, 4 << 30)
}
fn history_events(t: &str) -> Result<usize, String> {
    count_in(t, 1, 1_000_000)
}
fn history_bytes(t: &str) -> Result<usize, String> {
    bytes_in(t, 4 << 10, 1 << 30)
}
fn max_topics(t: &str) -> Result<usize, String> {
    count_in(t, 1, 1_000_000)
}
fn max_body(t: &str) -> Result<usize, String> {
    bytes_in(t, 16, 16 << 20)
}
fn poll_max_events(t: &str) -> Result<usize, String> {
    count_in(t, 1, 100_000)
}
fn subscriber_buffer(t: &str) -> Result<usize, String> {
    count_in(t, 1, 1_000_000)
}
fn ws_max_subscriptions(t: &str) -> Result<usize, String> {
    count_in(t, 1, 10_000)
}
fn max_connections(t: &str) -> Result<usize, String> {
    count_in(t, 1, 1_000_000)
}
fn conn_timeout(t: &str) -> Result<Duration, String> {
    duration_in(t, Duration::from_millis(100), Duration::from_secs(3600))
}
fn graphql_max_response(t: &str) -> Result<usize, String> {
    bytes_in(t, 4 << 10, 64 << 20)
}
fn graphql_concurrency(t: &str) -> Result<usize, String> {
    count_in(t, 1, 1024)
}
fn graphql_init_timeout(t: &str) -> Result<Duration, String> {
    duration_in(t, Duration::from_millis(100), Duration::from_secs(60))
}
fn max_jobs(t: &str) -> Result<usize, String> {
    count_in(t, 1, 1_000_000)
}
fn max_queues(t: &str) -> Result<usize, String> {
    count_in(t, 1, 10_000)
}
fn max_queued_jobs(t: &str) -> Result<usize, String> {
    count_in(t, 1, 10_000_000)
}
fn max_work_ms(t: &str) -> Result<u64, String> {
    in_range(parse_count(t)?, 0, 600_000)
}
fn visibility_timeout(t: &str) -> Result<Duration, String> {
    duration_in(t, Duration::from_millis(10), Duration::from_secs(3600))
}
fn queue_retention(t: &str) -> Result<Duration, String> {
    duration_in(t, Duration::from_secs(1), Duration::from_secs(7 * 86_400))
}
fn normal_every(t: &str) -> Result<u32, String> {
    Ok(count_in(t, 2, 1_000_000)? as u32)
}
fn workers(t: &str) -> Result<usize, String> {
    count_in(t, 0, 1024)
}
fn worker_queue(t: &str) -> Result<crate::topic::TopicName, String> {
    crate::topic::TopicName::parse(t).map_err(|e| e.to_string())
}
fn max_wait(t: &str) -> Result<Duration, String> {
    duration_in(t, Duration::ZERO, Duration::from_secs(600))
}
fn heartbeat(t: &str) -> Result<Duration, String> {
    duration_in(t, Duration::from_millis(100), Duration::from_secs(3600))
}
fn send_timeout(t: &str) -> Result<Duration, String> {
    duration_in(t, Duration::from_millis(10), Duration::from_secs(600))
}
fn job_work(t: &str) -> Result<Duration, String> {
    duration_in(t, Duration::ZERO, Duration::from_secs(600))
}
fn shutdown_grace(t: &str) -> Result<Duration, String> {
    duration_in(t, Duration::ZERO, Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: ServerConfig,
    }

    fn parse(args: &[&str]) -> Result<ServerConfig, String> {
        let argv = std::iter::once("x").chain(args.iter().copied());
        Cli::try_parse_from(argv)
            .map(|c| c.config)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_match_the_default_impl() {
        let parsed = parse(&[]).unwrap_or_else(|e| panic!("{e}"));
        let default = ServerConfig::default();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
        assert!(parsed.validate().is_ok());
    }

    #[test]
    fn friendly_units_are_accepted() {
        let c = parse(&[
            "--max-body",
            "1MiB",
            "--history",
            "10k",
            "--heartbeat",
            "250ms",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.max_body, 1 << 20);
        assert_eq!(c.history, 10_000);
        assert_eq!(c.heartbeat, Duration::from_millis(250));
    }

    #[test]
    fn out_of_range_names_the_flag_and_range() {
        let err = parse(&["--history", "0"]).err().unwrap_or_default();
        assert!(
            err.contains("--history") && err.contains("1..=1000000"),
            "{err}"
        );
        let err = parse(&["--max-body", "1GiB"]).err().unwrap_or_default();
        assert!(err.contains("--max-body"), "{err}");
        let err = parse(&["--heartbeat", "soon"]).err().unwrap_or_default();
        assert!(
            err.contains("--heartbeat") && err.contains("not a duration"),
            "{err}"
        );
    }

    #[test]
    fn bus_must_be_a_broker_url() {
        for url in [
            "redis://127.0.0.1:6379",
            "amqp://127.0.0.1:5672",
            "amqp://u:p@127.0.0.1:5672/",
            "kafka://127.0.0.1:9092",
        ] {
            let c = parse(&["--bus", url]).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c.bus.as_deref(), Some(url));
        }
        for bad in ["http://x", "redis://", "amqp://h", "kafka://h:port"] {
            let err = parse(&["--bus", bad]).err().unwrap_or_default();
            assert!(err.contains("--bus"), "{bad}: {err}");
        }
        let err = parse(&["--bus", "http://x"]).err().unwrap_or_default();
        assert!(
            err.contains("redis://host:port")
                && err.contains("amqp://")
                && err.contains("kafka://"),
            "{err}"
        );
    }

    #[test]
    fn spool_bounds_are_flags_with_ranges() {
        let c = parse(&["--spool-events", "3", "--spool-bytes", "1MiB"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.spool_limits().events, 3);
        assert_eq!(c.spool_limits().bytes, 1 << 20);
        let err = parse(&["--spool-events", "0"]).err().unwrap_or_default();
        assert!(err.contains("--spool-events"), "{err}");
        let err = parse(&["--spool-bytes", "8GiB"]).err().unwrap_or_default();
        assert!(err.contains("--spool-bytes"), "{err}");
    }

    #[test]
    fn default_wait_cannot_exceed_max_wait() {
        let c =
            parse(&["--max-wait", "1s", "--default-wait", "2s"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.validate().unwrap_err().contains("--default-wait"));
    }
}
