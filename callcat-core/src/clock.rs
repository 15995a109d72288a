//! Time goes through [`Clock`], so tests drive it with [`ManualClock`].
//!
//! callcat timestamps have millisecond precision: clocks return whole milliseconds
//! so that a call survives a round trip through any store unchanged.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::future::BoxFuture;
use tokio::sync::oneshot;

/// Truncates a timestamp to whole milliseconds (callcat's precision).
pub fn to_millis_precision(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// A `chrono` delta from a `std` duration, saturating instead of panicking.
pub fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// A source of the current time and a way to wait until a time.
pub trait Clock: Send + Sync + 'static {
    /// The current time, in whole milliseconds.
    fn now(&self) -> DateTime<Utc>;

    /// Resolves once [`Clock::now`] has reached `deadline`.
    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'static, ()>;

    /// Resolves after `d` has passed on this clock.
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        self.sleep_until(crate::time::saturating_add(self.now(), d))
    }
}

/// The real clock (wall time, tokio timers).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        to_millis_precision(Utc::now())
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let wait = (deadline - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that only moves when a test moves it.
///
/// Sleepers wake when [`ManualClock::advance`] or [`ManualClock::set`] passes their
/// deadline. Cloning shares the same time.
#[derive(Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<ManualInner>>,
}

struct ManualInner {
    now: DateTime<Utc>,
    sleepers: Vec<(DateTime<Utc>, oneshot::Sender<()>)>,
}

impl std::fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish()
    }
}

impl ManualClock {
    /// A clock standing at `start` (truncated to milliseconds).
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            inner: Arc::new(Mutex::new(ManualInner {
                now: to_millis_precision(start),
                sleepers: Vec::new(),
            })),
        }
    }

    /// A clock standing at 2030-01-01T00:00:00Z, a convenient fixed start for tests.
    pub fn at_fixed_start() -> Self {
        Self::new(DateTime::from_timestamp(1_893_456_000, 0).unwrap_or_default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ManualInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves time forward by `d` and wakes every sleeper whose deadline passed.
    pub fn advance(&self, d: Duration) {
        let target = crate::time::saturating_add(self.now(), d);
        self.set(target);
    }

    /// Sets the time (it never moves backwards) and wakes due sleepers.
    pub fn set(&self, t: DateTime<Utc>) {
        let due = {
            let mut inner = self.lock();
            let t = to_millis_precision(t);
            if t > inner.now {
                inner.now = t;
            }
            let now = inner.now;
            let (due, waiting): (Vec<_>, Vec<_>) =
                inner.sleepers.drain(..).partition(|(d, _)| *d <= now);
            inner.sleepers = waiting;
            due
        };
        for (_, tx) in due {
            let _ = tx.send(());
        }
    }

    /// How many tasks are waiting on this clock (lets tests wait until a task is parked).
    pub fn sleepers(&self) -> usize {
        let mut inner = self.lock();
        inner.sleepers.retain(|(_, tx)| !tx.is_closed());
        inner.sleepers.len()
    }

    /// The earliest deadline anyone is sleeping until.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        let mut inner = self.lock();
        inner.sleepers.retain(|(_, tx)| !tx.is_closed());
        inner.sleepers.iter().map(|(d, _)| *d).min()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.lock().now
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> BoxFuture<'static, ()> {
        let (tx, rx) = oneshot::channel();
        {
            let mut inner = self.lock();
            if deadline <= inner.now {
                return Box::pin(async {});
            }
            inner.sleepers.push((deadline, tx));
        }
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_when_advanced() {
        let clock = ManualClock::at_fixed_start();
        let start = clock.now();
        let sleeper = clock.sleep(Duration::from_secs(10));
        let handle = tokio::spawn(sleeper);
        clock.advance(Duration::from_secs(9));
        tokio::task::yield_now().await;
        assert!(!handle.is_finished());
        clock.advance(Duration::from_secs(1));
        handle.await.expect("sleeper finished");
        assert_eq!(clock.now() - start, TimeDelta::seconds(10));
    }

    #[test]
    fn manual_clock_never_goes_back() {
        let clock = ManualClock::at_fixed_start();
        let t = clock.now();
        clock.set(t - TimeDelta::seconds(5));
        assert_eq!(clock.now(), t);
    }

    #[test]
    fn system_clock_has_millisecond_precision() {
        let now = SystemClock.now();
        assert_eq!(now.timestamp_subsec_nanos() % 1_000_000, 0);
    }

    #[tokio::test]
    async fn sleeping_or_advancing_for_ever_does_not_panic() {
        let clock = ManualClock::at_fixed_start();
        let t = clock.now();
        let forever = clock.sleep(Duration::MAX);
        assert_eq!(clock.next_deadline(), Some(DateTime::<Utc>::MAX_UTC));
        drop(forever);
        clock.advance(Duration::MAX);
        assert!(clock.now() > t);
    }
}
