//! How a profile starts its server: the command, working directory and environment, the readiness
//! check, and the stop signal. The server runs as a child of the load generator, so its CPU and
//! memory are read from `/proc` like the embedded server's.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use commbench_servers::{child, units::parse_duration};
use nix::{sys::signal::killpg, unistd::Pid};
use serde::Deserialize;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use super::{
    template::{Template, Values, Var},
    Field,
};
use crate::target::{ready_line, Target, TargetError};

/// The `[start]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStart {
    command: Vec<String>,
    cwd: Option<String>,
    env: Option<toml::Table>,
    ready_line: Option<String>,
    ready_url: Option<String>,
    ready_timeout: Option<String>,
    stop_signal: Option<String>,
    stop_grace: Option<String>,
    install: Option<String>,
    requires: Option<Vec<String>>,
}

/// How the server says it is ready.
#[derive(Debug, Clone)]
pub enum Readiness {
    /// A line on its standard output: the text around `{base_url}` (the base URL is the
    /// whitespace-free word there), or a line containing the text when the profile names the URL.
    Line(Template),
    /// A path on the base URL that answers 2xx once the server is up.
    Url(String),
}

/// The signals a profile may stop its server with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Int,
    Hup,
    Quit,
    Kill,
}

impl Signal {
    fn parse(text: &str) -> Option<Self> {
        let name = text.trim().to_ascii_uppercase();
        match name.strip_prefix("SIG").unwrap_or(&name) {
            "TERM" => Some(Signal::Term),
            "INT" => Some(Signal::Int),
            "HUP" => Some(Signal::Hup),
            "QUIT" => Some(Signal::Quit),
            "KILL" => Some(Signal::Kill),
            _ => None,
        }
    }

    fn nix(self) -> nix::sys::signal::Signal {
        use nix::sys::signal::Signal as Nix;
        match self {
            Signal::Term => Nix::SIGTERM,
            Signal::Int => Nix::SIGINT,
            Signal::Hup => Nix::SIGHUP,
            Signal::Quit => Nix::SIGQUIT,
            Signal::Kill => Nix::SIGKILL,
        }
    }
}

/// A checked `[start]`.
#[derive(Debug, Clone)]
pub struct StartSpec {
    pub command: Vec<Template>,
    /// Absolute: relative paths in the profile are relative to the profile file.
    pub cwd: PathBuf,
    pub env: Vec<(String, Template)>,
    pub ready: Readiness,
    pub ready_timeout: Duration,
    pub stop_signal: Signal,
    pub stop_grace: Duration,
    /// The command that installs what the server needs, named when something is missing.
    pub install: Option<String>,
    /// Files or directories (relative to `cwd`) that must exist, e.g. installed packages.
    pub requires: Vec<PathBuf>,
}

fn duration(
    text: Option<&str>,
    default: &str,
    key: &str,
    field: &Field,
) -> Result<Duration, String> {
    let text = text.unwrap_or(default);
    let value = parse_duration(text).map_err(|e| field.at(key, e))?;
    if value.is_zero() || value > Duration::from_secs(600) {
        return Err(field.at(key, format!("`{text}` is out of range (allowed 1ms..=10m)")));
    }
    Ok(value)
}

impl RawStart {
    /// Checks the table; `dir` is the profile file's directory.
    pub fn check(self, dir: &Path, field: &Field) -> Result<StartSpec, String> {
        if self.command.is_empty() || self.command[0].trim().is_empty() {
            return Err(field.at(
                "command",
                "name the program to run, e.g. [\"node\", \"server.js\"]",
            ));
        }
        let command = self
            .command
            .iter()
            .map(|arg| {
                Template::parse(arg, &[Var::Port, Var::Commbench])
                    .map_err(|e| field.at("command", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut env = Vec::new();
        for (name, value) in self.env.unwrap_or_default() {
            let toml::Value::String(text) = value else {
                return Err(field.at("env", format!("`{name}` must be a string")));
            };
            let value = Template::parse(&text, &[Var::Port]).map_err(|e| field.at("env", e))?;
            env.push((name, value));
        }
        let ready = match (self.ready_line, self.ready_url) {
            (Some(line), _) => Readiness::Line(
                Template::parse(&line, &[Var::BaseUrl]).map_err(|e| field.at("ready_line", e))?,
            ),
            (None, Some(url)) if url.starts_with('/') => Readiness::Url(url),
            (None, Some(url)) => {
                return Err(field.at(
                    "ready_url",
                    format!("`{url}` must be a path starting with `/`"),
                ))
            }
            (None, None) => {
                return Err(field.at(
                    "ready_line",
                    "say how the server shows it is ready: `ready_line` (e.g. \"listening on \
                     {base_url}\") or `ready_url` (a path answering 2xx)",
                ))
            }
        };
        let stop_signal = match self.stop_signal.as_deref() {
            None => Signal::Term,
            Some(text) => Signal::parse(text).ok_or_else(|| {
                field.at(
                    "stop_signal",
                    format!("`{text}`: expected SIGTERM, SIGINT, SIGHUP, SIGQUIT or SIGKILL"),
                )
            })?,
        };
        let cwd = match self.cwd.as_deref() {
            None | Some(".") => dir.to_path_buf(),
            Some(cwd) => dir.join(cwd),
        };
        Ok(StartSpec {
            command,
            requires: self
                .requires
                .unwrap_or_default()
                .iter()
                .map(PathBuf::from)
                .collect(),
            cwd,
            env,
            ready,
            ready_timeout: duration(self.ready_timeout.as_deref(), "20s", "ready_timeout", field)?,
            stop_signal,
            stop_grace: duration(self.stop_grace.as_deref(), "5s", "stop_grace", field)?,
            install: self.install,
        })
    }
}

/// The commbench executable, for `{commbench}` and the guard: this one, or, when this is a test
/// binary in cargo's `deps/` directory, the `commbench` cargo built beside it.
fn commbench_exe() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    if exe.file_stem().is_some_and(|stem| stem == "commbench") {
        return Some(exe);
    }
    let beside = exe.parent()?.parent()?.join("commbench");
    beside.is_file().then_some(beside)
}

/// [`commbench_exe`] as text, for `{commbench}`.
fn commbench() -> String {
    commbench_exe().map_or_else(
        || "commbench".to_owned(),
        |p| p.to_string_lossy().into_owned(),
    )
}

impl StartSpec {
    /// The program to run.
    fn program(&self) -> String {
        let extra = [(Var::Commbench, commbench())];
        let extra: Vec<(Var, &str)> = extra.iter().map(|(v, s)| (*v, s.as_str())).collect();
        let bytes = self.command[0].render_with(&Values::default(), b"", &extra);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Why the server cannot start on this machine (its program or a required file is missing),
    /// with the install command when the profile names one.
    pub fn missing(&self) -> Option<String> {
        let program = self.program();
        let found = if program.contains('/') {
            self.cwd.join(&program).is_file()
        } else {
            std::env::var_os("PATH").is_some_and(|path| {
                std::env::split_paths(&path).any(|dir| dir.join(&program).is_file())
            })
        };
        let problem = if !found {
            format!("`{program}` is not installed")
        } else {
            let absent = self.requires.iter().find(|p| !self.cwd.join(p).exists())?;
            format!("{} is missing", self.cwd.join(absent).display())
        };
        Some(match &self.install {
            Some(install) => format!("{problem}; install it with `{install}`"),
            None => problem,
        })
    }
}

/// A server started from a profile, under `commbench guard` (`guard.rs`) as the leader of a process
/// group of its own; stopped with its signal (then killed after the grace period) by
/// [`stop`](Self::stop), the whole group killed if dropped.
pub struct ProfileServer {
    /// The guard (or the command itself when no commbench executable was found to run it).
    child: Child,
    group: Group,
    /// The command's process (the guard's child): what is measured and pinned, with everything below it.
    pub pid: u32,
    pub target: Target,
    signal: Signal,
    grace: Duration,
}

/// The guard's process group: killed when dropped, unless it was stopped.
struct Group {
    id: Pid,
    armed: bool,
}

impl Group {
    fn signal(&self, signal: nix::sys::signal::Signal) -> bool {
        // Never 0 or 1: `killpg(0)` would signal commbench's own group.
        self.id.as_raw() > 1 && killpg(self.id, signal).is_ok()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.armed {
            self.signal(nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// A free loopback port for `{port}` (bound and released: the server binds it a moment later).
fn free_port() -> Result<u16, TargetError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| TargetError::Spawn("a free port for {port}".into(), e))
}

impl ProfileServer {
    /// Starts the server and waits until it is ready; `base_url` is the profile's (it may use
    /// `{port}`), required unless the readiness line carries the URL.
    pub async fn start(spec: &StartSpec, base_url: Option<&Template>) -> Result<Self, TargetError> {
        let values = Values {
            port: if spec.command.iter().any(|t| t.uses(Var::Port))
                || spec.env.iter().any(|(_, t)| t.uses(Var::Port))
                || base_url.is_some_and(|t| t.uses(Var::Port))
            {
                free_port()?
            } else {
                0
            },
            ..Values::default()
        };
        let exe = commbench();
        let extra = [(Var::Commbench, exe.as_str())];
        let render = |t: &Template| {
            String::from_utf8_lossy(&t.render_with(&values, b"", &extra)).into_owned()
        };
        let argv: Vec<String> = spec.command.iter().map(render).collect();
        let shown = argv.join(" ");
        // Under the guard; without a commbench executable to run it from (a test binary outside
        // cargo's layout), the command leads its own group (signalled whole at the stop) and the
        // kernel's parent-death signal reaches it alone.
        let guarded = commbench_exe();
        let mut command = match &guarded {
            Some(guard) => {
                let mut command = Command::new(guard);
                command.args(["guard", "--"]).args(&argv);
                command
            }
            None => {
                let mut command = Command::new(&argv[0]);
                command.args(&argv[1..]);
                command
            }
        };
        command
            .process_group(0)
            .current_dir(&spec.cwd)
            .envs(spec.env.iter().map(|(k, v)| (k.clone(), render(v))))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child =
            child::spawn_tokio(command).map_err(|e| TargetError::Spawn(shown.clone(), e))?;
        let started = child.id().unwrap_or(0);
        // From here on, every way out of this function that is not success kills the group.
        let group = Group {
            id: Pid::from_raw(i32::try_from(started).unwrap_or(0)),
            armed: started != 0,
        };
        let wait = spec.ready_timeout;
        let base = base_url.map(render);
        let url = match &spec.ready {
            Readiness::Line(template) => {
                ready_line(&mut child, &shown, wait, |line| {
                    match_line(template, line, base.as_deref())
                })
                .await?
            }
            Readiness::Url(path) => {
                // Its output is not read for readiness: drain it from the start.
                if let Some(stdout) = child.stdout.take() {
                    let mut lines = BufReader::new(stdout).lines();
                    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                }
                let base = base.unwrap_or_default();
                if !matches!(
                    tokio::time::timeout(wait, poll_ready(&base, path)).await,
                    Ok(true)
                ) {
                    let _ = child.kill().await;
                    return Err(TargetError::NotReady(shown, wait));
                }
                base
            }
        };
        let target = Target::external(&url).await?;
        // The command is the guard's one child (the guard itself is not the server).
        let pid = match guarded {
            Some(_) => crate::procstat::tree(started)
                .get(1)
                .copied()
                .unwrap_or(started),
            None => started,
        };
        Ok(Self {
            child,
            group,
            pid,
            target,
            signal: spec.stop_signal,
            grace: spec.stop_grace,
        })
    }

    /// Sends the stop signal to the whole group and waits up to the grace period for it to end
    /// (the guard ends last), then kills the group.
    pub async fn stop(mut self) {
        let signalled = self.group.signal(self.signal.nix());
        if !signalled
            || tokio::time::timeout(self.grace, self.child.wait())
                .await
                .is_err()
        {
            self.group.signal(nix::sys::signal::Signal::SIGKILL);
            let _ = self.child.kill().await;
        }
        self.group.armed = false;
    }
}

/// The base URL a readiness line announces (or the profile's, when the template does not carry
/// one), if `line` is the readiness line.
fn match_line(template: &Template, line: &str, base: Option<&str>) -> Option<String> {
    let line = line.trim();
    match template.around(Var::BaseUrl) {
        Some((before, after)) => {
            let rest = &line[line.find(before.as_str())? + before.len()..];
            let url: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
            let url = url
                .strip_suffix(after.trim_end())
                .unwrap_or(&url)
                .to_owned();
            url.starts_with("http://").then_some(url)
        }
        None => {
            let text = template.to_string();
            line.contains(text.trim())
                .then(|| base.map(str::to_owned))
                .flatten()
        }
    }
}

/// Asks `base` + `path` every 100 ms until it answers 2xx.
async fn poll_ready(base: &str, path: &str) -> bool {
    let Ok(target) = Target::external(base).await else {
        return false;
    };
    let recorder = std::sync::Arc::new(crate::record::Recorder::new(1));
    loop {
        if let Ok(mut conn) = crate::http::HttpConn::open(&target, None, &recorder).await {
            let path = format!("{}{path}", target.path.trim_end_matches('/'));
            if conn
                .fetch(http::Method::GET, &path, bytes::Bytes::new())
                .await
                .is_ok()
            {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_lines_give_the_base_url() {
        let t = Template::parse("listening on {base_url}", &[Var::BaseUrl]).unwrap();
        assert_eq!(
            match_line(&t, "listening on http://127.0.0.1:4000", None).as_deref(),
            Some("http://127.0.0.1:4000")
        );
        assert_eq!(match_line(&t, "starting", None), None);
        let plain = Template::parse("ready", &[]).unwrap();
        assert_eq!(
            match_line(&plain, "server ready!", Some("http://127.0.0.1:1")).as_deref(),
            Some("http://127.0.0.1:1")
        );
    }

    #[test]
    fn signals_by_name() {
        assert_eq!(Signal::parse("SIGTERM"), Some(Signal::Term));
        assert_eq!(Signal::parse("int"), Some(Signal::Int));
        assert_eq!(Signal::parse("SIGSTOP"), None);
    }
}
