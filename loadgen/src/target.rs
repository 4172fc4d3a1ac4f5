//! The server under test: the embedded commbench server (a child process of this binary, so its CPU
//! and memory are measured apart from the load generator) or an external URL.

use std::{net::SocketAddr, process::Stdio, time::Duration};

use commbench_servers::child;
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
    #[error("the server exited before it was ready ({0}); its error is printed above")]
    Exited(String),
    #[error("target {0} is unreachable: {1}")]
    Unreachable(String, String),
    #[error("`{0}` did not say it was ready within {1:?}")]
    NotReady(String, Duration),
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

    /// `path` under the target URL's path: `/api` + `/sse/t` = `/api/sse/t`; an empty `path` is
    /// the target URL's own path and query.
    pub fn join(&self, path: &str) -> String {
        if path.is_empty() {
            return self.path.clone();
        }
        let base = self
            .path
            .split('?')
            .next()
            .unwrap_or("")
            .trim_end_matches('/');
        format!("{base}{path}")
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
/// otherwise (its INFO lines would interleave with the progress display). Start it with
/// [`child::spawn_tokio`], so that it dies with the load generator.
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

/// Reads a started server's standard output until `ready` finds the line that says it is ready
/// (and the base URL in it), within `wait`; then keeps draining it so the child never blocks on a
/// full pipe. A server that exits or stays silent is killed and the error says which.
pub async fn ready_line(
    child: &mut Child,
    shown: &str,
    wait: Duration,
    ready: impl Fn(&str) -> Option<String>,
) -> Result<String, TargetError> {
    let stdout = child.stdout.take().ok_or_else(|| {
        TargetError::Spawn(shown.to_owned(), std::io::ErrorKind::BrokenPipe.into())
    })?;
    let mut lines = BufReader::new(stdout).lines();
    let found = tokio::time::timeout(wait, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(url) = ready(&line) {
                return Some(url);
            }
        }
        // Standard output closed: the server is exiting.
        None
    })
    .await;
    let error = match found {
        Ok(Some(url)) => {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(url);
        }
        Ok(None) => match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
            Ok(Ok(status)) => TargetError::Exited(format!("`{shown}`: {status}")),
            _ => TargetError::NotReady(shown.to_owned(), wait),
        },
        Err(_) => TargetError::NotReady(shown.to_owned(), wait),
    };
    let _ = child.kill().await;
    Err(error)
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
        let mut command = child_process(program);
        command
            .args(["serve", "--bind", "127.0.0.1:0", "--exit-on-stdin-eof"])
            .args(extra_args);
        let mut child =
            child::spawn_tokio(command).map_err(|e| TargetError::Spawn(program.to_owned(), e))?;
        let pid = child.id().unwrap_or(0);
        let wait = Duration::from_secs(20);
        let url = ready_line(&mut child, program, wait, |line| {
            line.strip_prefix("listening on ")
                .map(|url| url.trim().to_owned())
        })
        .await?;
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
