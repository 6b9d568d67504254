//! Who may use which admin endpoint — one function, [`is_open`], deny by default:
//! - open to anyone who completes the TLS handshake (probes, scrapers, the dashboard's static
//!   files): `/health`, `/ready`, `/metrics`, `/status`, `/members` (`/membership`), the list
//!   of `/commands`, the four-letter words that reveal no session, path or host detail (`ruok`,
//!   `srvr`, `mntr`, `isro`), and the dashboard's page, script and style;
//! - everything else — every endpoint that reveals znode data, ACLs, sessions, watches,
//!   connections or the environment, and every one that changes state — needs an operator: a
//!   client certificate whose subject CN is listed in `--admin-identities`. Without a
//!   certificate the answer is 401, with one that is not listed 403; neither says anything about
//!   the data. Every operator request is logged with the operator's name.
//!
//! Under `--insecure` there is no identity to check, and every endpoint is open.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::admin::fourletter::Word;
use crate::admin::http::error;
use crate::admin::listener::AdminPeer;

/// The four-letter words anyone may ask for on the admin port (as ZooKeeper's default
/// `4lw.commands.whitelist` keeps `srvr` and the health checks).
const OPEN_WORDS: &[Word] = &[Word::Ruok, Word::Srvr, Word::Mntr, Word::Isro];

/// The admin port's policy.
#[derive(Debug, Clone)]
pub struct AdminAccess {
    /// `--insecure`: nobody is identified, everything is open.
    pub insecure: bool,
    /// The subject CNs of the operators' certificates (`--admin-identities`).
    pub operators: BTreeSet<String>,
}

/// Whether `method path` is open to anyone (see the module documentation); anything not listed
/// here needs an operator, so a new endpoint is protected until it is listed.
pub fn is_open(method: &Method, path: &str) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return false;
    }
    match path {
        "/health" | "/ready" | "/metrics" | "/status" | "/members" | "/membership"
        | "/commands" | "/" | "/ui" | "/ui/" | "/ui/app.js" | "/ui/style.css" => true,
        _ => path
            .strip_prefix("/commands/")
            .and_then(Word::parse)
            .is_some_and(|w| OPEN_WORDS.contains(&w)),
    }
}

/// The middleware in front of every route: lets open requests through, and others only from an
/// operator.
pub async fn guard(State(access): State<Arc<AdminAccess>>, req: Request, next: Next) -> Response {
    if access.insecure || is_open(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let peer = req
        .extensions()
        .get::<ConnectInfo<AdminPeer>>()
        .map(|ConnectInfo(p)| p.clone());
    let identity = peer.as_ref().and_then(|p| p.identity.as_ref());
    match identity {
        None => {
            tracing::info!(peer = ?peer.map(|p| p.addr), method = %req.method(), path = req.uri().path(), "admin request refused: no client certificate");
            error(
                StatusCode::UNAUTHORIZED,
                "this endpoint needs an operator's client certificate (its CN listed in \
                 --admin-identities)",
            )
        }
        Some(id) if access.operators.contains(&id.name) => {
            tracing::info!(operator = %id.name, method = %req.method(), path = req.uri().path(), "admin request");
            next.run(req).await
        }
        Some(id) => {
            tracing::info!(identity = %id.name, method = %req.method(), path = req.uri().path(), "admin request refused: not an operator");
            error(
                StatusCode::FORBIDDEN,
                format!("x509:{} is not an operator of this cluster", id.name),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_reads_are_open() {
        for path in [
            "/health",
            "/ready",
            "/metrics",
            "/status",
            "/members",
            "/commands",
            "/commands/ruok",
            "/commands/server_stats",
            "/commands/mntr",
            "/ui",
        ] {
            assert!(is_open(&Method::GET, path), "{path}");
        }
        for path in [
            "/tree",
            "/snapshot",
            "/sessions",
            "/watches",
            "/digest",
            "/commands/dump",
            "/commands/cons",
            "/commands/envi",
            "/commands/conf",
            "/commands/stat",
            "/commands/wchp",
            "/commands/nope",
            "/ui/../tree",
            "/anything-new",
        ] {
            assert!(!is_open(&Method::GET, path), "{path}");
        }
        for path in ["/members/add-learner", "/snapshot", "/health"] {
            assert!(!is_open(&Method::POST, path), "{path}");
        }
    }
}
