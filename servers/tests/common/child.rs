//! A commbench server in a child process, for what an in-process server cannot show honestly: its
//! own RSS, its own open-file limit, and its log output.

use std::{
    net::SocketAddr,
    process::Stdio,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use super::{within, STEP};

pub struct ChildServer {
    child: Child,
    pub addr: SocketAddr,
    pub pid: u32,
    stderr: Arc<Mutex<String>>,
}

impl ChildServer {
    /// `commbench-server --bind 127.0.0.1:0 ARGS…` with `RUST_LOG=info`.
    pub async fn start(args: &[&str]) -> Self {
        Self::spawn(Command::new(env!("CARGO_BIN_EXE_commbench-server")), args).await
    }

    /// The same, under `ulimit -n LIMIT` (soft and hard), set by a shell that then execs the server.
    pub async fn start_with_open_files(limit: u64, args: &[&str]) -> Self {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_commbench-server"));
        Self::spawn(command, args).await
    }

    async fn spawn(mut command: Command, args: &[&str]) -> Self {
        command
            .args(["--bind", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("the server binary starts");
        let pid = child.id().expect("a running child has a pid");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let log = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let addr = within("the child server to listen", STEP, async {
            loop {
                match stdout.next_line().await {
                    Ok(Some(line)) => {
                        if let Some(url) = line.strip_prefix("listening on http://") {
                            return url.parse::<SocketAddr>().expect("a socket address");
                        }
                    }
                    _ => panic!(
                        "the child server ended before listening: {}",
                        stderr.lock().unwrap_or_else(|p| p.into_inner())
                    ),
                }
            }
        })
        .await;
        // Keep reading stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        Self {
            child,
            addr,
            pid,
            stderr,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A `kB` field of `/proc/<pid>/status`, in bytes (`VmRSS`, `VmHWM` = peak RSS).
    pub fn status_bytes(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("/proc/<pid>/status of the child server");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid))
    }

    /// Ends the server (SIGKILL) and waits for it.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = within("the child server to exit", STEP, self.child.wait()).await;
    }
}
