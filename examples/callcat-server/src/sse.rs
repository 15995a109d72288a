//! `GET /api/calls/stream`: Server-Sent Events of the caller's calls
//! (`call.updated`, `transcript.updated`), tenant-wide for admins. The stream
//! opens with `stream.ready`; a subscriber that falls behind gets `stream.lagged`
//! with how many updates it missed (re-read the calls to catch up).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use callcat_core::{CallUpdate, Owner};
use futures::Stream;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::dto::{CallDto, SegmentDto};
use crate::error::ErrorBody;

/// Data of a `transcript.updated` event.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptEventDto {
    /// Our call id.
    pub call_id: String,
    /// The provider's call id.
    pub provider_call_id: Option<String>,
    /// The whole transcript as now known.
    pub segments: Vec<SegmentDto>,
    /// The last segment is not final yet.
    pub partial: bool,
}

/// Data of a `stream.lagged` event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LaggedDto {
    /// How many updates were dropped for this subscriber.
    pub missed: u64,
}

/// Whether `user` may see updates of `owner`.
pub fn visible(user: &AuthUser, owner: &Owner) -> bool {
    if user.admin {
        owner.tenant == user.owner.tenant
    } else {
        *owner == user.owner
    }
}

/// The SSE event for an update.
pub fn event_of(u: &CallUpdate) -> Option<Event> {
    let ev = match u {
        CallUpdate::Call(c) => Event::default()
            .event("call.updated")
            .json_data(CallDto::from(&**c)),
        CallUpdate::Transcript {
            call_id,
            provider_call_id,
            segments,
            partial,
            ..
        } => Event::default()
            .event("transcript.updated")
            .json_data(TranscriptEventDto {
                call_id: call_id.to_string(),
                provider_call_id: provider_call_id.clone(),
                segments: segments
                    .iter()
                    .map(|s| SegmentDto {
                        role: s.role.as_str().to_owned(),
                        text: s.text.clone(),
                        start_ms: s.start_ms,
                        end_ms: s.end_ms,
                    })
                    .collect(),
                partial: *partial,
            }),
        _ => return None,
    };
    ev.ok()
}

fn lagged(missed: u64) -> Event {
    Event::default()
        .event("stream.lagged")
        .json_data(LaggedDto { missed })
        .unwrap_or_else(|_| Event::default().event("stream.lagged"))
}

struct Feed {
    rx: tokio::sync::broadcast::Receiver<Arc<CallUpdate>>,
    stopping: tokio::sync::watch::Receiver<bool>,
    user: AuthUser,
    started: bool,
}

/// Live updates of the caller's calls as Server-Sent Events.
#[utoipa::path(
    get, path = "/api/calls/stream", tag = "live",
    responses(
        (status = 200, description = "text/event-stream of `stream.ready`, `call.updated` (a call), `transcript.updated`, `stream.lagged`", content_type = "text/event-stream"),
        (status = 401, description = "No valid token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn stream(
    State(state): State<AppState>,
    user: AuthUser,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let feed = Feed {
        rx: state.bus.subscribe(),
        stopping: state.stopping.clone(),
        user,
        started: false,
    };
    let s = futures::stream::unfold(feed, |mut f| async move {
        if !f.started {
            f.started = true;
            return Some((Ok(Event::default().event("stream.ready").data("{}")), f));
        }
        loop {
            if *f.stopping.borrow() {
                return None;
            }
            let next = tokio::select! {
                _ = f.stopping.wait_for(|s| *s) => return None,
                r = f.rx.recv() => r,
            };
            match next {
                Ok(u) if visible(&f.user, u.owner()) => {
                    if let Some(ev) = event_of(&u) {
                        return Some((Ok(ev), f));
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => return Some((Ok(lagged(n)), f)),
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(s).keep_alive(KeepAlive::default())
}
