//! `commbench floor`: what this machine's sockets cost with no protocol, framing, fan-out or
//! runtime code — one `write` per delivery (push) or one read and one written answer per request —
//! the yardstick `scripts/push-efficiency.sh` sets beside each pattern's server CPU per delivery.
//!
//! Both ends live in this process, on loopback, each thread pinned to its own CPUs: the "server"
//! thread whose CPU time is measured (its `schedstat`, the way `procstat` measures a server process,
//! so the loopback receive work the kernel charges to a sender is counted the same way), and one
//! current-thread runtime for the clients. Every byte sent is checked on arrival.

use std::{
    io::{self, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};

use clap::{Args, ValueEnum};
use commbench_servers::units::{duration_in, in_range, parse_bytes, parse_count};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    pin::{self, CpuList, PinError},
    procstat,
};

/// How long the clients may take to connect before the measurement gives up.
const CONNECT_WITHIN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FloorMode {
    /// Every tick, one `write` of --size bytes to each connection (a push delivery).
    Push,
    /// Each client sends a small HTTP request every --interval (phases spread evenly); the server
    /// reads it and writes a fixed HTTP answer with a --size body (a poll answer from memory).
    Request,
}

#[derive(Debug, Args)]
pub struct FloorArgs {
    /// What is measured.
    #[arg(long, value_enum, default_value = "push")]
    pub mode: FloorMode,
    /// Loopback connections (1..=8000; both ends are in this process).
    #[arg(long, default_value = "2000", value_parser = clients)]
    pub clients: usize,
    /// Push: writes per connection per second (0.1..=1000).
    #[arg(long, default_value = "25", value_parser = rate)]
    pub rate: f64,
    /// Request: each client's interval between requests (1ms..=1h).
    #[arg(long, default_value = "1s", value_parser = interval)]
    pub interval: Duration,
    /// Bytes per write (push) or per answer body (request) (1B..=1MiB).
    #[arg(long, default_value = "200", value_parser = size)]
    pub size: usize,
    /// Measured window (1s..=10m).
    #[arg(long, default_value = "10s", value_parser = window)]
    pub duration: Duration,
    /// Time before the window, not measured (0s..=1m).
    #[arg(long, default_value = "1s", value_parser = warmup)]
    pub warmup: Duration,
    /// CPUs of the measured (server) thread. [default: the first CPU this process may use]
    #[arg(long, value_name = "LIST")]
    pub server_cpus: Option<String>,
    /// CPUs of the clients' thread. [default: the others, or the same one on a 1-CPU machine]
    #[arg(long, value_name = "LIST")]
    pub client_cpus: Option<String>,
    /// Print the result as one JSON object instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

fn clients(text: &str) -> Result<usize, String> {
    Ok(in_range(parse_count(text)?, 1, 8_000)? as usize)
}

fn rate(text: &str) -> Result<f64, String> {
    let value = text
        .trim()
        .parse()
        .ok()
        .filter(|value: &f64| value.is_finite())
        .ok_or_else(|| format!("`{text}` is not a rate (use e.g. 25 or 0.5)"))?;
    in_range(value, 0.1, 1000.0)
}

fn interval(text: &str) -> Result<Duration, String> {
    duration_in(text, Duration::from_millis(1), Duration::from_secs(3600))
}

fn size(text: &str) -> Result<usize, String> {
    Ok(in_range(parse_bytes(text)?, 1, 1 << 20)? as usize)
}

fn window(text: &str) -> Result<Duration, String> {
    duration_in(text, Duration::from_secs(1), Duration::from_secs(600))
}

fn warmup(text: &str) -> Result<Duration, String> {
    duration_in(text, Duration::ZERO, Duration::from_secs(60))
}

#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error("loopback socket: {0}")]
    Io(#[from] io::Error),
    #[error("cannot read the measured thread's CPU time from /proc (schedstat)")]
    NoCpuTime,
    #[error("the clients received {received} of the {sent} bytes sent")]
    Lost { sent: u64, received: u64 },
    #[error("a client's answer was not the one sent: {0}")]
    BadAnswer(String),
    #[error("only {0} of the {1} clients connected within {within:?}", within = CONNECT_WITHIN)]
    NotConnected(usize, usize),
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
}

/// One floor measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    pub mode: FloorMode,
    pub clients: usize,
    pub size: usize,
    pub window_s: f64,
    /// Writes (push) or answers (request) in the window.
    pub operations: u64,
    /// CPU seconds of the measured thread in the window.
    pub cpu_s: f64,
    pub per_cpu_second: f64,
    pub us_per_operation: f64,
    /// Push: writes the socket did not take at once (counted, not retried; 0 unless saturated).
    pub would_block: u64,
    /// Push: ticks that started more than 5 ms after their time.
    pub late_ticks: u64,
}

impl std::fmt::Display for Floor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (mode, what) = match self.mode {
            FloorMode::Push => ("push", "writes"),
            FloorMode::Request => ("request", "answers"),
        };
        write!(
            f,
            "floor ({mode}, {clients} connections, {size} B): {ops} {what} in {window:.1} s, \
             {cpu:.3} CPU-s = {us:.2} µs each, {per:.0} per CPU-second",
            clients = self.clients,
            size = self.size,
            ops = self.operations,
            window = self.window_s,
            cpu = self.cpu_s,
            us = self.us_per_operation,
            per = self.per_cpu_second,
        )?;
        if self.would_block > 0 || self.late_ticks > 0 {
            write!(
                f,
                " ({} writes would block, {} ticks late: the thread was saturated)",
                self.would_block, self.late_ticks
            )?;
        }
        Ok(())
    }
}

/// Runs the measurement `args` describe (blocking: it starts and joins its own threads).
pub fn run(args: &FloorArgs) -> Result<Floor, FloorError> {
    let (server_cpus, client_cpus) = cpu_sets(args)?;
    match args.mode {
        FloorMode::Push => push(args, server_cpus, client_cpus),
        FloorMode::Request => request(args, server_cpus, client_cpus),
    }
}

fn cpu_sets(args: &FloorArgs) -> Result<(CpuList, CpuList), PinError> {
    let available = pin::available()?;
    let server = match &args.server_cpus {
        Some(text) => CpuList::parse_within("--server-cpus", text, &available)?,
        None => available.first(),
    };
    let client = match &args.client_cpus {
        Some(text) => CpuList::parse_within("--client-cpus", text, &available)?,
        None => match available.without(&server) {
            rest if rest.is_empty() => server.clone(),
            rest => rest,
        },
    };
    Ok((server, client))
}

/// CPU seconds the calling thread has run.
fn own_cpu_seconds() -> Result<f64, FloorError> {
    task_cpu_seconds(Path::new("/proc/thread-self"))
}

/// CPU seconds the thread at `task` (a `/proc/<pid>/task/<tid>` directory) has run.
fn task_cpu_seconds(task: &Path) -> Result<f64, FloorError> {
    procstat::task_cpu_seconds(task).ok_or(FloorError::NoCpuTime)
}

fn current_thread_runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn joined<T>(
    handle: std::thread::JoinHandle<Result<T, FloorError>>,
    name: &'static str,
) -> Result<T, FloorError> {
    handle.join().map_err(|_| FloorError::Panicked(name))?
}

/// Push: the clients connect and read whatever comes until the server closes; the server thread
/// writes to every connection once per tick.
fn push(args: &FloorArgs, server_cpus: CpuList, client_cpus: CpuList) -> Result<Floor, FloorError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let addr = listener.local_addr()?;
    let clients = args.clients;
    let readers = std::thread::spawn(move || -> Result<u64, FloorError> {
        pin::pin_self(&client_cpus)?;
        current_thread_runtime()?.block_on(read_everything(addr, clients))
    });
    let (size, rate, warmup, window) = (args.size, args.rate, args.warmup, args.duration);
    let sender = std::thread::spawn(move || -> Result<(Floor, u64), FloorError> {
        pin::pin_self(&server_cpus)?;
        let mut sockets = Vec::with_capacity(clients);
        listener.set_nonblocking(true)?;
        let deadline = Instant::now() + CONNECT_WITHIN;
        while sockets.len() < clients {
            let socket = match listener.accept() {
                Ok((socket, _)) => socket,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(FloorError::NotConnected(sockets.len(), clients));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            socket.set_nodelay(true)?;
            socket.set_nonblocking(true)?;
            sockets.push(socket);
        }
        let payload = vec![b'x'; size];
        let period = Duration::from_secs_f64(1.0 / rate);
        let start = Instant::now();
        let window_start = start + warmup;
        let window_end = window_start + window;
        let (mut written_bytes, mut operations, mut would_block, mut late_ticks) = (0, 0, 0, 0);
        let mut cpu_start = None;
        let mut tick = start;
        while tick < window_end {
            let now = Instant::now();
            if tick > now {
                std::thread::sleep(tick - now);
            } else if now - tick > Duration::from_millis(5) && tick >= window_start {
                late_ticks += 1;
            }
            if cpu_start.is_none() && tick >= window_start {
                cpu_start = Some(own_cpu_seconds()?);
            }
            for socket in &mut sockets {
                match socket.write(&payload) {
                    Ok(n) => {
                        written_bytes += n as u64;
                        if n < size {
                            would_block += 1;
                        }
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => would_block += 1,
                    Err(error) => return Err(error.into()),
                }
                if cpu_start.is_some() {
                    operations += 1;
                }
            }
            tick += period;
        }
        let cpu_s = own_cpu_seconds()? - cpu_start.unwrap_or(0.0);
        // Closing every socket ends the clients' reads.
        drop(sockets);
        Ok((
            Floor::new(FloorMode::Push, clients, size, window, operations, cpu_s)
                .with_push_trouble(would_block, late_ticks),
            written_bytes,
        ))
    });
    let (floor, sent) = joined(sender, "sending")?;
    let received = joined(readers, "client")?;
    if received != sent {
        return Err(FloorError::Lost { sent, received });
    }
    Ok(floor)
}

/// Connects `clients` sockets to `addr`, then reads each until it closes; the bytes read in all.
async fn read_everything(addr: SocketAddr, clients: usize) -> Result<u64, FloorError> {
    let mut streams = Vec::with_capacity(clients);
    for _ in 0..clients {
        streams.push(tokio::net::TcpStream::connect(addr).await?);
    }
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let mut total = 0u64;
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return total,
                        Ok(n) => total += n as u64,
                    }
                }
            })
        })
        .collect();
    let mut total = 0;
    for reader in readers {
        total += reader.await.map_err(|_| FloorError::Panicked("client"))?;
    }
    Ok(total)
}

const REQUEST: &[u8] = b"GET /poll HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n";

/// Request: the server thread runs one current-thread runtime with a task per connection that
/// answers each request from memory; the clients poll on a fixed schedule until the window ends.
fn request(
    args: &FloorArgs,
    server_cpus: CpuList,
    client_cpus: CpuList,
) -> Result<Floor, FloorError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        args.size
    )
    .into_bytes();
    answer.resize(answer.len() + args.size, b'x');
    let answer: Arc<[u8]> = answer.into();
    let answers = Arc::new(AtomicU64::new(0));
    let (task_tx, task_rx) = mpsc::channel();
    let clients = args.clients;
    let server = {
        let (answer, answers) = (answer.clone(), answers.clone());
        std::thread::spawn(move || -> Result<(), FloorError> {
            pin::pin_self(&server_cpus)?;
            let _ = task_tx.send(std::fs::read_link("/proc/thread-self")?);
            current_thread_runtime()?.block_on(answer_requests(listener, clients, answer, answers))
        })
    };
    let task =
        PathBuf::from("/proc").join(task_rx.recv().map_err(|_| FloorError::Panicked("server"))?);
    let stop = tokio_util::sync::CancellationToken::new();
    let pollers = {
        let (stop, answer, interval) = (stop.clone(), answer.clone(), args.interval);
        std::thread::spawn(move || -> Result<(), FloorError> {
            pin::pin_self(&client_cpus)?;
            current_thread_runtime()?.block_on(poll(addr, clients, interval, answer, stop))
        })
    };
    std::thread::sleep(args.warmup);
    let (cpu_start, answers_start) = (task_cpu_seconds(&task), answers.load(Relaxed));
    std::thread::sleep(args.duration);
    let (cpu_end, answers_end) = (task_cpu_seconds(&task), answers.load(Relaxed));
    stop.cancel();
    // Either side's own failure says more than a CPU time that could not be read.
    joined(pollers, "client")?;
    joined(server, "server")?;
    Ok(Floor::new(
        FloorMode::Request,
        clients,
        args.size,
        args.duration,
        answers_end - answers_start,
        cpu_end? - cpu_start?,
    ))
}

async fn answer_requests(
    listener: TcpListener,
    clients: usize,
    answer: Arc<[u8]>,
    answers: Arc<AtomicU64>,
) -> Result<(), FloorError> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let mut tasks = Vec::with_capacity(clients);
    for accepted in 0..clients {
        let (mut stream, _) = tokio::time::timeout(CONNECT_WITHIN, listener.accept())
            .await
            .map_err(|_| FloorError::NotConnected(accepted, clients))??;
        stream.set_nodelay(true)?;
        let (answer, answers) = (answer.clone(), answers.clone());
        tasks.push(tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let mut filled = 0;
            loop {
                let n = match stream.read(&mut buf[filled..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                filled += n;
                while let Some(end) = find_blank_line(&buf[..filled]) {
                    if stream.write_all(&answer).await.is_err() {
                        return;
                    }
                    answers.fetch_add(1, Relaxed);
                    buf.copy_within(end..filled, 0);
                    filled -= end;
                }
                if filled == buf.len() {
                    return; // not a request this floor sends
                }
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|_| FloorError::Panicked("server"))?;
    }
    Ok(())
}

/// The end of the first `\r\n\r\n` in `bytes`, if there is one.
fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
}

async fn poll(
    addr: SocketAddr,
    clients: usize,
    interval: Duration,
    answer: Arc<[u8]>,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(), FloorError> {
    let mut streams = Vec::with_capacity(clients);
    for _ in 0..clients {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        streams.push(stream);
    }
    let start = tokio::time::Instant::now();
    let pollers: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(index, mut stream)| {
            let (answer, stop) = (answer.clone(), stop.clone());
            let phase = interval.mul_f64(index as f64 / clients as f64);
            tokio::spawn(async move {
                let mut ticks = tokio::time::interval_at(start + phase, interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                // Read and checked a piece at a time: thousands of clients must not each hold a
                // whole (up to 1 MiB) answer.
                let mut buf = [0u8; 4096];
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return Ok::<(), FloorError>(()),
                        _ = ticks.tick() => {}
                    }
                    // A server that stops answering must not keep the clients past the window.
                    let exchange = async {
                        stream.write_all(REQUEST).await?;
                        let mut checked = 0;
                        while checked < answer.len() {
                            let piece = (answer.len() - checked).min(buf.len());
                            stream.read_exact(&mut buf[..piece]).await?;
                            if buf[..piece] != answer[checked..checked + piece] {
                                let got = String::from_utf8_lossy(&buf[..piece.min(80)]);
                                return Err(FloorError::BadAnswer(format!(
                                    "at byte {checked}: {got}"
                                )));
                            }
                            checked += piece;
                        }
                        Ok::<(), FloorError>(())
                    };
                    tokio::select! {
                        () = stop.cancelled() => return Ok(()),
                        exchanged = exchange => exchanged?,
                    }
                }
            })
        })
        .collect();
    for poller in pollers {
        poller.await.map_err(|_| FloorError::Panicked("client"))??;
    }
    Ok(())
}

impl Floor {
    fn new(
        mode: FloorMode,
        clients: usize,
        size: usize,
        window: Duration,
        operations: u64,
        cpu_s: f64,
    ) -> Self {
        let cpu = cpu_s.max(1e-9);
        Self {
            mode,
            clients,
            size,
            window_s: window.as_secs_f64(),
            operations,
            cpu_s,
            per_cpu_second: operations as f64 / cpu,
            us_per_operation: cpu * 1e6 / (operations.max(1)) as f64,
            would_block: 0,
            late_ticks: 0,
        }
    }

    fn with_push_trouble(mut self, would_block: u64, late_ticks: u64) -> Self {
        self.would_block = would_block;
        self.late_ticks = late_ticks;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_bounded() {
        assert!(clients("0").is_err());
        assert!(clients("8001").is_err());
        assert_eq!(clients("2k"), Ok(2000));
        assert!(rate("0").is_err());
        assert!(rate("nan").is_err());
        assert!(rate("fast").unwrap_err().contains("not a rate"));
        assert!(size("0").is_err());
        assert!(size("2MiB").is_err());
        assert_eq!(size("1KiB"), Ok(1024));
        assert!(window("100ms").is_err());
        assert!(interval("0s").is_err());
        assert!(warmup("2m").is_err());
    }

    #[test]
    fn a_request_ends_at_its_blank_line() {
        assert_eq!(find_blank_line(REQUEST), Some(REQUEST.len()));
        assert_eq!(find_blank_line(b"GET / HTTP/1.1\r\n"), None);
        let two = [REQUEST, REQUEST].concat();
        assert_eq!(find_blank_line(&two), Some(REQUEST.len()));
    }
}
