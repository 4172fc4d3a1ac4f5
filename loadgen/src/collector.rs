//! Once per interval: takes what the clients recorded, appends it to the `.hlog` interval logs, adds
//! it to the cell's totals, hands it on (a load worker forwards it to the runner that merges it) and
//! updates the progress display. The only reader of the recorder.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    output::HlogWriter,
    progress::Progress,
    record::{new_histogram, Metric, Recorder},
};

/// One interval's histograms that have samples.
pub type Interval = Vec<(Metric, Histogram<u64>)>;

pub struct Collector {
    pub recorder: Arc<Recorder>,
    /// Other processes' live traffic, shown in the progress line beside this one's.
    pub live: Option<Arc<Recorder>>,
    /// Files are `<dir>/<cell>.<metric>.hlog`; `None` writes no interval logs.
    pub dir: Option<PathBuf>,
    pub cell: String,
    /// Wall-clock time the collector starts: the interval log's base time.
    pub started_unix_s: f64,
    pub interval: Duration,
    pub progress: Progress,
    /// Where each interval is also sent, if anywhere.
    pub forward: Option<mpsc::UnboundedSender<Interval>>,
}

impl Collector {
    /// Runs until `stop`, then takes the last interval and returns the totals of metrics that have
    /// samples.
    pub async fn run(self, stop: CancellationToken) -> BTreeMap<Metric, Histogram<u64>> {
        let mut totals: BTreeMap<Metric, Histogram<u64>> = BTreeMap::new();
        let mut logs: BTreeMap<Metric, HlogWriter> = BTreeMap::new();
        let started = std::time::Instant::now();
        let mut last = 0.0;
        let mut ticks = tokio::time::interval(self.interval);
        ticks.tick().await;
        // Reused every interval: a histogram is about 190 KB, too much to allocate and zero each
        // second on a runtime that is timing clients.
        let mut taken: [Histogram<u64>; Metric::ALL.len()] =
            std::array::from_fn(|_| new_histogram());
        loop {
            let stopping = tokio::select! {
                _ = ticks.tick() => false,
                () = stop.cancelled() => true,
            };
            let now = started.elapsed().as_secs_f64();
            for shard in 0..self.recorder.shard_count() {
                self.recorder.take_shard(shard, &mut taken);
                // Let the clients run between shards.
                tokio::task::yield_now().await;
            }
            let mut forwarded = Interval::new();
            for metric in Metric::ALL {
                let interval = &taken[metric as usize];
                if interval.is_empty() && !logs.contains_key(&metric) {
                    continue;
                }
                self.log(&mut logs, metric, last, now - last, interval);
                if !interval.is_empty() {
                    let total = totals.entry(metric).or_insert_with(new_histogram);
                    // Same bounds everywhere, so adding cannot fail.
                    let _ = total.add(interval);
                }
                if !interval.is_empty() && self.forward.is_some() {
                    forwarded.push((metric, interval.clone()));
                }
            }
            for histogram in taken.iter_mut().filter(|h| !h.is_empty()) {
                histogram.reset();
            }
            if let Some(forward) = &self.forward {
                let _ = forward.send(forwarded);
            }
            let live = self.live.as_ref().map(|l| &l.counters);
            self.progress.tick(&self.recorder.counters, live);
            last = now;
            if stopping {
                break;
            }
        }
        for (_, log) in logs {
            if let Err(error) = log.finish() {
                tracing::warn!(%error, "cannot finish interval log");
            }
        }
        totals.retain(|_, h| !h.is_empty());
        totals
    }

    fn log(
        &self,
        logs: &mut BTreeMap<Metric, HlogWriter>,
        metric: Metric,
        start_s: f64,
        duration_s: f64,
        interval: &Histogram<u64>,
    ) {
        let Some(dir) = &self.dir else { return };
        let log = match logs.entry(metric) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => {
                let path = dir.join(format!("{}.{}.hlog", self.cell, metric.name()));
                match HlogWriter::create(&path, self.started_unix_s) {
                    Ok(writer) => entry.insert(writer),
                    Err(error) => {
                        tracing::warn!(%error, path = %path.display(), "cannot create interval log");
                        return;
                    }
                }
            }
        };
        if let Err(error) = log.write_interval(start_s, duration_s, interval) {
            tracing::warn!(%error, "cannot write interval log");
        }
    }
}
