//! Socket.IO on the feed: `GET /socket.io/?EIO=4&transport=websocket`. Engine.IO v4 over WebSocket
//! only (the polling transport gets a 400 naming the fix); clients connect to the main namespace and
//! emit `subscribe` / `unsubscribe` / `publish`; events arrive as the `event` event whose argument is
//! the shared event JSON. Each socket follows its topics through the bus, so rooms span instances
//! with `--bus redis` and a client resumes from its cursor with nothing lost.

mod session;

use axum::{
    extract::{ws::rejection::WebSocketUpgradeRejection, State},
    response::Response,
    routing::get,
    Router,
};
use serde::Deserialize;

use crate::{
    app::AppState,
    error::AppError,
    extract::ValidQuery,
    metrics::PatternKind,
    ws_conn::{Limits, Upgrade},
};

/// The path Socket.IO clients use by default (`path` option `/socket.io`, plus the trailing slash).
pub const PATH: &str = "/socket.io/";

pub fn routes(_: &AppState) -> Router<AppState> {
    // Without the slash too: a client configured with `path: "/socket.io"` and no trailing slash.
    Router::new()
        .route(PATH, get(upgrade).post(polling))
        .route("/socket.io", get(upgrade).post(polling))
}

/// The Engine.IO query. Other parameters (a client's `t` cache-buster, auth in the query) are
/// ignored, as the reference server does.
#[derive(Debug, Deserialize)]
struct EngineQuery {
    #[serde(rename = "EIO")]
    eio: Option<String>,
    transport: Option<String>,
    sid: Option<String>,
}

const POLLING_REFUSED: &str = "the polling transport is not supported: this server speaks \
     Engine.IO over WebSocket only; connect with transports: [\"websocket\"]";

/// Checks the query the way the Engine.IO spec asks (400 for a missing or wrong `EIO`/`transport`),
/// and refuses what this server does not do: polling, and resuming a polling session (`sid`).
fn check_query(query: &EngineQuery) -> Result<(), AppError> {
    match query.eio.as_deref() {
        Some("4") => {}
        Some(other) => {
            return Err(AppError::BadQuery(format!(
                "EIO={other} is not supported; this server speaks Engine.IO v4 \
                 (Socket.IO v3 and later clients)"
            )))
        }
        None => {
            return Err(AppError::BadQuery(
                "the EIO query parameter is missing; Engine.IO v4 clients send EIO=4".into(),
            ))
        }
    }
    match query.transport.as_deref() {
        Some("websocket") => {}
        Some("polling") => return Err(AppError::BadQuery(POLLING_REFUSED.into())),
        Some(other) => {
            return Err(AppError::BadQuery(format!(
                "unknown transport {other:?}; use transport=websocket"
            )))
        }
        None => {
            return Err(AppError::BadQuery(
                "the transport query parameter is missing; use transport=websocket".into(),
            ))
        }
    }
    match &query.sid {
        Some(sid) => Err(AppError::BadQuery(format!(
            "unknown session {sid:?}: sessions start on a WebSocket, never by upgrading polling"
        ))),
        None => Ok(()),
    }
}

async fn upgrade(
    State(state): State<AppState>,
    ValidQuery(query): ValidQuery<EngineQuery>,
    ws: Result<Upgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    state.metrics.request(PatternKind::SocketIo);
    check_query(&query)?;
    let ws = ws.map_err(|rejection| {
        AppError::BadQuery(format!(
            "GET {PATH} needs a WebSocket upgrade: {}",
            rejection.body_text()
        ))
    })?;
    let limits = Limits::of(&state, PatternKind::SocketIo);
    Ok(ws.on_upgrade(limits, move |conn| session::run(state, conn)))
}

/// `POST /socket.io/` is how the polling transport sends packets: refused like a polling `GET`.
async fn polling(State(state): State<AppState>) -> AppError {
    state.metrics.request(PatternKind::SocketIo);
    AppError::BadQuery(POLLING_REFUSED.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(eio: Option<&str>, transport: Option<&str>, sid: Option<&str>) -> EngineQuery {
        EngineQuery {
            eio: eio.map(Into::into),
            transport: transport.map(Into::into),
            sid: sid.map(Into::into),
        }
    }

    #[test]
    fn only_engine_io_4_over_websocket_is_accepted() {
        assert!(check_query(&query(Some("4"), Some("websocket"), None)).is_ok());
        let refused = |q: EngineQuery| check_query(&q).err().map(|e| e.to_string());
        let polling = refused(query(Some("4"), Some("polling"), None)).unwrap_or_default();
        assert!(polling.contains("transports: [\"websocket\"]"), "{polling}");
        assert!(refused(query(Some("3"), Some("websocket"), None)).is_some());
        assert!(refused(query(Some("abc"), Some("websocket"), None)).is_some());
        assert!(refused(query(None, Some("websocket"), None)).is_some());
        assert!(refused(query(Some("4"), None, None)).is_some());
        assert!(refused(query(Some("4"), Some("abc"), None)).is_some());
        assert!(refused(query(Some("4"), Some("websocket"), Some("x"))).is_some());
    }
}
