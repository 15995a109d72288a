//! [`Wakeup`]: tells sleeping schedulers that a call became due earlier than they
//! planned (created, moved earlier, retry planned). Lossless: a wake that happens
//! between a scheduler's check and its wait is not missed.

use std::sync::Arc;

use tokio::sync::watch;

/// A wake-up signal shared by whoever creates or moves calls and the schedulers
/// that sleep until the next due call. Cloning shares the signal.
///
/// Across processes a store relays its own notifications into it (PostgreSQL
/// LISTEN/NOTIFY).
#[derive(Clone, Debug)]
pub struct Wakeup {
    tx: Arc<watch::Sender<u64>>,
}

impl Default for Wakeup {
    fn default() -> Self {
        Self::new()
    }
}

impl Wakeup {
    /// A new signal.
    pub fn new() -> Self {
        let (tx, _rx) = watch::channel(0);
        Wakeup { tx: Arc::new(tx) }
    }

    /// Wakes every listener.
    pub fn wake(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A listener; it sees every wake that happens after this call.
    pub fn subscribe(&self) -> WakeupListener {
        WakeupListener {
            rx: self.tx.subscribe(),
        }
    }
}

/// Waits for [`Wakeup::wake`].
#[derive(Debug)]
pub struct WakeupListener {
    rx: watch::Receiver<u64>,
}

impl WakeupListener {
    /// Resolves at the next wake (at once if one happened since the last wait).
    pub async fn woken(&mut self) {
        if self.rx.changed().await.is_err() {
            // The signal is gone: nobody can wake us any more.
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_before_the_wait_is_not_lost() {
        let w = Wakeup::new();
        let mut l = w.subscribe();
        w.wake();
        tokio::time::timeout(std::time::Duration::from_secs(5), l.woken())
            .await
            .expect("woken at once");
    }
}
