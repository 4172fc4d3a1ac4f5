//! What every feed client (polling, SSE, WebSocket, GraphQL, Socket.IO) does with an event: loss,
//! duplicate and order accounting — by the server's sequence numbers, or by the publish stamp for
//! servers that have none — and delivery latency from the payload's intended send time. For a
//! server sending its own events it counts messages and the time between them instead.

use std::sync::atomic::Ordering::Relaxed;

use super::{stamp, ClientCtx, Phase};
use crate::{
    clock::{decode_stamp, Stamp},
    record::{Counters, Metric, SeqTracker},
    wire::PollAnswer,
};

/// How a client's books are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accounting {
    /// By the server's sequence numbers (commbench's own protocols).
    Seq,
    /// By the publish stamp found in what arrives, numbered per topic; `latest`: every answer
    /// repeats the newest state (a poll without cursor), so a repeat of it is not a duplicate.
    Stamp { latest: bool },
    /// Messages and the time between them: the server does not relay the published payloads.
    InterArrival,
}

pub struct FeedReceiver {
    accounting: Accounting,
    tracker: SeqTracker,
    start_after: u64,
    /// The highest sequence number (or publish ordinal) seen.
    highest: u64,
    gaps: u64,
    /// Inter-arrival: when the last message came.
    last_message_ns: Option<u64>,
}

impl FeedReceiver {
    /// Follows the topic after `start_after` (the cursor the server confirmed).
    pub fn new(start_after: u64) -> Self {
        Self::start(None, Accounting::Seq, start_after)
    }

    /// Starts books of `accounting`: by sequence number after `after`; by stamp after the
    /// publishes already issued to the client's topic (what it could not have been sent).
    pub fn start(ctx: Option<&ClientCtx>, accounting: Accounting, after: u64) -> Self {
        let start_after = match (accounting, ctx) {
            (Accounting::Stamp { .. }, Some(ctx)) => ctx.issued(),
            _ => after,
        };
        Self {
            accounting,
            tracker: SeqTracker::new(start_after),
            start_after,
            highest: start_after,
            gaps: 0,
            last_message_ns: None,
        }
    }

    /// The highest sequence number seen (the cursor to resume after).
    pub fn cursor(&self) -> u64 {
        self.highest
    }

    /// Records one received event by its sequence number.
    pub fn event(&mut self, ctx: &ClientCtx, seq: u64, data: Option<&str>, now_ns: u64) {
        ctx.recorder()
            .counters
            .events_received
            .fetch_add(1, Relaxed);
        let Some(stamp) = data.and_then(|d| decode_stamp(d.as_bytes())) else {
            if self.take(seq) {
                ctx.recorder().counters.error("foreign_payload");
            }
            return;
        };
        if self.take(seq) {
            delivered(ctx, &stamp, now_ns);
        }
    }

    /// Books `number`; true when it is new.
    fn take(&mut self, number: u64) -> bool {
        self.highest = self.highest.max(number);
        self.tracker.see(number)
    }

    /// Takes whatever one message (a poll body, an SSE `data`, a frame, an argument) holds, as
    /// the books say: every stamp of the client's topic, or the message itself. Returns how many
    /// new events it carried.
    pub fn message(&mut self, ctx: &ClientCtx, bytes: &[u8], now_ns: u64) -> usize {
        let counters = &ctx.recorder().counters;
        match self.accounting {
            Accounting::Seq => 0,
            Accounting::InterArrival => {
                counters.events_received.fetch_add(1, Relaxed);
                if let Some(previous) = self.last_message_ns.filter(|p| ctx.shared.in_window(*p)) {
                    let micros = now_ns.saturating_sub(previous) / 1_000;
                    ctx.recorder().record(ctx.id, Metric::InterArrival, micros);
                }
                self.last_message_ns = Some(now_ns);
                1
            }
            Accounting::Stamp { latest } => {
                let topics = ctx.shared.topics.len();
                let mine = ctx.topic_index();
                let mut new = 0;
                for found in stamp::stamps(bytes) {
                    if stamp::topic_of(found.publish_id, topics) != mine {
                        counters.error("stamp_of_another_topic");
                        continue;
                    }
                    let ordinal = stamp::ordinal_of(found.publish_id, topics);
                    // Published before this client subscribed: not among what it expects.
                    if ordinal <= self.start_after
                        || (latest && ordinal == self.highest && self.highest > self.start_after)
                    {
                        continue;
                    }
                    counters.events_received.fetch_add(1, Relaxed);
                    if self.take(ordinal) {
                        delivered(ctx, &found, now_ns);
                        new += 1;
                    }
                }
                new
            }
        }
    }

    /// Takes one poll answer's page (REST or GraphQL): its gap, then its events; an empty page is
    /// counted. Returns the page's `more` (ask again at once).
    pub fn page(&mut self, ctx: &ClientCtx, page: &PollAnswer<'_>, now_ns: u64) -> bool {
        if let Some(gap) = page.gap {
            self.gap(gap.oldest);
        }
        if page.events.is_empty() {
            ctx.recorder()
                .counters
                .empty_responses
                .fetch_add(1, Relaxed);
        }
        for event in &page.events {
            self.event(ctx, event.seq, event.data.as_deref(), now_ns);
        }
        page.more
    }

    /// The server said events up to `oldest - 1` are gone.
    pub fn gap(&mut self, oldest: u64) {
        self.gaps += 1;
        self.tracker.gap(oldest);
        self.highest = self.highest.max(oldest.saturating_sub(1));
    }

    /// The last sequence number (or publish ordinal) of the client's topic once publishing has
    /// stopped; `None` before, or when nothing is accounted.
    fn final_head(&self, ctx: &ClientCtx) -> Option<u64> {
        ctx.shared.final_head(self.accounting, ctx.topic_index())
    }

    /// True once publishing has stopped and this client has seen its topic's last event.
    pub fn done(&self, ctx: &ClientCtx) -> bool {
        match ctx.shared.phase() {
            Phase::Stop => true,
            Phase::Drain => self.final_head(ctx).is_none_or(|head| self.highest >= head),
            Phase::Ramp | Phase::Run => false,
        }
    }

    /// Closes the books against the topic's final head and adds them to the run's counters.
    pub fn finish(mut self, ctx: &ClientCtx) {
        if self.accounting == Accounting::InterArrival {
            return;
        }
        let counters: &Counters = &ctx.recorder().counters;
        let final_head = self.final_head(ctx).unwrap_or(self.highest);
        let mut expected = self.tracker.finish(self.start_after, final_head);
        if let Accounting::Stamp { .. } = self.accounting {
            // A publish that failed is expected only where it arrived anyway: elsewhere it is a
            // failed publish (counted as such), not an event the pattern lost.
            expected -= self.tracker.excuse(&ctx.unpublished());
        }
        let add = |c: &std::sync::atomic::AtomicU64, n: u64| {
            c.fetch_add(n, Relaxed);
        };
        add(&counters.events_expected, expected);
        add(
            &counters.events_delivered,
            self.tracker.delivered.min(expected),
        );
        add(&counters.events_lost, self.tracker.lost);
        add(&counters.events_duplicated, self.tracker.duplicated);
        add(&counters.events_out_of_order, self.tracker.out_of_order);
        add(&counters.gaps, self.gaps);
    }
}

/// Records a new event's delivery latency (in the window) from its intended send time, its
/// cross-instance latency, and its latency from the publisher's write when the stamp carries it.
fn delivered(ctx: &ClientCtx, stamp: &Stamp, now_ns: u64) {
    if ctx.shared.in_window(stamp.intended_ns) {
        let micros = now_ns.saturating_sub(stamp.intended_ns) / 1_000;
        ctx.recorder().record(ctx.id, Metric::Delivery, micros);
        if ctx.remote {
            ctx.recorder().record(ctx.id, Metric::CrossInstance, micros);
        }
        if let Some(written_ns) = stamp.written_ns {
            let micros = now_ns.saturating_sub(written_ns) / 1_000;
            ctx.recorder()
                .record(ctx.id, Metric::DeliveryFromWrite, micros);
        }
    }
}
