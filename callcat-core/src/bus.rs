//! [`UpdateBus`]: every change to a call or its transcript is published here, for
//! live views (Server-Sent Events), trackers and anyone embedding callcat.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::call::Call;
use crate::ids::{CallId, Owner};
use crate::transcript::TranscriptSegment;

/// One published change.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CallUpdate {
    /// A call was created or changed; this is the stored record.
    Call(Box<Call>),
    /// A call's transcript changed.
    Transcript {
        /// Our call id.
        call_id: CallId,
        /// Whose call.
        owner: Owner,
        /// The provider's call id, if known.
        provider_call_id: Option<String>,
        /// The whole transcript as now known (final segments plus, when
        /// `partial` is set, the latest partial utterance last).
        segments: Vec<TranscriptSegment>,
        /// The last segment is a partial (not yet final) result, published live only.
        partial: bool,
    },
    /// A scheduled call was deleted.
    Deleted {
        /// Our call id.
        call_id: CallId,
        /// Whose call.
        owner: Owner,
    },
}

impl CallUpdate {
    /// The owner the update belongs to.
    pub fn owner(&self) -> &Owner {
        match self {
            CallUpdate::Call(c) => &c.owner,
            CallUpdate::Transcript { owner, .. } | CallUpdate::Deleted { owner, .. } => owner,
        }
    }

    /// The call the update is about.
    pub fn call_id(&self) -> CallId {
        match self {
            CallUpdate::Call(c) => c.id,
            CallUpdate::Transcript { call_id, .. } | CallUpdate::Deleted { call_id, .. } => {
                *call_id
            }
        }
    }
}

/// A broadcast bus of [`CallUpdate`]s. Publishing never blocks; a subscriber that
/// falls behind is told how many updates it missed (`RecvError::Lagged`).
#[derive(Clone, Debug)]
pub struct UpdateBus {
    tx: broadcast::Sender<Arc<CallUpdate>>,
}

impl Default for UpdateBus {
    fn default() -> Self {
        Self::new(1024)
    }
}

impl UpdateBus {
    /// A bus that buffers `capacity` updates per subscriber.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        UpdateBus { tx }
    }

    /// Publishes an update (dropped if nobody listens).
    pub fn publish(&self, update: CallUpdate) {
        let _ = self.tx.send(Arc::new(update));
    }

    /// Publishes a call record.
    pub fn publish_call(&self, call: &Call) {
        self.publish(CallUpdate::Call(Box::new(call.clone())));
    }

    /// A new subscriber that sees updates published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<CallUpdate>> {
        self.tx.subscribe()
    }
}
