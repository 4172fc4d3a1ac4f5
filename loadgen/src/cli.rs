//! The `commbench` command line: raw flags, turned into a validated scenario by `scenario.rs`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use commbench_servers::ServerConfig;

use crate::scenario::{RawScenario, ScenarioError};

/// Benchmarks backend communication patterns (request-response, short and long polling, SSE,
/// WebSocket) side by side on one shared event feed.
#[derive(Debug, Parser)]
#[command(name = "commbench", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Drive one or more patterns with many clients and write results/<run-id>/.
    Run(RunArgs),
    /// The main comparison: every pattern at several client counts and poll intervals, then the
    /// report (CSV, histograms, charts, REPORT.md). Fields accept lists: `--clients 100,1000`.
    Compare(CompareArgs),
    /// Per pattern (and poll interval), the most clients (or events/s) one server carries within a
    /// latency goal with no loss and no errors: doubling steps, then bisection. Writes
    /// capacity.csv, every step's files and the report. The run flags set the steps' other
    /// parameters (defaults: the patterns short-poll,long-poll,sse,ws,graphql-sub,socketio, rate
    /// 50 on 10 topics, interval 1s, duration 5s, warm-up 2s).
    Capacity(crate::capacity::CapacityArgs),
    /// Re-render the charts and REPORT.md of a results directory from its files alone.
    Report(ReportArgs),
    /// Run the pattern server (the same server `run` embeds).
    Serve(ServeArgs),
    /// Process jobs of a server's message queue: take, simulate the work, acknowledge.
    Worker(crate::worker::WorkerArgs),
    /// Host shares of a distributed run's clients for a coordinator (`run --agents N
    /// --coordinator redis://…`), e.g. one per machine or per Kubernetes Job index.
    Agent(crate::agent::AgentArgs),
    /// What this machine's loopback sockets cost with no protocol code: one write per delivery
    /// (push) or one answer per request, CPU of the measured thread per operation. The yardstick
    /// for a pattern's server CPU per delivery (scripts/push-efficiency.sh prints both).
    Floor(crate::floor::FloorArgs),
    /// A load-worker process of `run --procs N`, driven over its standard input and output.
    #[command(hide = true)]
    LoadWorker(LoadWorkerArgs),
    /// Runs a profile's server command in a process group of its own, which it kills when
    /// commbench is gone (`profile/guard.rs`).
    #[command(hide = true)]
    Guard(GuardArgs),
}

#[derive(Debug, Args)]
pub struct GuardArgs {
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LoadWorkerArgs {
    /// Pin this worker to these CPUs.
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<String>,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// A smaller study that finishes in about a minute.
    #[arg(long)]
    pub quick: bool,
    /// Patterns repeated on the Redis bus for the in-process vs Redis comparison, at the middle
    /// client count; `none` leaves the comparison out (it is skipped with a note when redis-server
    /// is not installed). [default: sse,ws,long-poll,short-poll]
    #[arg(long, value_name = "PATTERNS")]
    pub bus_patterns: Option<String>,
    /// Server instances behind the Redis bus in that comparison (list, e.g. 1,2,4). [default: 2]
    #[arg(long, value_name = "N")]
    pub bus_instances: Option<String>,
    /// Message-queue cells at the middle client count (with the default patterns only); `none`
    /// leaves them out. [default: job-short-poll,job-long-poll,job-sse,job-ws]
    #[arg(long, value_name = "PATTERNS")]
    pub job_patterns: Option<String>,
    /// The broker comparison: these brokers side by side (redis, rabbitmq, kafka; `none` leaves it
    /// out), each running --broker-patterns on the first --bus-instances count at the middle client
    /// count. A broker that is not installed is skipped with a note. [default: redis,rabbitmq,kafka]
    #[arg(long, value_name = "BROKERS")]
    pub brokers: Option<String>,
    /// Patterns of the broker comparison. [default: sse,ws,long-poll,short-poll,job-long-poll,job-ws]
    #[arg(long, value_name = "PATTERNS")]
    pub broker_patterns: Option<String>,
    /// Measured window of every cell on a broker (the Redis comparison's too), after a 1s warm-up.
    /// [default: 3s; --quick: 2s]
    #[arg(long, value_name = "D")]
    pub broker_duration: Option<String>,
    /// Peers to measure beside commbench's server: the same cells against each peer, started from
    /// its profile (`node` = peers/node/profile.toml, or a profile's path); skipped with a note
    /// when the peer cannot start here.
    #[arg(long, value_name = "PEERS")]
    pub peers: Option<String>,
    #[command(flatten)]
    pub run: RunArgs,
}

impl CompareArgs {
    /// The study as given: the run flags plus the comparison's own.
    pub fn raw_study(&self) -> Result<RawScenario, ScenarioError> {
        let mut raw = self.run.raw_scenario()?;
        if let Some(patterns) = &self.bus_patterns {
            raw.set_flag("bus_patterns", patterns.clone());
        }
        if let Some(instances) = &self.bus_instances {
            raw.set_flag("bus_instances", instances.clone());
        }
        let lists = [
            ("job_patterns", &self.job_patterns),
            ("brokers", &self.brokers),
            ("broker_patterns", &self.broker_patterns),
            ("broker_duration", &self.broker_duration),
        ];
        for (field, value) in lists {
            if let Some(value) = value {
                raw.set_flag(field, value.clone());
            }
        }
        if let Some(peers) = &self.peers {
            raw.set_flag("peers", peers.clone());
        }
        Ok(raw)
    }
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The results directory (e.g. results/latest).
    #[arg(default_value = "results/latest")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ServerConfig,
    /// Exit when standard input closes (how `commbench run` stops its embedded server).
    #[arg(long, hide = true)]
    pub exit_on_stdin_eof: bool,
    /// Run only on these CPUs (e.g. 1, 2-3, 0,2): how `commbench run` keeps its embedded servers
    /// off the load generator's CPUs.
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<String>,
}

/// `commbench run` flags. Values take friendly units (`10k`, `30s`, `250ms`, `64KiB`); a flag
/// overrides the same field of `--scenario`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML scenario (or study) file: fields named like the flags, e.g. `clients = "2k"`; a study
    /// may give lists, e.g. `clients = [100, 1000]`.
    #[arg(long, visible_alias = "study", value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    // The help lists every pattern by name, from `crate::pattern`.
    #[arg(long, short = 'p', value_name = "PATTERN", help = crate::pattern::Pattern::help())]
    pub pattern: Vec<String>,
    /// Simulated clients, each with its own connection (1..=200k). [default: 100]
    #[arg(long, short = 'c')]
    pub clients: Option<String>,
    /// Events published per second (request-response: requests per second; 0 = closed loop). [default: 50]
    #[arg(long, short = 'r')]
    pub rate: Option<String>,
    /// Measured window (1s..=24h). [default: 10s]
    #[arg(long, short = 'd')]
    pub duration: Option<String>,
    /// Warm-up before the window, excluded from results (0s..=1h). [default: 2s]
    #[arg(long)]
    pub warmup: Option<String>,
    /// Payload bytes per event (48B..=1MiB). [default: 128]
    #[arg(long)]
    pub payload: Option<String>,
    /// Topics the events and clients spread over (1..=1000). [default: 1]
    #[arg(long)]
    pub topics: Option<String>,
    /// Short-poll (and graphql-poll, poll-url) interval per client (1ms..=1h). [default: 1s]
    #[arg(long)]
    pub interval: Option<String>,
    /// How long a long poll may be held (10ms..=10m). [default: 30s]
    #[arg(long)]
    pub long_poll_timeout: Option<String>,
    /// Publish schedule: fixed or poisson. [default: fixed]
    #[arg(long)]
    pub arrival: Option<String>,
    /// New connections per second while clients start (1..=1M). [default: 2000]
    #[arg(long)]
    pub ramp: Option<String>,
    /// Request-response: each connection sends its next request when the answer arrives.
    #[arg(long)]
    pub closed_loop: bool,
    /// An already-running server (http://host:port[/path]); without it the embedded one is started.
    /// With --profile it replaces the profile's base URL (and its server is not started).
    #[arg(long, short = 't')]
    pub target: Option<String>,
    /// A target profile (TOML) describing someone else's server: how to start it or where it is,
    /// how to publish to it, and how each pattern reaches it (examples in targets/).
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// The process id of an already-running --target (or a --profile without [start]), whose CPU
    /// and memory are then measured from /proc.
    #[arg(long, value_name = "PID")]
    pub target_pid: Option<String>,
    /// ws-url: a text message to send after connecting.
    #[arg(long)]
    pub ws_message: Option<String>,
    /// Time allowed after publishing stops for late deliveries (0s = 2 × interval, at least 2s).
    #[arg(long)]
    pub drain: Option<String>,
    /// Stop early after this many errors (0 = never).
    #[arg(long)]
    pub max_errors: Option<String>,
    /// Embedded server instances sharing one feed (1..=16; more than 1 needs a broker --bus). Clients
    /// are spread round-robin over them like a load balancer would; events are published through the
    /// first. [default: 1]
    #[arg(long)]
    pub instances: Option<String>,
    /// The bus between instances: memory (in-process), or a broker started per cell on loopback
    /// ports: redis (redis-server), rabbitmq (a private RabbitMQ node) or kafka (a private tansu,
    /// a Kafka-protocol broker). [default: memory]
    #[arg(long)]
    pub bus: Option<String>,
    /// Use this existing broker instead of starting one: redis://host:port, amqp://[user:pass@]host:port
    /// or kafka://host:port (the scheme names the broker, so --bus may be left out).
    #[arg(long, value_name = "URL")]
    pub bus_url: Option<String>,
    /// Job patterns: simulated work per job (0s..=60s). [default: 20ms]
    #[arg(long)]
    pub work: Option<String>,
    /// Job patterns: workers inside each embedded server instance (0..=4096). [default: 4]
    #[arg(long)]
    pub workers: Option<String>,
    /// Job patterns: the share of users whose jobs go to the premium lane (0..=1). [default: 0.2]
    #[arg(long)]
    pub premium: Option<String>,
    /// Output directory [default: results/<run-id>, plus the results/latest link].
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// No progress display and no per-cell table.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Extra flag for the embedded server, e.g. --server-arg=--history=4096 (repeatable).
    #[arg(long, value_name = "FLAG", allow_hyphen_values = true)]
    pub server_arg: Vec<String>,
    /// Load-worker processes the clients are split over (1..=256; one publisher stays in this
    /// process). [default: as many as the open-file limit needs]
    #[arg(long)]
    pub procs: Option<String>,
    /// CPUs for the embedded servers (e.g. 1, 2-3). [default: with 2+ CPUs, the second half]
    #[arg(long, value_name = "LIST")]
    pub server_cpus: Option<String>,
    /// CPUs for the load generator and its workers. [default: with 2+ CPUs, the first half]
    #[arg(long, value_name = "LIST")]
    pub loadgen_cpus: Option<String>,
    /// CPUs for the private broker (redis-server, the RabbitMQ node, tansu). [default: the servers'
    /// set]
    #[arg(long, value_name = "LIST")]
    pub broker_cpus: Option<String>,
    /// Do not pin anything that is not named: servers, broker and load generator share every CPU.
    #[arg(long)]
    pub no_pin: bool,
    /// Scheduling class of the load generator, servers and broker: auto (real-time round-robin
    /// when permitted), normal, or realtime.
    #[arg(long, default_value = "auto", value_parser = clap::value_parser!(crate::priority::PriorityRequest))]
    pub priority: crate::priority::PriorityRequest,
    /// Distributed run: the clients are hosted by this many `commbench agent` processes that
    /// register with --coordinator; this process publishes and merges.
    #[arg(long, value_name = "N", requires = "coordinator")]
    pub agents: Option<usize>,
    /// The Redis (redis://host:port) the coordinator and its agents meet at.
    #[arg(long, value_name = "URL", requires = "agents")]
    pub coordinator: Option<String>,
    /// The distributed run's name (the agents' --run-name). [default: default]
    #[arg(long, default_value = "default")]
    pub run_name: String,
    /// How long to wait for every agent to register.
    #[arg(long, default_value = "2m", value_name = "D")]
    pub agent_wait: String,
    /// Exit with status 1 when a threshold fails, after writing everything: `[pattern:]column OP
    /// value` over summary.csv's columns (capacity: capacity.csv's), OP one of < <= > >= == !=,
    /// e.g. `p99_ms<50,events_lost==0,ws:p99_ms<20` (comma-separated or repeated).
    #[arg(long, value_name = "EXPR")]
    pub fail_if: Vec<String>,
    /// A threshold on a column that is empty for a cell (does not apply there) fails instead of
    /// being skipped.
    #[arg(long)]
    pub fail_if_missing: bool,
}

impl RunArgs {
    /// The CPU sets asked for.
    pub fn pin_request(&self) -> crate::pin::PinRequest {
        crate::pin::PinRequest {
            server: self.server_cpus.clone(),
            loadgen: self.loadgen_cpus.clone(),
            broker: self.broker_cpus.clone(),
            no_pin: self.no_pin,
        }
    }

    /// The scenario file (if any) overlaid with the flags given.
    pub fn raw_scenario(&self) -> Result<RawScenario, ScenarioError> {
        let mut raw = match &self.scenario {
            Some(path) => RawScenario::from_file(path)?,
            None => RawScenario::default(),
        };
        let mut flags = RawScenario::default();
        if !self.pattern.is_empty() {
            flags.set_flag("patterns", self.pattern.join(","));
        }
        let optional = [
            ("clients", &self.clients),
            ("rate", &self.rate),
            ("duration", &self.duration),
            ("warmup", &self.warmup),
            ("payload", &self.payload),
            ("topics", &self.topics),
            ("interval", &self.interval),
            ("long_poll_timeout", &self.long_poll_timeout),
            ("arrival", &self.arrival),
            ("ramp", &self.ramp),
            ("target", &self.target),
            ("target_pid", &self.target_pid),
            ("ws_message", &self.ws_message),
            ("drain", &self.drain),
            ("max_errors", &self.max_errors),
            ("instances", &self.instances),
            ("bus", &self.bus),
            ("bus_url", &self.bus_url),
            ("work", &self.work),
            ("workers", &self.workers),
            ("premium", &self.premium),
            ("procs", &self.procs),
        ];
        for (field, value) in optional {
            if let Some(value) = value {
                flags.set_flag(field, value.clone());
            }
        }
        if let Some(profile) = &self.profile {
            flags.set_flag("profile", profile.display().to_string());
        }
        if self.closed_loop {
            flags.set_flag("closed_loop", "true");
        }
        if !self.fail_if.is_empty() {
            flags.set_flag("fail_if", self.fail_if.join(","));
        }
        if self.fail_if_missing {
            flags.set_flag("fail_if_missing", "true");
        }
        raw = raw.merge(flags);
        Ok(raw)
    }
}
