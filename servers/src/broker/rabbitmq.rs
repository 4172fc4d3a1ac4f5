//! A private RabbitMQ node: its own `epmd` (on a free port, so it never meets the system's) and a node
//! named after its port, with mnesia, logs and config in a fresh temporary directory; AMQP on a free
//! 127.0.0.1 port. Both processes are stopped by PID, and die with this process (`crate::child`);
//! the directory is removed on drop. Startup takes about 5 s (more on a loaded machine).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::process::{self, BrokerError};

/// How long a starting node may take to accept an AMQP connection.
const READY_WITHIN: Duration = Duration::from_secs(60);
const WHAT: &str = "rabbitmq-server";
/// Channels one connection may open on a private node (RabbitMQ's default is 2047).
const CHANNEL_MAX: u32 = 16_383;
/// How long a graceful stop may take before the node is killed.
const STOP_WITHIN: Duration = Duration::from_secs(30);
/// How long a started `epmd` may take to accept a connection.
const EPMD_READY_WITHIN: Duration = Duration::from_secs(10);

/// How to install RabbitMQ, quoted in every "not installed" message.
pub fn install_hint() -> String {
    format!(
        "install it with `sudo apt-get install -y rabbitmq-server` (or run {}), or use an existing \
         broker with --bus-url amqp://host:port",
        super::INSTALL_SCRIPT
    )
}

/// The node's start script: `COMMBENCH_RABBITMQ_SERVER`, Debian's unwrapped script (the one in
/// /usr/sbin switches to the `rabbitmq` user and drops our environment), or `rabbitmq-server` on PATH.
fn server_script() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("COMMBENCH_RABBITMQ_SERVER") {
        return Some(PathBuf::from(path));
    }
    let debian = Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
    if debian.exists() {
        return Some(debian.to_owned());
    }
    which("rabbitmq-server")
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    })
}

/// True when a RabbitMQ node and `epmd` can be started.
pub fn installed() -> bool {
    server_script().is_some() && which("epmd").is_some()
}

/// A running private RabbitMQ node.
pub struct RabbitServer {
    /// The start script, which `exec`s the VM (so this is the VM too; its PID is in the pid file).
    script: Option<Child>,
    epmd: Option<Child>,
    vm_pid: Option<u32>,
    dir: PathBuf,
    port: u16,
    /// Kept across restarts: the node's name and its epmd must not change.
    epmd_port: u16,
    dist_port: u16,
    url: String,
}

impl RabbitServer {
    /// Starts `epmd` and a node on free ports in a fresh directory, and waits until it accepts an
    /// AMQP connection.
    pub async fn start() -> Result<Self, BrokerError> {
        let not_installed = || BrokerError::NotInstalled {
            what: WHAT,
            hint: install_hint(),
        };
        if !installed() {
            return Err(not_installed());
        }
        let port =
            process::free_port().map_err(|source| BrokerError::Spawn { what: WHAT, source })?;
        let (epmd_port, dist_port) = (
            process::free_port().map_err(|source| BrokerError::Spawn { what: WHAT, source })?,
            process::free_port().map_err(|source| BrokerError::Spawn { what: WHAT, source })?,
        );
        let dir = process::fresh_dir("rabbitmq", port)?;
        let mut server = Self {
            script: None,
            epmd: None,
            vm_pid: None,
            dir,
            port,
            epmd_port,
            dist_port,
            url: format!("amqp://127.0.0.1:{port}"),
        };
        server.launch().await?;
        Ok(server)
    }

    /// `amqp://127.0.0.1:{port}` (user and password `guest`).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Erlang VM's process id while it runs (for CPU and memory readings from /proc).
    pub fn pid(&self) -> Option<u32> {
        self.vm_pid
    }

    /// Every process it runs (start script, VM, epmd), for a watchdog that outlives the owner.
    pub fn pids(&self) -> Vec<u32> {
        let children = [&self.script, &self.epmd];
        let mut pids: Vec<u32> = children
            .iter()
            .filter_map(|c| c.as_ref().map(Child::id))
            .collect();
        pids.extend(self.vm_pid);
        pids
    }

    /// Its directory (mnesia, logs, config).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills the node (SIGKILL), keeping its directory (and what it stored) and its `epmd`.
    pub fn kill(&mut self) {
        // The pid file, when the node got as far as writing it but not as far as answering.
        let pid = self.vm_pid.take().or_else(|| {
            std::fs::read_to_string(self.dir.join("pid"))
                .ok()
                .and_then(|text| text.trim().parse().ok())
        });
        if let Some(pid) = pid {
            process::kill_pid(pid);
        }
        process::kill(&mut self.script);
    }

    /// Starts the node again on the same port and directory; durable queues and streams come back
    /// with what they had confirmed.
    /// Makes a later SIGKILL survivable for streams: declares one (which starts the node's stream
    /// coordinator), then stops the node gracefully and starts it again. The coordinator's
    /// registration lives in a `dets` table the node saves lazily (within minutes, or at a graceful
    /// stop); a node killed before that comes back without it, and every stream stays `down or
    /// inaccessible` for good — undeletable, too. A node that has run for minutes is settled anyway.
    pub async fn settle(&mut self) -> Result<(), BrokerError> {
        use amqprs::{
            channel::QueueDeclareArguments,
            connection::{Connection, OpenConnectionArguments},
            FieldTable, FieldValue,
        };
        let not_ready = |detail: String| BrokerError::NotReady {
            what: WHAT,
            port: self.port,
            within: READY_WITHIN,
            detail: format!(": settling: {detail}"),
        };
        let args = OpenConnectionArguments::new("127.0.0.1", self.port, "guest", "guest");
        let declared = async {
            let connection = Connection::open(&args).await?;
            let channel = connection.open_channel(None).await?;
            let mut arguments = FieldTable::new();
            if let (Ok(key), Ok(value)) = ("x-queue-type".try_into(), "stream".try_into()) {
                arguments.insert(key, FieldValue::S(value));
            }
            let declare = QueueDeclareArguments::new("cb.settle")
                .durable(true)
                .arguments(arguments)
                .finish();
            channel.queue_declare(declare).await?;
            let _ = connection.close().await;
            Ok::<_, amqprs::error::Error>(())
        };
        declared.await.map_err(|e| not_ready(e.to_string()))?;
        if let Some(pid) = self.vm_pid.take() {
            process::stop_pid(pid, STOP_WITHIN).await;
        }
        process::kill(&mut self.script);
        self.launch().await
    }

    /// Kills the node (SIGKILL) and starts it again in the same directory, on the same ports.
    pub async fn restart(&mut self) -> Result<(), BrokerError> {
        self.kill();
        self.launch().await
    }

    async fn launch(&mut self) -> Result<(), BrokerError> {
        let spawn = |source| BrokerError::Spawn { what: WHAT, source };
        let epmd_port = self.epmd_port;
        if self.epmd.is_none() {
            // In the foreground (no `-daemon`): our child, so it dies with us. It must answer
            // before the node starts, or the node starts a daemon `epmd` of its own, which would
            // outlive us.
            let mut epmd = Command::new("epmd");
            epmd.args(["-port", &epmd_port.to_string(), "-address", "127.0.0.1"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            self.epmd = Some(crate::child::spawn(epmd).map_err(spawn)?);
            process::wait_ready(
                "epmd",
                epmd_port,
                EPMD_READY_WITHIN,
                &mut self.epmd,
                || async move {
                    tokio::net::TcpStream::connect(("127.0.0.1", epmd_port))
                        .await
                        .map(drop)
                        .map_err(|e| e.to_string())
                },
            )
            .await?;
        }
        let dir = &self.dir;
        // A server instance holds a channel per log it follows (a stream consumer each): room for
        // more than the default 2047 a connection may open.
        let config = format!(
            "listeners.tcp.1 = 127.0.0.1:{}\nloopback_users = none\nchannel_max = {CHANNEL_MAX}\n\
             log.console = false\nlog.file.level = warning\n",
            self.port
        );
        std::fs::write(dir.join("rabbitmq.conf"), config)
            .and_then(|()| std::fs::write(dir.join("enabled_plugins"), "[].\n"))
            .and_then(|()| std::fs::create_dir_all(dir.join("home")))
            .map_err(|e| BrokerError::Dir(dir.clone(), e))?;
        let _ = std::fs::remove_file(dir.join("pid"));
        let script = server_script().ok_or_else(|| BrokerError::NotInstalled {
            what: WHAT,
            hint: install_hint(),
        })?;
        let mut command = Command::new(script);
        command
            // An Erlang crash dump lands in the working directory: the node's own.
            .current_dir(dir)
            // The script `exec`s the VM when `$detached` is set (as it does under systemd) instead
            // of running it behind a shell that forwards signals: then the VM is the child we
            // started, and keeps its parent-death signal. That shell made the VM ignore SIGINT
            // (`+B i`); so does this.
            .env("detached", "true")
            .env("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "+B i")
            .env("HOME", dir.join("home"))
            .env(
                "RABBITMQ_NODENAME",
                format!("commbench{}@localhost", self.port),
            )
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("ERL_EPMD_PORT", epmd_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .stdin(Stdio::null())
            // Whatever the node says before its log is open (why it did not start) lands here.
            .stdout(output(dir)?)
            .stderr(output(dir)?);
        self.script = Some(crate::child::spawn(command).map_err(spawn)?);
        let (port, pid_file) = (self.port, dir.join("pid"));
        process::wait_ready(WHAT, port, READY_WITHIN, &mut self.script, || ready(port)).await?;
        self.vm_pid = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|text| text.trim().parse().ok());
        let script_pid = self.script.as_ref().map(Child::id);
        if let (Some(vm), Some(script)) = (self.vm_pid, script_pid) {
            if vm != script {
                // Another start script (COMMBENCH_RABBITMQ_SERVER, another RabbitMQ version) that
                // runs the VM beside itself: the VM would outlive a SIGKILLed commbench.
                tracing::warn!(
                    vm,
                    script,
                    "the RabbitMQ start script did not exec the Erlang VM: if this process is \
                     killed with SIGKILL, the VM (pid {vm}) will keep running"
                );
            }
        }
        Ok(())
    }
}

/// The node's console output, appended to `out.log` in its directory.
fn output(dir: &Path) -> Result<Stdio, BrokerError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("out.log"))
        .map(Stdio::from)
        .map_err(|e| BrokerError::Dir(dir.to_owned(), e))
}

/// Ready: the node accepts an AMQP connection.
async fn ready(port: u16) -> Result<(), String> {
    use amqprs::connection::{Connection, OpenConnectionArguments};
    let args = OpenConnectionArguments::new("127.0.0.1", port, "guest", "guest");
    let connection = Connection::open(&args).await.map_err(|e| e.to_string())?;
    let _ = connection.close().await;
    Ok(())
}

impl Drop for RabbitServer {
    fn drop(&mut self) {
        self.kill();
        process::kill(&mut self.epmd);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
