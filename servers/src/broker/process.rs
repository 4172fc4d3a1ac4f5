//! What the private broker launchers share: free loopback ports, a fresh directory per start (and
//! sweeping those of killed runs), the launch error, and waiting until a started broker answers.

use std::{
    future::Future,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Child,
    time::Duration,
};

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

/// The brokers whose directories [`fresh_dir_path`] names (`commbench-{kind}-…`).
const KINDS: [&str; 3] = ["redis", "rabbitmq", "tansu"];

/// A fresh, empty temporary directory named after the broker, this process and `port`.
pub fn fresh_dir(kind: &str, port: u16) -> Result<PathBuf, BrokerError> {
    let dir = fresh_dir_path(kind, port);
    std::fs::create_dir_all(&dir).map_err(|e| BrokerError::Dir(dir.clone(), e))?;
    Ok(dir)
}

/// `$TMPDIR/commbench-{kind}-{this pid}-{port}-{n}`, a name no other start uses. The first call in
/// a process sweeps the directories a killed process left behind (its brokers died with it; a
/// process that exits normally removes its own).
pub(crate) fn fresh_dir_path(kind: &str, port: u16) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static SWEPT: std::sync::Once = std::sync::Once::new();
    debug_assert!(
        KINDS.contains(&kind),
        "sweep_stale_dirs does not know `{kind}`"
    );
    let temp = std::env::temp_dir();
    SWEPT.call_once(|| sweep_stale_dirs(&temp));
    temp.join(format!(
        "commbench-{kind}-{}-{port}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Relaxed)
    ))
}

/// Removes the broker directories in `temp` whose owner process is gone: exactly the names
/// [`fresh_dir_path`] makes, real directories (not symlinks), and never one whose PID is running
/// (even if a later process reuses it). Others' directories fail to be removed, and are left.
fn sweep_stale_dirs(temp: &Path) {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let owner = entry.file_name().to_str().and_then(owner_pid);
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if let (Some(pid), true) = (owner, is_dir) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// The owner's PID in a name [`fresh_dir_path`] made: `commbench-{kind}-{pid}-{port}-{n}`.
fn owner_pid(name: &str) -> Option<u32> {
    let (kind, rest) = name.strip_prefix("commbench-")?.split_once('-')?;
    let mut numbers = rest.split('-');
    let pid = numbers.next()?.parse().ok()?;
    let port = numbers.next()?.parse::<u16>().ok();
    let n = numbers.next()?.parse::<u64>().ok();
    let whole = KINDS.contains(&kind) && port.is_some() && n.is_some() && numbers.next().is_none();
    whole.then_some(pid)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_broker_directory_names_have_an_owner() {
        assert_eq!(owner_pid("commbench-redis-123-6379-0"), Some(123));
        assert_eq!(owner_pid("commbench-rabbitmq-9-20001-14"), Some(9));
        assert_eq!(owner_pid("commbench-tansu-77-31000-2"), Some(77));
        for other in [
            "commbench-lg-1280-procs-one",
            "commbench-redis-123-6379",
            "commbench-redis-123-6379-0-1",
            "commbench-redis-x-6379-0",
            "commbench-redis-123-70000-0",
            "commbench-kafka-123-6379-0",
            "commbench-bus-url-32109",
            "redis-123-6379-0",
        ] {
            assert_eq!(owner_pid(other), None, "{other}");
        }
    }

    #[test]
    fn the_sweep_removes_dead_owners_directories_only() {
        let temp =
            std::env::temp_dir().join(format!("commbench-sweep-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&temp);
        // A PID above the kernel's limit (pid_max is at most 2^22) never runs.
        let dead = temp.join("commbench-redis-4194999-6379-0");
        let live = temp.join(format!("commbench-tansu-{}-6379-0", std::process::id()));
        let foreign = temp.join("commbench-lg-4194999-procs");
        for dir in [&dead, &live, &foreign] {
            std::fs::create_dir_all(dir.join("inside")).unwrap_or_else(|e| panic!("{e}"));
        }
        sweep_stale_dirs(&temp);
        let (dead_gone, live_kept, foreign_kept) =
            (!dead.exists(), live.exists(), foreign.exists());
        let _ = std::fs::remove_dir_all(&temp);
        assert!(dead_gone, "a dead owner's directory was kept");
        assert!(live_kept, "a running owner's directory was removed");
        assert!(
            foreign_kept,
            "a directory that is not a broker's was removed"
        );
    }
}
