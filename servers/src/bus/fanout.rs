//! Fan-out of live events to subscribers through one bounded mailbox each, filled by the publisher.
//!
//! A publish puts the shared event in every subscriber's mailbox and wakes the subscriber only if it
//! is waiting, so a burst costs one wake-up per subscriber however many events it carries, and the
//! subscriber drains them in one go. A subscriber a whole mailbox behind is marked lagged by the
//! publish itself, not when it next reads: a pattern that cannot wait for the reader (SSE, whose
//! socket writer may be stalled) is told at once through a hook ([`Subscription::on_overflow`]).
//!
//! Without a hook an overflow behaves as tokio's broadcast channel does: the queued events are
//! dropped and the next item is `Lagged { missed }`, then the stream ends. With a hook the hook runs
//! once, the queued events are still handed out, and the stream ends after them.

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering::Relaxed},
        Arc, Mutex, MutexGuard,
    },
    task::{Context, Poll, Waker},
};

use futures_util::{Stream, StreamExt};

use super::{Delivery, Subscription};
use crate::event::SharedEvent;
use crate::lock::lock;

/// What a subscriber is told when it overflows; runs once, on the publisher's task.
pub type OverflowHook = Box<dyn FnOnce() + Send>;

/// One topic's subscribers.
pub struct Fanout {
    capacity: usize,
    mailboxes: Mutex<Vec<Arc<Mailbox>>>,
    live: Arc<AtomicUsize>,
}

impl Fanout {
    /// A fan-out whose subscribers may fall `capacity` events behind.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            mailboxes: Mutex::new(Vec::new()),
            live: Arc::default(),
        }
    }

    /// Hands `event` to every subscriber. Mailboxes of departed subscribers are dropped here.
    pub fn send(&self, event: &SharedEvent) {
        let mut mailboxes = lock(&self.mailboxes);
        mailboxes.retain(|mailbox| mailbox.offer(Delivery::Event(event.clone()), self.capacity));
    }

    /// A new subscriber, receiving every event sent from now on.
    pub fn subscribe(&self) -> Receiver {
        let mailbox = Arc::new(Mailbox::default());
        let mut mailboxes = lock(&self.mailboxes);
        // Departed subscribers leave with no publish to sweep them on a quiet topic.
        let live = self.live.fetch_add(1, Relaxed) + 1;
        if mailboxes.len() >= 2 * live + 16 {
            mailboxes.retain(|mailbox| !mailbox.state().gone);
        }
        mailboxes.push(mailbox.clone());
        Receiver {
            mailbox,
            live: Some(self.live.clone()),
        }
    }

    /// Subscribers currently following the topic.
    pub fn receiver_count(&self) -> usize {
        self.live.load(Relaxed)
    }
}

impl Drop for Fanout {
    /// The topic is gone: every stream ends after what it holds.
    fn drop(&mut self) {
        for mailbox in lock(&self.mailboxes).drain(..) {
            mailbox.end();
        }
    }
}

/// One subscriber's queue and its lag state.
#[derive(Default)]
pub struct Mailbox {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Delivery>,
    /// Events that did not fit once the mailbox was full.
    missed: u64,
    overflowed: bool,
    /// No more items will come (the sender is gone, or the overflow was reported).
    ended: bool,
    /// An overflow is told to the hook (once), not reported as `Lagged`.
    hooked: bool,
    hook: Option<OverflowHook>,
    /// The reader, when it is waiting for an item.
    waker: Option<Waker>,
    /// The receiver was dropped: the sender forgets the mailbox.
    gone: bool,
    /// A forwarder waiting for the receiver to go (see [`Subscription::on_overflow`]).
    gone_waker: Option<Waker>,
}

impl Mailbox {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Nothing more comes: the stream ends after what it holds.
    fn end(&self) {
        let mut state = self.state();
        state.ended = true;
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Queues `item`; false when the receiver is gone and the mailbox can be forgotten.
    fn offer(&self, item: Delivery, capacity: usize) -> bool {
        let mut state = self.state();
        if state.gone {
            return false;
        }
        if state.overflowed || state.ended {
            state.missed += 1;
            return true;
        }
        let mut hook = None;
        if state.queue.len() >= capacity {
            state.overflowed = true;
            state.missed = 1;
            hook = state.hook.take();
            if !state.hooked {
                // Reported as `Lagged` next, as a broadcast receiver would: what is queued is
                // skipped.
                state.queue = VecDeque::new();
            }
        } else {
            state.queue.push_back(item);
        }
        let waker = state.waker.take();
        drop(state);
        if let Some(hook) = hook {
            hook();
        }
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        let mut state = self.state();
        if let Some(item) = state.queue.pop_front() {
            if state.queue.is_empty() && state.queue.capacity() > 64 {
                // A burst is over: an idle subscriber keeps no large queue.
                state.queue = VecDeque::new();
            }
            return Poll::Ready(Some(item));
        }
        if state.ended {
            return Poll::Ready(None);
        }
        if state.overflowed {
            state.ended = true;
            let reported = !state.hooked;
            return Poll::Ready(reported.then_some(Delivery::Lagged {
                missed: state.missed,
            }));
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// The reading end of one mailbox: the topic's live events, then `Lagged` or the end.
pub struct Receiver {
    mailbox: Arc<Mailbox>,
    /// The fan-out's count of live receivers (none for a forwarder's own mailbox).
    live: Option<Arc<AtomicUsize>>,
}

impl Receiver {
    /// A handle on the mailbox, for installing an overflow hook later.
    pub(super) fn mailbox(&self) -> Arc<Mailbox> {
        self.mailbox.clone()
    }
}

impl Stream for Receiver {
    type Item = Delivery;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        self.mailbox.poll_next(cx)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut state = self.mailbox.state();
        state.gone = true;
        state.queue = VecDeque::new();
        state.hook = None;
        let waker = state.gone_waker.take();
        drop(state);
        if let Some(live) = &self.live {
            live.fetch_sub(1, Relaxed);
        }
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Subscription {
    /// Calls `hook` once, on the publisher's side, when this subscriber falls `capacity` events
    /// behind; the stream then ends after the events it holds. A subscription from a fan-out of
    /// mailboxes (the in-process bus) needs nothing more, and its bound is the bus's subscriber
    /// buffer; any other is moved into a mailbox of `capacity` by a forwarding task.
    pub fn on_overflow(self, capacity: usize, hook: OverflowHook) -> Subscription {
        if let Some(mailbox) = self.mailbox.clone() {
            let mut state = mailbox.state();
            state.hooked = true;
            if state.overflowed {
                // Overflowed before anyone was listening: tell it now.
                drop(state);
                hook();
            } else {
                state.hook = Some(hook);
            }
            return self;
        }
        let Subscription {
            inner, after, head, ..
        } = self;
        let mailbox = Arc::new(Mailbox::default());
        {
            let mut state = mailbox.state();
            state.hooked = true;
            state.hook = Some(hook);
        }
        let receiver = Receiver {
            mailbox: mailbox.clone(),
            live: None,
        };
        tokio::spawn(forward(inner, mailbox, capacity));
        Subscription::from_receiver(after, head, receiver)
    }
}

/// Moves a subscription's items into `mailbox` until the subscription ends, the mailbox overflows or
/// its reader is gone.
async fn forward(
    mut items: Pin<Box<dyn Stream<Item = Delivery> + Send>>,
    mailbox: Arc<Mailbox>,
    capacity: usize,
) {
    let reader_gone = std::future::poll_fn(|cx| {
        let mut state = mailbox.state();
        if state.gone {
            return Poll::Ready(());
        }
        state.gone_waker = Some(cx.waker().clone());
        Poll::Pending
    });
    let mut reader_gone = std::pin::pin!(reader_gone);
    loop {
        let item = tokio::select! {
            item = items.next() => item,
            () = &mut reader_gone => return,
        };
        let item = match item {
            Some(item) => item,
            None => {
                mailbox.end();
                return;
            }
        };
        if !mailbox.offer(item, capacity) || mailbox.state().overflowed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use bytes::Bytes;
    use futures_util::{stream, FutureExt};

    use super::*;
    use crate::{event::Event, topic::TopicName};

    fn event(seq: u64) -> SharedEvent {
        let topic = TopicName::parse("t").unwrap_or_else(|e| panic!("{e}"));
        Event::new(topic, seq, Bytes::from_static(b"x"))
    }

    fn seq(item: Option<Delivery>) -> Option<u64> {
        match item {
            Some(Delivery::Event(e)) => Some(e.seq),
            _ => None,
        }
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_event_in_order() {
        let fanout = Fanout::new(8);
        let mut a = fanout.subscribe();
        let mut b = fanout.subscribe();
        for n in 1..=3 {
            fanout.send(&event(n));
        }
        for receiver in [&mut a, &mut b] {
            for n in 1..=3 {
                assert_eq!(seq(receiver.next().await), Some(n));
            }
            assert!(receiver.next().now_or_never().is_none(), "nothing more yet");
        }
        assert_eq!(fanout.receiver_count(), 2);
        drop(a);
        assert_eq!(fanout.receiver_count(), 1);
        fanout.send(&event(4));
        assert_eq!(
            lock(&fanout.mailboxes).len(),
            1,
            "the departed mailbox was dropped"
        );
    }

    #[tokio::test]
    async fn a_full_mailbox_reports_lagged_with_the_missed_count_then_ends() {
        let fanout = Fanout::new(4);
        let mut slow = fanout.subscribe();
        for n in 1..=10 {
            fanout.send(&event(n));
        }
        assert!(matches!(
            slow.next().await,
            Some(Delivery::Lagged { missed: 6 })
        ));
        assert!(slow.next().await.is_none());
    }

    #[tokio::test]
    async fn a_hook_runs_once_at_the_overflow_and_the_queue_is_still_handed_out() {
        let fanout = Fanout::new(2);
        let fired = Arc::new(AtomicUsize::new(0));
        let counter = fired.clone();
        let receiver = fanout.subscribe();
        let subscription = Subscription::from_receiver(0, 0, receiver).on_overflow(
            2,
            Box::new(move || {
                counter.fetch_add(1, Relaxed);
            }),
        );
        let mut subscription = subscription;
        for n in 1..=5 {
            fanout.send(&event(n));
        }
        assert_eq!(fired.load(Relaxed), 1);
        assert_eq!(seq(subscription.next().await), Some(1));
        assert_eq!(seq(subscription.next().await), Some(2));
        assert!(subscription.next().await.is_none());
    }

    #[tokio::test]
    async fn any_subscription_can_be_watched_through_a_forwarder() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Delivery>();
        let inner = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let fired = Arc::new(AtomicBool::new(false));
        let flag = fired.clone();
        let mut watched = Subscription::new(0, 0, inner)
            .on_overflow(3, Box::new(move || flag.store(true, Relaxed)));
        let _ = tx.send(Delivery::Event(event(1)));
        assert_eq!(seq(watched.next().await), Some(1));
        // The reader stops: the forwarder fills the mailbox and reports the overflow.
        for n in 2..=10 {
            let _ = tx.send(Delivery::Event(event(n)));
        }
        for _ in 0..100 {
            if fired.load(Relaxed) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(fired.load(Relaxed), "the overflow was not reported");
        let rest: Vec<_> = watched.map(|d| seq(Some(d))).collect().await;
        assert_eq!(rest, vec![Some(2), Some(3), Some(4)]);
    }

    #[tokio::test]
    async fn a_forwarded_stream_ends_with_its_source_and_keeps_its_items() {
        let items = stream::iter(vec![
            Delivery::Event(event(1)),
            Delivery::Lagged { missed: 3 },
        ]);
        let watched = Subscription::new(0, 0, items).on_overflow(8, Box::new(|| {}));
        let got: Vec<_> = watched.collect().await;
        assert!(matches!(
            got.as_slice(),
            [Delivery::Event(_), Delivery::Lagged { missed: 3 }]
        ));
    }

    #[tokio::test]
    async fn a_dropped_fanout_ends_its_streams() {
        let fanout = Fanout::new(4);
        let mut receiver = fanout.subscribe();
        fanout.send(&event(1));
        drop(fanout);
        assert_eq!(seq(receiver.next().await), Some(1));
        assert!(receiver.next().await.is_none());
    }
}
