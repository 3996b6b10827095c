//! The wall clock the connectors' daily budgets read. Production uses [`SystemClock`];
//! tests drive a [`ManualClock`] forward instead of sleeping until midnight.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use confab_engine::time::{now_millis, UnixMillis};
use tokio::sync::Notify;

pub trait Clock: Send + Sync + fmt::Debug + 'static {
    fn now(&self) -> UnixMillis;
    /// Woken when the clock jumps (a manual clock moved); `None` for a clock that only
    /// moves with real time.
    fn jumps(&self) -> Option<&Notify> {
        None
    }
}

/// The shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        now_millis()
    }
}

/// A clock that moves only when told to.
#[derive(Default)]
pub struct ManualClock {
    now: AtomicI64,
    jumped: Notify,
}

impl ManualClock {
    pub fn starting_at(now: UnixMillis) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            now: AtomicI64::new(now),
            jumped: Notify::new(),
        })
    }

    pub fn set(&self, now: UnixMillis) {
        self.now.store(now, Ordering::SeqCst);
        self.jumped.notify_waiters();
    }

    pub fn advance(&self, by_ms: i64) {
        self.now.fetch_add(by_ms, Ordering::SeqCst);
        self.jumped.notify_waiters();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMillis {
        self.now.load(Ordering::SeqCst)
    }

    fn jumps(&self) -> Option<&Notify> {
        Some(&self.jumped)
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish()
    }
}
