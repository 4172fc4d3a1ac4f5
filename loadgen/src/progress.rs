//! Live progress: an indicatif bar on a terminal, plain log lines (every 5 s) otherwise.

use std::{
    io::IsTerminal,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

use crate::record::Counters;

#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
    label: Arc<str>,
    started: Instant,
    last_events: Arc<AtomicU64>,
    last_requests: Arc<AtomicU64>,
    last_log_s: Arc<AtomicU64>,
    quiet: bool,
}

impl Progress {
    /// A display for one cell lasting about `total`.
    pub fn new(label: &str, total: Duration, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total.as_secs().max(1));
            let style =
                ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(label.to_owned());
            bar
        });
        Self {
            bar,
            label: label.into(),
            started: Instant::now(),
            last_events: Arc::default(),
            last_requests: Arc::default(),
            last_log_s: Arc::default(),
            quiet,
        }
    }

    /// Called once per collector interval (about a second), with this process's counters and
    /// the load workers' live ones.
    pub fn tick(&self, counters: &Counters, workers: Option<&Counters>) {
        let both = |read: &dyn Fn(&Counters) -> u64| read(counters) + workers.map_or(0, read);
        let events = both(&|c| c.events_received.load(Relaxed));
        let requests = both(&|c| c.requests.load(Relaxed));
        let open = counters.connections_open.load(Relaxed)
            + workers.map_or(0, |w| w.connections_open.load(Relaxed));
        let event_rate = events.saturating_sub(self.last_events.swap(events, Relaxed));
        let request_rate = requests.saturating_sub(self.last_requests.swap(requests, Relaxed));
        let message = format!(
            "conns {} | events/s {} | req/s {} | published {} | errors {}",
            open,
            event_rate,
            request_rate,
            counters.published.load(Relaxed),
            both(&|c| c.error_total.load(Relaxed)),
        );
        let elapsed = self.started.elapsed().as_secs();
        match &self.bar {
            Some(bar) => {
                bar.set_position(elapsed);
                bar.set_message(message);
            }
            None if self.quiet => {}
            None => {
                if elapsed >= self.last_log_s.load(Relaxed) + 5 {
                    self.last_log_s.store(elapsed, Relaxed);
                    eprintln!("[{} {elapsed:>4}s] {message}", self.label);
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
