//! What the private broker launchers share: free loopback ports, a fresh directory per start, the
//! launch error, and waiting until a started broker answers.

use std::{future::Future, net::TcpListener, path::PathBuf, process::Child, time::Duration};

/// Why a private broker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("{what} is not installed; {hint}")]
    NotInstalled { what: &'static str, hint: String },
    #[error("cannot start {what}: {source}")]
    Spawn {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot create the directory {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("{what} on port {port} did not answer within {within:?}{detail}")]
    NotReady {
        what: &'static str,
        port: u16,
        within: Duration,
        detail: String,
    },
}

/// A free 127.0.0.1 port (free now; the broker binds it a moment later), below the kernel's
/// ephemeral range and bindable without `SO_REUSEADDR`: a port a load test's client connections
/// left in TIME_WAIT binds with reuse (as `TcpListener::bind` does) but not for a broker that checks
/// without it (RabbitMQ refuses its distribution port then).
pub fn free_port() -> std::io::Result<u16> {
    for _ in 0..200 {
        let port = fastrand::u16(20_000..32_000);
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(false)?;
        if socket.bind(([127, 0, 0, 1], port).into()).is_ok() {
            return Ok(port);
        }
    }
    TcpListener::bind("127.0.0.1:0")?
        .local_addr()
        .map(|addr| addr.port())
}

/// A fresh, empty temporary directory named after the broker, this process and `port`.
pub fn fresh_dir(kind: &str, port: u16) -> Result<PathBuf, BrokerError> {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "commbench-{kind}-{}-{port}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| BrokerError::Dir(dir.clone(), e))?;
    Ok(dir)
}

/// Kills a child (SIGKILL: no chance to save) and reaps it.
pub fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Kills a process that is not our child (a broker's VM behind its start script) by PID.
pub fn kill_pid(pid: u32) {
    signal(pid, "-KILL");
}

fn signal(pid: u32, signal: &str) {
    let _ = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// Asks a process that is not our child to stop (SIGTERM) and waits until it is gone; killed
/// (SIGKILL) when it is still there after `within`.
pub async fn stop_pid(pid: u32, within: Duration) {
    signal(pid, "-TERM");
    // Gone, or a zombie its parent (a start script) has not reaped yet.
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
    };
    let deadline = tokio::time::Instant::now() + within;
    while running() {
        if tokio::time::Instant::now() >= deadline {
            kill_pid(pid);
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `ready` every 50 ms until it succeeds, `child` exits, or `within` passes.
pub async fn wait_ready<F, Fut>(
    what: &'static str,
    port: u16,
    within: Duration,
    child: &mut Option<Child>,
    mut ready: F,
) -> Result<(), BrokerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            *child = None;
            return Err(BrokerError::NotReady {
                what,
                port,
                within,
                detail: format!(" (it exited: {status}; is the port taken?)"),
            });
        }
        let last = match tokio::time::timeout(Duration::from_secs(2), ready()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => error,
            Err(_) => "no answer within 2s".to_owned(),
        };
        if tokio::time::Instant::now() >= deadline {
            kill(child);
            return Err(BrokerError::NotReady {
                what,
                port,
                within,
                detail: format!(": {last}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// True when `program` can be started (`program args` exits successfully).
pub fn runs(program: &std::path::Path, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
