//! A private Kafka-compatible broker: `tansu` (a Rust implementation of the Kafka protocol, built by
//! `scripts/install-test-deps.sh` into `~/.cache/commbench/tansu-0.6.0`) on a free 127.0.0.1 port with
//! in-memory storage. The only storage this build has is memory (`--features dynostore` offers
//! `memory://` and S3), so a killed and restarted broker comes back **empty**: topics, offsets and
//! records are gone. Stopped by PID.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::process::{self, BrokerError};

/// How long a starting broker may take to answer a metadata request.
const READY_WITHIN: Duration = Duration::from_secs(30);
const WHAT: &str = "tansu (a Kafka-compatible broker)";
/// The version the install script builds, and the cache directory it builds into.
pub const VERSION: &str = "0.6.0";

/// How to install tansu, quoted in every "not installed" message.
pub fn install_hint() -> String {
    format!(
        "build it with {} (`cargo install tansu --version {VERSION} --features dynostore --root \
         ~/.cache/commbench/tansu-{VERSION}`, about 16 minutes on 2 cores), set COMMBENCH_TANSU to \
         its path, or use an existing broker with --bus-url kafka://host:port",
        super::INSTALL_SCRIPT
    )
}

/// The binary: `COMMBENCH_TANSU`, `tansu` on PATH, or the install script's cache.
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("COMMBENCH_TANSU") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("tansu"))
            .find(|path| path.is_file())
    });
    on_path.or_else(|| {
        let home = std::env::var_os("HOME")?;
        let cached = PathBuf::from(home)
            .join(".cache/commbench")
            .join(format!("tansu-{VERSION}"))
            .join("bin/tansu");
        cached.is_file().then_some(cached)
    })
}

/// True when a tansu broker can be started.
pub fn installed() -> bool {
    binary().is_some_and(|path| process::runs(&path, &["--version"]))
}

/// A running private tansu broker.
pub struct TansuServer {
    child: Option<Child>,
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    url: String,
}

impl TansuServer {
    /// Starts tansu on a free port with memory storage and waits until it answers.
    pub async fn start() -> Result<Self, BrokerError> {
        let binary = binary().ok_or_else(|| BrokerError::NotInstalled {
            what: WHAT,
            hint: install_hint(),
        })?;
        let port =
            process::free_port().map_err(|source| BrokerError::Spawn { what: WHAT, source })?;
        let dir = process::fresh_dir("tansu", port)?;
        let mut server = Self {
            child: None,
            binary,
            dir,
            port,
            url: format!("kafka://127.0.0.1:{port}"),
        };
        server.launch().await?;
        Ok(server)
    }

    /// `kafka://127.0.0.1:{port}`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `127.0.0.1:{port}`, what a Kafka client bootstraps from.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its working directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Kills the broker (SIGKILL); with memory storage everything it held is lost.
    pub fn kill(&mut self) {
        process::kill(&mut self.child);
    }

    /// Starts it again on the same port: an empty broker (memory storage).
    pub async fn restart(&mut self) -> Result<(), BrokerError> {
        self.kill();
        self.launch().await
    }

    async fn launch(&mut self) -> Result<(), BrokerError> {
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let mut command = Command::new(&self.binary);
        command
            .arg("broker")
            .args(["--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .args(["--storage-engine", "memory://tansu/"])
            .current_dir(&self.dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = crate::child::spawn(command)
            .map_err(|source| BrokerError::Spawn { what: WHAT, source })?;
        self.child = Some(child);
        let address = self.address();
        process::wait_ready(WHAT, self.port, READY_WITHIN, &mut self.child, || {
            let address = address.clone();
            async move {
                let client = rskafka::client::ClientBuilder::new(vec![address])
                    .build()
                    .await
                    .map_err(|e| e.to_string())?;
                client.list_topics().await.map_err(|e| e.to_string())?;
                Ok(())
            }
        })
        .await
    }
}

impl Drop for TansuServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
