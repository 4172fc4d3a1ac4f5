//! Server counters exposed at `GET /metrics` in Prometheus text format. Plain atomics: the hot path
//! never takes a lock to count.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
};

/// The patterns the server hosts, used to label per-pattern counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKind {
    RequestResponse,
    ShortPoll,
    LongPoll,
    /// Long polling on a job handle (`/jobs`), not the message queue (`Queue`).
    HandlePoll,
    Sse,
    WebSocket,
    GraphQl,
    Queue,
    SocketIo,
}

impl PatternKind {
    pub const ALL: [PatternKind; 9] = [
        PatternKind::RequestResponse,
        PatternKind::ShortPoll,
        PatternKind::LongPoll,
        PatternKind::HandlePoll,
        PatternKind::Sse,
        PatternKind::WebSocket,
        PatternKind::GraphQl,
        PatternKind::Queue,
        PatternKind::SocketIo,
    ];

    pub fn label(self) -> &'static str {
        match self {
            PatternKind::RequestResponse => "request_response",
            PatternKind::ShortPoll => "short_poll",
            PatternKind::LongPoll => "long_poll",
            // The label predates the name: dashboards and tests read `pattern="jobs"`.
            PatternKind::HandlePoll => "jobs",
            PatternKind::Sse => "sse",
            PatternKind::WebSocket => "websocket",
            PatternKind::GraphQl => "graphql",
            PatternKind::Queue => "queue",
            PatternKind::SocketIo => "socketio",
        }
    }
}

/// Why a request or message was refused; each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    BadTopic,
    BadQuery,
    CursorAhead,
    PayloadTooLarge,
    NotFound,
    MethodNotAllowed,
    ConnectionLimit,
    TopicLimit,
    JobLimit,
    BadMessage,
    MessageTooLarge,
    SubscriptionLimit,
    Unavailable,
    QueueLimit,
    QueueFull,
    LeaseMismatch,
    SpoolFull,
    JobLost,
    RequestTimeout,
    TooComplex,
    ResponseTooLarge,
}

impl RejectReason {
    pub const ALL: [RejectReason; 21] = [
        RejectReason::BadTopic,
        RejectReason::BadQuery,
        RejectReason::CursorAhead,
        RejectReason::PayloadTooLarge,
        RejectReason::NotFound,
        RejectReason::MethodNotAllowed,
        RejectReason::ConnectionLimit,
        RejectReason::TopicLimit,
        RejectReason::JobLimit,
        RejectReason::BadMessage,
        RejectReason::MessageTooLarge,
        RejectReason::SubscriptionLimit,
        RejectReason::Unavailable,
        RejectReason::QueueLimit,
        RejectReason::QueueFull,
        RejectReason::LeaseMismatch,
        RejectReason::SpoolFull,
        RejectReason::JobLost,
        RejectReason::RequestTimeout,
        RejectReason::TooComplex,
        RejectReason::ResponseTooLarge,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RejectReason::BadTopic => "bad_topic",
            RejectReason::BadQuery => "bad_query",
            RejectReason::CursorAhead => "cursor_ahead",
            RejectReason::PayloadTooLarge => "payload_too_large",
            RejectReason::NotFound => "not_found",
            RejectReason::MethodNotAllowed => "method_not_allowed",
            RejectReason::ConnectionLimit => "connection_limit",
            RejectReason::TopicLimit => "topic_limit",
            RejectReason::JobLimit => "job_limit",
            RejectReason::BadMessage => "bad_message",
            RejectReason::MessageTooLarge => "message_too_large",
            RejectReason::SubscriptionLimit => "subscription_limit",
            RejectReason::Unavailable => "unavailable",
            RejectReason::QueueLimit => "queue_limit",
            RejectReason::QueueFull => "queue_full",
            RejectReason::LeaseMismatch => "lease_mismatch",
            RejectReason::SpoolFull => "spool_full",
            RejectReason::JobLost => "job_lost",
            RejectReason::RequestTimeout => "request_timeout",
            RejectReason::TooComplex => "too_complex",
            RejectReason::ResponseTooLarge => "response_too_large",
        }
    }
}

const PATTERNS: usize = PatternKind::ALL.len();
const REASONS: usize = RejectReason::ALL.len();

/// Every counter the server keeps.
#[derive(Default)]
pub struct Metrics {
    pub connections_open: AtomicI64,
    pub connections_accepted: AtomicU64,
    /// Keep-alive connections closed by `--idle-timeout`.
    pub idle_closed: AtomicU64,
    /// Failed `accept` calls (usually out of file descriptors).
    pub accept_errors: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub events_published: AtomicU64,
    pub join_notices_dropped: AtomicU64,
    requests: [AtomicU64; PATTERNS],
    active: [AtomicI64; PATTERNS],
    delivered: [AtomicU64; PATTERNS],
    lagged: [AtomicU64; PATTERNS],
    rejected: [AtomicU64; REASONS],
    /// The message queue's counters (its own section below).
    pub queue: QueueMetrics,
    /// Redis reconnects and the publish and enqueue spools, shared with the bus and the queue.
    pub redis: std::sync::Arc<RedisCounters>,
}

/// Counters of one outage spool (`spool/`), updated by the spool itself.
#[derive(Debug, Default)]
pub struct SpoolCounters {
    pub spooled: AtomicU64,
    pub replayed: AtomicU64,
    /// Refused because the spool was full (answered 503).
    pub rejected: AtomicU64,
    /// Removed because the broker refused them for good on replay (e.g. the topic limit).
    pub dropped: AtomicU64,
    pub depth: AtomicI64,
    pub bytes: AtomicI64,
}

/// What the Redis bus and queue count about outages.
#[derive(Debug, Default)]
pub struct RedisCounters {
    pub reconnect_attempts: AtomicU64,
    /// Times this instance found that Redis had lost its data (its epoch key changed or vanished).
    pub data_losses: AtomicU64,
    pub publish_spool: std::sync::Arc<SpoolCounters>,
    pub enqueue_spool: std::sync::Arc<SpoolCounters>,
}

impl Metrics {
    pub fn request(&self, pattern: PatternKind) {
        self.requests[pattern as usize].fetch_add(1, Relaxed);
    }

    pub fn delivered(&self, pattern: PatternKind, events: u64) {
        self.delivered[pattern as usize].fetch_add(events, Relaxed);
    }

    pub fn lagged_disconnect(&self, pattern: PatternKind) {
        self.lagged[pattern as usize].fetch_add(1, Relaxed);
    }

    pub fn rejected(&self, reason: RejectReason) {
        self.rejected[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn rejected_count(&self, reason: RejectReason) -> u64 {
        self.rejected[reason as usize].load(Relaxed)
    }

    pub fn lagged_count(&self, pattern: PatternKind) -> u64 {
        self.lagged[pattern as usize].load(Relaxed)
    }

    /// Marks one open stream/socket/held request of `pattern` until the guard drops.
    pub fn active(self: &std::sync::Arc<Self>, pattern: PatternKind) -> ActiveGuard {
        let index = pattern as usize;
        self.active[index].fetch_add(1, Relaxed);
        ActiveGuard {
            metrics: self.clone(),
            index,
        }
    }

    /// Renders every counter in Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let load = |c: &AtomicU64| c.load(Relaxed) as i64;
        let scalars = [
            (
                "commbench_connections_open",
                "gauge",
                "Open TCP connections.",
                self.connections_open.load(Relaxed),
            ),
            (
                "commbench_connections_accepted_total",
                "counter",
                "TCP connections accepted.",
                load(&self.connections_accepted),
            ),
            (
                "commbench_idle_closed_total",
                "counter",
                "Keep-alive connections closed after --idle-timeout without a request.",
                load(&self.idle_closed),
            ),
            (
                "commbench_accept_errors_total",
                "counter",
                "Failed accepts (usually out of file descriptors).",
                load(&self.accept_errors),
            ),
            (
                "commbench_bytes_sent_total",
                "counter",
                "Bytes written to client sockets, headers and frames included.",
                load(&self.bytes_sent),
            ),
            (
                "commbench_bytes_received_total",
                "counter",
                "Bytes read from client sockets.",
                load(&self.bytes_received),
            ),
            (
                "commbench_events_published_total",
                "counter",
                "Events appended to the feed.",
                load(&self.events_published),
            ),
            (
                "commbench_join_notices_dropped_total",
                "counter",
                "WebSocket join notices a slow member missed.",
                load(&self.join_notices_dropped),
            ),
        ];
        for (name, kind, help, value) in scalars {
            family(&mut out, name, kind, help, [("", value)]);
        }
        let by_pattern = |values: &[AtomicU64; PATTERNS]| {
            PatternKind::ALL.map(|p| (p.label(), load(&values[p as usize])))
        };
        let active = PatternKind::ALL.map(|p| (p.label(), self.active[p as usize].load(Relaxed)));
        family(
            &mut out,
            "commbench_requests_total{pattern}",
            "counter",
            "Requests or connections handled, by pattern.",
            by_pattern(&self.requests),
        );
        family(
            &mut out,
            "commbench_active{pattern}",
            "gauge",
            "Open streams, sockets and held requests, by pattern.",
            active,
        );
        family(
            &mut out,
            "commbench_events_delivered_total{pattern}",
            "counter",
            "Events sent to clients, by pattern.",
            by_pattern(&self.delivered),
        );
        family(
            &mut out,
            "commbench_lagged_disconnects_total{pattern}",
            "counter",
            "Subscribers cut off for falling behind, by pattern.",
            by_pattern(&self.lagged),
        );
        let rejected = RejectReason::ALL.map(|r| (r.label(), load(&self.rejected[r as usize])));
        family(
            &mut out,
            "commbench_rejected_total{reason}",
            "counter",
            "Requests and messages refused, by reason.",
            rejected,
        );
        self.queue.render(&mut out);
        self.render_redis(&mut out);
        out
    }

    /// The Redis section: reconnects and the outage spools, labelled by spool (publish, enqueue).
    fn render_redis(&self, out: &mut String) {
        let redis = &self.redis;
        family(
            out,
            "commbench_redis_reconnect_attempts_total",
            "counter",
            "Attempts to reconnect to Redis after it became unreachable.",
            [("", redis.reconnect_attempts.load(Relaxed) as i64)],
        );
        family(
            out,
            "commbench_redis_data_losses_total",
            "counter",
            "Times Redis was found to have lost its data (restarted without persistence, flushed).",
            [("", redis.data_losses.load(Relaxed) as i64)],
        );
        let spools = [
            ("publish", &*redis.publish_spool),
            ("enqueue", &*redis.enqueue_spool),
        ];
        type Read = fn(&SpoolCounters) -> i64;
        let families: [(&str, &str, &str, Read); 6] = [
            (
                "commbench_spool_spooled_total{spool}",
                "counter",
                "Items held in the outage spool.",
                |s| s.spooled.load(Relaxed) as i64,
            ),
            (
                "commbench_spool_replayed_total{spool}",
                "counter",
                "Spooled items delivered once the broker returned.",
                |s| s.replayed.load(Relaxed) as i64,
            ),
            (
                "commbench_spool_rejected_total{spool}",
                "counter",
                "Items refused (503) because the spool was full.",
                |s| s.rejected.load(Relaxed) as i64,
            ),
            (
                "commbench_spool_dropped_total{spool}",
                "counter",
                "Spooled items the broker refused for good on replay.",
                |s| s.dropped.load(Relaxed) as i64,
            ),
            (
                "commbench_spool_depth{spool}",
                "gauge",
                "Items waiting in the outage spool.",
                |s| s.depth.load(Relaxed),
            ),
            (
                "commbench_spool_bytes{spool}",
                "gauge",
                "Bytes waiting in the outage spool.",
                |s| s.bytes.load(Relaxed),
            ),
        ];
        for (name, kind, help, read) in families {
            family(
                out,
                name,
                kind,
                help,
                spools.map(|(label, s)| (label, read(s))),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Message queue
// ---------------------------------------------------------------------------------------------

/// The message queue's counters, by lane where it matters (index: premium 0, normal 1).
#[derive(Default)]
pub struct QueueMetrics {
    submitted: [AtomicU64; 2],
    completed: [AtomicU64; 2],
    redelivered: AtomicU64,
    duplicates: AtomicU64,
    lost: AtomicU64,
    /// Jobs the in-server workers are processing now.
    pub workers_busy: AtomicI64,
}

fn lane_slot(lane: crate::queue::Lane) -> usize {
    match lane {
        crate::queue::Lane::Premium => 0,
        crate::queue::Lane::Normal => 1,
    }
}

impl QueueMetrics {
    pub fn submitted(&self, lane: crate::queue::Lane) {
        self.submitted[lane_slot(lane)].fetch_add(1, Relaxed);
    }

    pub fn completed(&self, lane: crate::queue::Lane) {
        self.completed[lane_slot(lane)].fetch_add(1, Relaxed);
    }

    pub fn redelivered(&self) {
        self.redelivered.fetch_add(1, Relaxed);
    }

    pub fn duplicate(&self) {
        self.duplicates.fetch_add(1, Relaxed);
    }

    /// Jobs this instance had accepted that Redis lost, unfinished, with its data.
    pub fn lost(&self, jobs: u64) {
        self.lost.fetch_add(jobs, Relaxed);
    }

    fn render(&self, out: &mut String) {
        use crate::queue::Lane;
        let load = |c: &AtomicU64| c.load(Relaxed) as i64;
        let by_lane =
            |values: &[AtomicU64; 2]| Lane::ALL.map(|l| (l.label(), load(&values[lane_slot(l)])));
        family(
            out,
            "commbench_jobs_submitted_total{lane}",
            "counter",
            "Queue jobs enqueued by this instance, by lane.",
            by_lane(&self.submitted),
        );
        family(
            out,
            "commbench_jobs_completed_total{lane}",
            "counter",
            "Queue jobs completed (first acknowledgement) through this instance, by lane.",
            by_lane(&self.completed),
        );
        let scalars = [
            (
                "commbench_jobs_redelivered_total",
                "counter",
                "Queue jobs made takeable again after their lease expired.",
                load(&self.redelivered),
            ),
            (
                "commbench_jobs_duplicate_completions_total",
                "counter",
                "Acknowledgements of jobs already completed (processed more than once).",
                load(&self.duplicates),
            ),
            (
                "commbench_jobs_lost_total",
                "counter",
                "Queue jobs this instance accepted that Redis lost, unfinished, with its data.",
                load(&self.lost),
            ),
            (
                "commbench_queue_workers_busy",
                "gauge",
                "Jobs the in-server workers are processing now.",
                self.workers_busy.load(Relaxed),
            ),
        ];
        for (name, kind, help, value) in scalars {
            family(out, name, kind, help, [("", value)]);
        }
    }
}

/// Writes one metric family. `name` may end in `{label}`: each value is then written with that label.
fn family<'a>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    values: impl IntoIterator<Item = (&'a str, i64)>,
) {
    let (base, label) = match name.split_once('{') {
        Some((base, label)) => (base, label.trim_end_matches('}')),
        None => (name, ""),
    };
    let _ = writeln!(out, "# HELP {base} {help}\n# TYPE {base} {kind}");
    for (value_label, value) in values {
        if label.is_empty() {
            let _ = writeln!(out, "{base} {value}");
        } else {
            let _ = writeln!(out, "{base}{{{label}=\"{value_label}\"}} {value}");
        }
    }
}

/// Decrements a pattern's active gauge on drop.
pub struct ActiveGuard {
    metrics: std::sync::Arc<Metrics>,
    index: usize,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.metrics.active[self.index].fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn renders_labelled_counters() {
        let m = Arc::new(Metrics::default());
        m.delivered(PatternKind::Sse, 3);
        m.rejected(RejectReason::BadTopic);
        let guard = m.active(PatternKind::WebSocket);
        let text = m.render();
        assert!(text.contains("commbench_events_delivered_total{pattern=\"sse\"} 3"));
        assert!(text.contains("commbench_rejected_total{reason=\"bad_topic\"} 1"));
        assert!(text.contains("commbench_active{pattern=\"websocket\"} 1"));
        drop(guard);
        assert!(m
            .render()
            .contains("commbench_active{pattern=\"websocket\"} 0"));
    }
}
