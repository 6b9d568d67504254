//! The admin HTTP port (axum): every route is listed in [`router`]. Handlers live by concern —
//! [`http`] (health, readiness, status, sessions, watches, tree, digest, four-letter words),
//! [`membership`] (changes), [`tenants`] (the tenant table), [`audit`] (the audit trail),
//! [`snapshot`] (trigger, download, describe),
//! [`metrics`] (Prometheus, with [`histogram`]'s fixed-bucket request histograms), [`ui`]
//! (the dashboard) — and render [`views`], the plain-data views that [`fourletter`] renders too
//! (the four-letter words are also answered on the client port, which never reaches axum).
//! Every answer is bounded: lists are paged, the tree view is limited, waits have a timeout.
//! [`listener`] accepts HTTPS connections and names their certificates, [`serve`] answers them;
//! [`access`] decides which endpoints need an operator; [`body`] reads request bodies, bounded.
//! docs/admin-api.md documents each endpoint.

pub mod access;
pub mod audit;
pub mod body;
pub mod fourletter;
pub mod histogram;
pub mod http;
pub mod listener;
pub mod membership;
pub mod metrics;
pub mod serve;
pub mod snapshot;
pub mod tenants;
pub mod ui;
pub mod views;

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Redirect;
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::node::Node;

/// Every route of the admin port, behind [`access::guard`].
pub fn router(node: Arc<Node>) -> Router {
    type S = State<Arc<Node>>;
    let access = Arc::new(access::AdminAccess {
        insecure: node.cfg.insecure,
        operators: node.cfg.admin_identities.clone(),
    });
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route(
            "/ready",
            get(|State(node): S, Query(q): Query<http::ReadyQuery>| async move { http::ready(&node, q).await }),
        )
        .route(
            "/status",
            get(|State(node): S| async move { Json(views::status(&node).await) }),
        )
        .route(
            "/members",
            get(|State(node): S| async move { Json(views::membership_described(&node).await) }),
        )
        // The membership's older name, kept for existing scripts.
        .route(
            "/membership",
            get(|State(node): S| async move { Json(views::membership_described(&node).await) }),
        )
        .route("/members/add-learner", post(membership::add_learner))
        .route("/members/promote", post(membership::promote))
        .route("/members/remove", post(membership::remove))
        .route("/tenants", get(tenants::list).post(tenants::declare))
        .route("/audit", get(audit::query))
        .route("/audit/verify", get(audit::verify))
        .route("/tenants/{name}", axum::routing::delete(tenants::remove))
        .route(
            "/snapshot",
            post(snapshot::trigger_snapshot)
                .get(snapshot::download_snapshot)
                .head(snapshot::describe_snapshot),
        )
        .route("/metrics", get(metrics::render))
        .route(
            "/sessions",
            get(|State(node): S, Query(p): Query<http::Page>| async move { Json(http::sessions(&node, &p)) }),
        )
        .route(
            "/watches",
            get(|State(node): S, Query(p): Query<http::Page>| async move { http::watches(&node, &p) }),
        )
        .route(
            "/tree",
            get(|State(node): S, Query(q): Query<http::TreeQuery>| async move { http::tree(&node, &q) }),
        )
        .route(
            "/digest",
            get(|State(node): S| async move { http::digest(&node).await }),
        )
        .route("/commands", get(|| async { Json(http::command_list()) }))
        .route(
            "/commands/{name}",
            get(
                |State(node): S, Path(name): Path<String>, Query(q): Query<http::CommandQuery>| async move {
                    http::command(&node, &name, &q)
                },
            ),
        )
        .route("/", get(|| async { Redirect::temporary("/ui") }))
        .route("/ui", get(|| async { http::asset("text/html; charset=utf-8", ui::INDEX_HTML) }))
        .route("/ui/", get(|| async { http::asset("text/html; charset=utf-8", ui::INDEX_HTML) }))
        .route(
            "/ui/app.js",
            get(|| async { http::asset("text/javascript; charset=utf-8", ui::APP_JS) }),
        )
        .route(
            "/ui/style.css",
            get(|| async { http::asset("text/css; charset=utf-8", ui::STYLE_CSS) }),
        )
        // Inside the access guard: a request it refuses is answered without its body read.
        .layer(axum::middleware::from_fn(body::read_whole))
        .layer(axum::middleware::from_fn_with_state(access, access::guard))
        .with_state(node)
}
