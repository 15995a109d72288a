//! `GET /api/calls/stream`: Server-Sent Events of the caller's calls
//! (`call.updated`, `transcript.updated`), tenant-wide for admins. The stream
//! opens with `stream.ready`; a subscriber that falls behind gets `stream.lagged`
//! with how many updates it missed, and `stream.resynced` when the live tracker
//! reloaded from the store (re-read the calls to catch up). When the caller's
//! credential expires (a token's `exp`, on the engine's clock) the stream sends
//! `stream.expired` and ends: reconnect with a fresh token. It also ends when
//! the host shuts down.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use callcat_core::{CallUpdate, LiveEvent, LiveScope, LiveSubscription, Owner};
use futures::Stream;
use futures::future::BoxFuture;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::AuthUser;
use crate::dto::{CallDto, SegmentDto};
use crate::error::ErrorBody;
use crate::router::ApiState;

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
    if user.is_admin() {
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
        CallUpdate::Deleted { call_id, .. } => Event::default()
            .event("call.deleted")
            .json_data(serde_json::json!({ "callId": call_id.to_string() })),
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
    live: LiveSubscription,
    state: ApiState,
    user: AuthUser,
    started: bool,
    /// Resolves when the caller's credential expires (never, without expiry).
    expiry: BoxFuture<'static, ()>,
    expired: bool,
}

fn expired() -> Event {
    Event::default().event("stream.expired").data("{}")
}

/// Live updates of the caller's calls as Server-Sent Events.
#[utoipa::path(
    get, path = "/api/calls/stream", tag = "live",
    responses(
        (status = 200, description = "text/event-stream of `stream.ready`, `call.updated` (a call), `transcript.updated`, `stream.lagged`, and `stream.expired` (then the stream ends) when the token expires", content_type = "text/event-stream"),
        (status = 401, description = "No valid token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn stream(
    State(state): State<ApiState>,
    user: AuthUser,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let expiry: BoxFuture<'static, ()> = match user.expires_at {
        Some(at) => state.clock().sleep_until(at),
        None => Box::pin(std::future::pending()),
    };
    let feed = Feed {
        // Admins see their tenant; users their own calls within it (filtered below).
        live: state
            .tracker()
            .subscribe(LiveScope::Tenant(user.owner.tenant.clone())),
        state: state.clone(),
        user,
        started: false,
        expiry,
        expired: false,
    };
    let s = futures::stream::unfold(feed, |mut f| async move {
        if !f.started {
            f.started = true;
            return Some((Ok(Event::default().event("stream.ready").data("{}")), f));
        }
        loop {
            if f.expired || f.state.is_stopping() {
                return None;
            }
            let now = f.state.clock().now();
            if f.user.expires_at.is_some_and(|at| at <= now) {
                f.expired = true;
                return Some((Ok(expired()), f));
            }
            let next = tokio::select! {
                _ = f.state.stopping() => return None,
                _ = &mut f.expiry => {
                    f.expired = true;
                    return Some((Ok(expired()), f));
                }
                r = f.live.recv() => r,
            };
            match next {
                Some(LiveEvent::Update { update, .. }) if visible(&f.user, update.owner()) => {
                    if let Some(ev) = event_of(&update) {
                        return Some((Ok(ev), f));
                    }
                }
                Some(LiveEvent::Lagged { missed }) => return Some((Ok(lagged(missed)), f)),
                Some(LiveEvent::Resynced) => {
                    return Some((Ok(Event::default().event("stream.resynced").data("{}")), f));
                }
                Some(_) => {}
                None => return None,
            }
        }
    });
    Sse::new(s).keep_alive(KeepAlive::default())
}
