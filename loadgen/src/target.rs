//! The server under test: the embedded commbench server (a child process of this binary, so its CPU
//! and memory are measured apart from the load generator) or an external URL.

use std::{net::SocketAddr, process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// Where clients connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `host:port` for the Host header.
    pub authority: String,
    /// Path of the target URL (generic patterns use it; `/` for the commbench server's root).
    pub path: String,
}

/// Why the target could not be reached or started.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("`{0}` is not a usable URL: {1}")]
    BadUrl(String, String),
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, std::io::Error),
    #[error("cannot start the embedded server ({0}): {1}")]
    Spawn(String, std::io::Error),
    #[error("the embedded server did not report its address within {0:?}")]
    NoAddress(Duration),
    #[error("the embedded server exited before it was ready ({0}); its error is printed above")]
    Exited(String),
    #[error("target {0} is unreachable: {1}")]
    Unreachable(String, String),
}

impl Target {
    /// Parses and resolves `http://host:port/path` (or `ws://`).
    pub async fn external(url: &str) -> Result<Self, TargetError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| TargetError::BadUrl(url.into(), e.to_string()))?;
        let authority = uri
            .authority()
            .ok_or_else(|| TargetError::BadUrl(url.into(), "no host".into()))?
            .to_string();
        let port = uri.port_u16().unwrap_or(80);
        let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| TargetError::Resolve(authority.clone(), e))?
            .next()
            .ok_or_else(|| {
                TargetError::Resolve(authority.clone(), std::io::ErrorKind::NotFound.into())
            })?;
        let path = uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        Ok(Self {
            addr,
            authority,
            path,
        })
    }

    /// Fails fast (within `timeout`) with a clear message when nothing listens at the target.
    pub async fn check_reachable(&self, timeout: Duration) -> Result<(), TargetError> {
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(self.addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(TargetError::Unreachable(
                self.authority.clone(),
                e.to_string(),
            )),
            Err(_) => Err(TargetError::Unreachable(
                self.authority.clone(),
                format!("no answer to connect within {timeout:?}"),
            )),
        }
    }
}

/// A child of the load generator (a server, a load worker): driven through its standard input
/// and output, its errors on ours, killed if dropped, logging only warnings unless `RUST_LOG` says
/// otherwise (its INFO lines would interleave with the progress display).
pub fn child_process(program: &str) -> Command {
    let mut command = Command::new(program);
    command
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    command
}

/// The embedded server process; stopped (gracefully, by closing its stdin) when dropped or stopped.
pub struct EmbeddedServer {
    child: Child,
    pub target: Target,
    pub pid: u32,
}

impl EmbeddedServer {
    /// Starts `<this executable> serve --bind 127.0.0.1:0 --exit-on-stdin-eof <extra args>` and waits
    /// for the `listening on http://…` line.
    pub async fn start(extra_args: &[String]) -> Result<Self, TargetError> {
        let exe =
            std::env::current_exe().map_err(|e| TargetError::Spawn("current_exe".into(), e))?;
        Self::start_program(&exe.to_string_lossy(), extra_args).await
    }

    pub async fn start_program(program: &str, extra_args: &[String]) -> Result<Self, TargetError> {
        let mut child = child_process(program)
            .args(["serve", "--bind", "127.0.0.1:0", "--exit-on-stdin-eof"])
            .args(extra_args)
            .spawn()
            .map_err(|e| TargetError::Spawn(program.to_owned(), e))?;
        let pid = child.id().unwrap_or(0);
        let stdout = child.stdout.take().ok_or_else(|| {
            TargetError::Spawn(program.to_owned(), std::io::ErrorKind::BrokenPipe.into())
        })?;
        let wait = Duration::from_secs(20);
        let mut lines = BufReader::new(stdout).lines();
        let address = tokio::time::timeout(wait, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("listening on ") {
                    return Some(url.trim().to_string());
                }
            }
            None::<String>
        })
        .await
        .ok()
        .flatten();
        let Some(url) = address else {
            return Err(match child.try_wait().ok().flatten() {
                Some(status) => TargetError::Exited(status.to_string()),
                None => TargetError::NoAddress(wait),
            });
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let target = Target::external(&url).await?;
        Ok(Self { child, target, pid })
    }

    /// Asks the server to shut down gracefully and waits (bounded) for it to exit.
    pub async fn stop(mut self) {
        drop(self.child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
