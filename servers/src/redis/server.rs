//! A private `redis-server` child process (from PATH) on a free loopback port with a directory of its
//! own: what `commbench run --bus redis` starts and what the tests use. Killed and removed on drop;
//! dies with this process even when that is SIGKILLed (`crate::child`).

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

/// How long a started (or restarted) `redis-server` may take to answer PING.
const READY_WITHIN: Duration = Duration::from_secs(10);
/// Free-port races (another process takes the port between our probe and Redis binding it) are rare;
/// a few attempts make them harmless.
const START_ATTEMPTS: usize = 3;

/// The command that installs `redis-server`, quoted in every "not found" error.
pub const INSTALL_HINT: &str =
    "install it with `sudo apt-get install -y redis-server` (or run scripts/install-test-deps.sh), \
     or use an existing Redis with --bus-url redis://host:port";

#[derive(Debug, thiserror::Error)]
pub enum RedisServerError {
    #[error("redis-server was not found on PATH; {INSTALL_HINT}")]
    NotInstalled,
    #[error("cannot start redis-server: {0}")]
    Spawn(std::io::Error),
    #[error("cannot create the Redis directory {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("redis-server on port {port} did not answer PING within {within:?}{detail}")]
    NotReady {
        port: u16,
        within: Duration,
        detail: String,
    },
}

/// True when `redis-server` can be started from PATH.
pub fn installed() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// How the private Redis runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisOptions {
    /// Append-only file with fsync on every write, so a killed and restarted Redis has lost nothing it
    /// acknowledged (what the broker-outage tests need). Off: nothing is written to disk.
    pub durable: bool,
}

/// A running private `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    options: RedisOptions,
    url: String,
}

impl RedisServer {
    /// Starts `redis-server` on a free 127.0.0.1 port in a fresh temporary directory and waits until
    /// it answers PING.
    pub async fn start(options: RedisOptions) -> Result<Self, RedisServerError> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port().map_err(RedisServerError::Spawn)?;
            let dir = crate::broker::process::fresh_dir_path("redis", port);
            std::fs::create_dir_all(&dir).map_err(|e| RedisServerError::Dir(dir.clone(), e))?;
            let mut server = Self {
                child: None,
                dir,
                port,
                options,
                url: format!("redis://127.0.0.1:{port}"),
            };
            match server.launch().await {
                Ok(()) => return Ok(server),
                Err(e @ (RedisServerError::NotInstalled | RedisServerError::Spawn(_))) => {
                    return Err(e)
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(RedisServerError::NotReady {
            port: 0,
            within: READY_WITHIN,
            detail: String::new(),
        }))
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id while it runs (for CPU and memory readings from /proc).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its data directory (the append-only file lives here when durable).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills the process (SIGKILL: no chance to save), keeping the directory for a restart.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (after [`kill`](Self::kill)); a durable Redis
    /// comes back with everything it had acknowledged.
    pub async fn restart(&mut self) -> Result<(), RedisServerError> {
        self.kill();
        self.launch().await
    }

    async fn launch(&mut self) -> Result<(), RedisServerError> {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--daemonize", "no", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.options.durable {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        let child = crate::child::spawn(command).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RedisServerError::NotInstalled,
            _ => RedisServerError::Spawn(e),
        })?;
        self.child = Some(child);
        self.wait_for_ping().await
    }

    async fn wait_for_ping(&mut self) -> Result<(), RedisServerError> {
        let client =
            redis::Client::open(self.url.as_str()).map_err(|e| RedisServerError::NotReady {
                port: self.port,
                within: READY_WITHIN,
                detail: format!(": {e}"),
            })?;
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(RedisServerError::NotReady {
                    port: self.port,
                    within: READY_WITHIN,
                    detail: format!(" (it exited: {status}; is the port taken?)"),
                });
            }
            let attempt = tokio::time::timeout(Duration::from_secs(1), async {
                let mut connection = client.get_multiplexed_async_connection().await?;
                redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
            })
            .await;
            if matches!(attempt, Ok(Ok(_))) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                self.kill();
                return Err(RedisServerError::NotReady {
                    port: self.port,
                    within: READY_WITHIN,
                    detail: String::new(),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> std::io::Result<u16> {
    TcpListener::bind("127.0.0.1:0")?
        .local_addr()
        .map(|addr| addr.port())
}
