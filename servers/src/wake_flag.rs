//! A waker that remembers it was woken, so a task that waits on several sources polls one of them
//! only when that source woke it: an event for a subscriber wakes a WebSocket session far more often
//! than its client writes, and polling the client's side through tungstenite on every wake-up costs
//! more than the delivery's own code.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering::AcqRel, Ordering::Release},
        Arc,
    },
    task::{Context, Poll, Wake, Waker},
};

use futures_util::task::AtomicWaker;

struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Release);
        self.task.wake();
    }
}

/// One source's waker. It starts out woken: a source is polled at least once before it is trusted
/// to wake the task.
pub struct WakeFlag {
    flag: Arc<Flag>,
    waker: Waker,
}

impl Default for WakeFlag {
    fn default() -> Self {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(flag.clone());
        Self { flag, waker }
    }
}

impl WakeFlag {
    /// Polls `source` with this flag's waker when it was woken since it last returned `Pending`;
    /// otherwise returns `Pending` without touching it. The task behind `cx` is woken with the flag.
    /// A source that returns `Ready` is polled again next time: it may hold more.
    pub fn poll<T>(
        &self,
        cx: &mut Context<'_>,
        source: impl FnOnce(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        // Registered before the flag is read: a wake between the two still reaches the task.
        self.flag.task.register(cx.waker());
        if !self.flag.woken.swap(false, AcqRel) {
            return Poll::Pending;
        }
        let polled = source(&mut Context::from_waker(&self.waker));
        if polled.is_ready() {
            self.flag.woken.store(true, Release);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use std::{
        cell::{Cell, RefCell},
        sync::atomic::{AtomicUsize, Ordering::Relaxed},
        task::Waker,
    };

    use super::*;

    /// Counts the wake-ups of the "task".
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    #[test]
    fn a_source_is_polled_again_only_after_it_woke_the_task() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let task = Waker::from(count.clone());
        let mut cx = Context::from_waker(&task);
        let flag = WakeFlag::default();
        let polls = Cell::new(0);
        let stored: RefCell<Option<Waker>> = RefCell::new(None);
        let source = |cx: &mut Context<'_>| {
            polls.set(polls.get() + 1);
            *stored.borrow_mut() = Some(cx.waker().clone());
            Poll::<()>::Pending
        };
        assert!(flag.poll(&mut cx, source).is_pending());
        assert!(flag.poll(&mut cx, source).is_pending());
        assert_eq!(polls.get(), 1, "not woken: not polled again");
        stored.take().unwrap().wake();
        assert_eq!(
            count.0.load(Relaxed),
            1,
            "the source's wake reaches the task"
        );
        assert!(flag.poll(&mut cx, source).is_pending());
        assert_eq!(polls.get(), 2);
    }

    #[test]
    fn a_ready_source_is_polled_again() {
        let task = Waker::noop();
        let mut cx = Context::from_waker(task);
        let flag = WakeFlag::default();
        let mut polls = 0;
        for _ in 0..3 {
            assert!(flag
                .poll(&mut cx, |_| {
                    polls += 1;
                    Poll::Ready(())
                })
                .is_ready());
        }
        assert_eq!(polls, 3);
    }
}
