//! What every feed client (polling, SSE, WebSocket, GraphQL) does with an event: loss/duplicate
//! accounting by sequence number and delivery latency from the payload's intended send time.

use std::sync::atomic::Ordering::Relaxed;

use super::{ClientCtx, Phase};
use crate::{
    clock::decode_stamp,
    record::{Counters, Metric, SeqTracker},
    wire::PollAnswer,
};

pub struct FeedReceiver {
    tracker: SeqTracker,
    start_after: u64,
    highest: u64,
    gaps: u64,
}

impl FeedReceiver {
    /// Follows the topic after `start_after` (the cursor the server confirmed).
    pub fn new(start_after: u64) -> Self {
        Self {
            tracker: SeqTracker::new(start_after),
            start_after,
            highest: start_after,
            gaps: 0,
        }
    }

    /// The highest sequence number seen (the cursor to resume after).
    pub fn cursor(&self) -> u64 {
        self.highest
    }

    /// Records one received event.
    pub fn event(&mut self, ctx: &ClientCtx, seq: u64, data: Option<&str>, now_ns: u64) {
        let counters = &ctx.recorder().counters;
        counters.events_received.fetch_add(1, Relaxed);
        self.highest = self.highest.max(seq);
        if !self.tracker.see(seq) {
            return;
        }
        let Some(stamp) = data.and_then(|d| decode_stamp(d.as_bytes())) else {
            counters.error("foreign_payload");
            return;
        };
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

    /// True once publishing has stopped and this client has seen its topic's last event.
    pub fn done(&self, ctx: &ClientCtx) -> bool {
        match ctx.shared.phase() {
            Phase::Stop => true,
            Phase::Drain => ctx
                .shared
                .final_heads
                .get()
                .and_then(|heads| heads.get(ctx.topic()))
                .is_none_or(|head| self.highest >= *head),
            Phase::Ramp | Phase::Run => false,
        }
    }

    /// Closes the books against the topic's final head and adds them to the run's counters.
    pub fn finish(mut self, ctx: &ClientCtx) {
        let counters: &Counters = &ctx.recorder().counters;
        let final_head = ctx
            .shared
            .final_heads
            .get()
            .and_then(|heads| heads.get(ctx.topic()).copied())
            .unwrap_or(self.highest);
        let expected = self.tracker.finish(self.start_after, final_head);
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
