//! Whether the worker may start provider calls: closed while result writes
//! are failing, so a store outage does not keep buying answers that cannot
//! be kept. Calls already in flight finish and wait, with their batch, for
//! the store to accept them.

use tokio::sync::watch;

pub struct StoreGate {
    open: watch::Sender<bool>,
}

impl Default for StoreGate {
    fn default() -> Self {
        Self {
            open: watch::Sender::new(true),
        }
    }
}

impl StoreGate {
    /// Waits until results can be written (at once when they can).
    pub async fn wait_open(&self) {
        let mut rx = self.open.subscribe();
        // The sender lives in `self`, so the channel cannot close here.
        let _ = rx.wait_for(|open| *open).await;
    }

    pub fn close(&self) {
        self.open
            .send_if_modified(|open| std::mem::replace(open, false));
    }

    pub fn open(&self) {
        self.open
            .send_if_modified(|open| !std::mem::replace(open, true));
    }

    pub fn is_open(&self) -> bool {
        *self.open.borrow()
    }

    /// A receiver for clients that wait for the gate themselves (each
    /// provider attempt, see `runs`).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.open.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;

    #[tokio::test]
    async fn calls_wait_while_the_gate_is_closed_and_go_once_it_opens() {
        let gate = Arc::new(StoreGate::default());
        gate.wait_open().await;
        gate.close();
        assert!(!gate.is_open());
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.wait_open().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        gate.open();
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("released")
            .unwrap();
    }
}
