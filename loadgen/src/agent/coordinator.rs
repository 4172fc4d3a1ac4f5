//! The coordinator's end of a distributed run: opens a session in Redis, waits until every shard's
//! agent has said hello, then hands each cell's commands to the agents and their reports to the
//! runner's worker pool, converting the run clock's origin to Redis time on the way out.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use redis::aio::MultiplexedConnection;
use tokio::{sync::mpsc, task::JoinHandle};

use super::{
    clock_sync::{self, ClockOffset},
    keys::{self, Keys, Tagged},
    AgentError,
};
use crate::procs::{
    pool::{Links, Up},
    protocol::{Command, Hello, Report},
};

/// Where the reader hands reports: the current cell's pool, once there is one.
type Sink = Arc<Mutex<Option<mpsc::UnboundedSender<(usize, Up)>>>>;

/// A session of agents, shared by every cell of the run.
pub struct Coordinator {
    url: String,
    keys: Keys,
    session: String,
    agents: Vec<Hello>,
    clock: ClockOffset,
    connection: MultiplexedConnection,
    current: Sink,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("url", &self.url)
            .field("session", &self.session)
            .field("agents", &self.agents.len())
            .finish()
    }
}

impl Coordinator {
    /// Opens the session `name` on the Redis at `url` and waits at most `wait` for agents of
    /// shards `0..count` to register.
    pub async fn connect(
        url: &str,
        name: &str,
        count: usize,
        wait: Duration,
    ) -> Result<Self, AgentError> {
        let unreachable = |detail: String| AgentError::Unreachable {
            url: url.to_owned(),
            detail,
        };
        let mut connection = keys::connect(url).await?;
        let clock = clock_sync::measure(&mut connection)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let keys = Keys::new(name);
        let session = keys::nonce();
        let set_session = |connection: &mut MultiplexedConnection| {
            let mut connection = connection.clone();
            let (key, session) = (keys.session(), session.clone());
            async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(session)
                    .arg("EX")
                    .arg(keys::SESSION_TTL_S)
                    .query_async::<()>(&mut connection)
                    .await
            }
        };
        set_session(&mut connection)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let heartbeat = {
            let mut connection = connection.clone();
            let (key, session) = (keys.session(), session.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(keys::SESSION_TTL_S / 3)).await;
                    let _: Result<(), _> = redis::cmd("SET")
                        .arg(&key)
                        .arg(&session)
                        .arg("EX")
                        .arg(keys::SESSION_TTL_S)
                        .query_async(&mut connection)
                        .await;
                }
            })
        };
        let agents = match register(
            &mut connection,
            &keys,
            &session,
            count,
            Instant::now() + wait,
        )
        .await
        {
            Ok(agents) => agents,
            Err(error) => {
                heartbeat.abort();
                let _: Result<(), _> = redis::cmd("DEL")
                    .arg(keys.session())
                    .query_async(&mut connection)
                    .await;
                return Err(error);
            }
        };
        let current = Arc::new(Mutex::new(None));
        let reader = tokio::spawn(read_up(
            url.to_owned(),
            keys.up(&session),
            agents.iter().map(|a| a.nonce.clone()).collect(),
            current.clone(),
        ));
        Ok(Self {
            url: url.to_owned(),
            keys,
            session,
            agents,
            clock,
            connection,
            current,
            tasks: vec![heartbeat, reader],
        })
    }

    /// How many agents host the clients.
    pub fn count(&self) -> usize {
        self.agents.len()
    }

    /// The largest clock error between the coordinator and an agent (ns): both errors added.
    pub fn clock_error_ns(&self) -> u64 {
        let worst = self.agents.iter().map(|a| a.clock_error_ns).max();
        worst.unwrap_or(0) + self.clock.error_ns
    }

    /// The links of one cell: commands go to the agents' lists, reports come from the reader.
    pub fn links(&self) -> Links {
        let (up_tx, up) = mpsc::unbounded_channel();
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(up_tx);
        let mut down = Vec::new();
        for agent in &self.agents {
            let (tx, mut commands) = mpsc::unbounded_channel::<Command>();
            let mut connection = self.connection.clone();
            let key = self.keys.down(&self.session, agent.shard, &agent.nonce);
            let clock = self.clock;
            tokio::spawn(async move {
                while let Some(mut command) = commands.recv().await {
                    if let Command::Start(spec) = &mut command {
                        spec.origin_ns = clock.to_redis(spec.origin_ns);
                    }
                    if let Err(error) = keys::push(&mut connection, &key, &command).await {
                        tracing::warn!(%error, %key, "cannot send a command to an agent");
                    }
                }
            });
            down.push(tx);
        }
        Links {
            down,
            up,
            names: self
                .agents
                .iter()
                .map(|a| format!("agent {}/{} on {} (pid {})", a.shard, a.of, a.host, a.pid))
                .collect(),
            clock_error_ns: self.clock_error_ns(),
        }
    }

    /// Tells every agent the run is over and closes the session.
    pub async fn finish(&self) {
        let mut connection = self.connection.clone();
        for agent in &self.agents {
            let key = self.keys.down(&self.session, agent.shard, &agent.nonce);
            let _ = keys::push(&mut connection, &key, &Command::Bye).await;
        }
        let _: Result<(), _> = redis::cmd("DEL")
            .arg(self.keys.session())
            .query_async(&mut connection)
            .await;
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Waits until shards `0..count` have each an agent; refuses the others.
async fn register(
    connection: &mut MultiplexedConnection,
    keys: &Keys,
    session: &str,
    count: usize,
    deadline: Instant,
) -> Result<Vec<Hello>, AgentError> {
    let mut agents: Vec<Option<Hello>> = vec![None; count];
    while agents.iter().any(Option::is_none) {
        if Instant::now() >= deadline {
            let missing: Vec<String> = (0..count)
                .filter(|i| agents[*i].is_none())
                .map(|i| i.to_string())
                .collect();
            return Err(AgentError::Missing {
                registered: count - missing.len(),
                count,
                missing: missing.join(", "),
            });
        }
        let popped = keys::pop(connection, &keys.hello(session))
            .await
            .map_err(|e| AgentError::Lost(e.to_string()))?;
        let Some(text) = popped else { continue };
        let Ok(hello) = serde_json::from_str::<Hello>(&text) else {
            tracing::warn!(%text, "ignoring a hello that does not parse");
            continue;
        };
        let refusal = if hello.of != count {
            Some(format!("this run has {count} agents, not {}", hello.of))
        } else if hello.shard >= count {
            Some(format!("shard {} is not below {count}", hello.shard))
        } else if agents[hello.shard].is_some() {
            Some(format!("shard {} already has an agent", hello.shard))
        } else {
            None
        };
        let key = keys.down(session, hello.shard, &hello.nonce);
        match refusal {
            Some(reason) => {
                tracing::warn!(%reason, "refusing an agent");
                let _ = keys::push(connection, &key, &Command::Refuse { reason }).await;
            }
            None => {
                let shard = hello.shard;
                agents[shard] = Some(hello);
            }
        }
    }
    Ok(agents.into_iter().flatten().collect())
}

/// Reads every agent's reports and hands them to the current cell's pool.
async fn read_up(url: String, key: String, nonces: Vec<String>, current: Sink) {
    let Ok(mut connection) = keys::connect(&url).await else {
        tracing::warn!(%url, "cannot read the agents' reports");
        return;
    };
    loop {
        let text = match keys::pop(&mut connection, &key).await {
            Ok(Some(text)) => text,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(%error, "reading the agents' reports failed; retrying");
                tokio::time::sleep(keys::POLL).await;
                continue;
            }
        };
        let Ok(tagged) = serde_json::from_str::<Tagged<Report>>(&text) else {
            tracing::warn!("ignoring a report that does not parse");
            continue;
        };
        if nonces.get(tagged.shard) != Some(&tagged.nonce) {
            continue;
        }
        let sink = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(sink) = sink {
            let _ = sink.send((tagged.shard, Up::Report(tagged.message)));
        }
    }
}
