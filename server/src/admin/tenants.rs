//! Tenants on the admin port: list them with their quotas and usage, declare (or change) one,
//! remove one. A change is a replicated entry ([`Command::Tenant`]), proposed from any node (a
//! follower forwards it) and answered once this node has applied it, so the view returned
//! reflects it. Operator only (see [`crate::admin::access`]). docs/tenants.md is the user's view.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use synod_raft_store::state_machine::lock;
use synod_raft_store::types::TENANTS_SINCE;
use synod_raft_store::{Command, Quota, TenantChange, Usage};

use crate::admin::membership::{ApiError, ApiResult};
use crate::node::Node;
use crate::pipeline::pending::Completion;

/// How long a change may take to commit and apply here.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a declaration whose outcome is unknown is made, and the pause between tries.
const RETRIES: u32 = 5;
const RETRY_PAUSE: Duration = Duration::from_millis(300);

/// One tenant as the API shows it.
#[derive(Debug, Serialize)]
pub struct TenantView {
    pub name: String,
    /// Its identities as `scheme:id` (`org:<O>`, `x509:<CN>`, `digest:<user>:<hash>`).
    pub members: Vec<String>,
    /// Its home, private to it.
    pub home: String,
    pub quota: Quota,
    pub usage: Usage,
    /// Watches its connections hold on this node (watches are node-local).
    pub watches_here: usize,
}

/// `GET /tenants`: every declared tenant, in name order.
pub async fn list(State(node): State<Arc<Node>>) -> Json<Vec<TenantView>> {
    Json(views(&node))
}

/// The tenant table as this node has applied it.
pub fn views(node: &Node) -> Vec<TenantView> {
    let r = lock(&node.replica);
    let tenants = r.tree.tenants();
    tenants
        .iter()
        .map(|(name, t)| TenantView {
            name: name.to_string(),
            members: t.members.iter().map(|(s, i)| format!("{s}:{i}")).collect(),
            home: format!("{}/{name}", synod_raft_store::tenants::TENANTS_ROOT),
            quota: t.quota,
            usage: tenants.usage(name),
            watches_here: r.observer.watches.tenant_watches(name),
        })
        .collect()
}

/// Body of `POST /tenants`.
#[derive(Debug, Deserialize)]
pub struct Declare {
    name: String,
    /// `scheme:id` identities; see [`TenantView::members`].
    #[serde(default)]
    members: Vec<String>,
    #[serde(default)]
    quota: Quota,
}

/// `POST /tenants`: declares a tenant, or replaces the identities and quota of a declared one.
pub async fn declare(
    State(node): State<Arc<Node>>,
    Json(req): Json<Declare>,
) -> ApiResult<Json<TenantView>> {
    let mut members = Vec::with_capacity(req.members.len());
    for m in &req.members {
        let Some((scheme, id)) = m.split_once(':') else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("member {m:?} is not scheme:id (org:<O>, x509:<CN>, digest:<user>:<hash>)"),
            ));
        };
        members.push((scheme.to_string(), id.to_string()));
    }
    let tenant = synod_raft_store::Tenant {
        members,
        quota: req.quota,
    };
    let declare = TenantChange::Declare {
        name: req.name.clone(),
        tenant,
    };
    // A declaration is idempotent: one whose outcome is unknown (a forward to the leader
    // failed: a new leader, a peer connection just restarted) is simply made again.
    let mut attempt = 1;
    loop {
        match change(&node, declare.clone()).await {
            Err(e) if e.status() == StatusCode::SERVICE_UNAVAILABLE && attempt < RETRIES => {
                attempt += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            done => break done?,
        }
    }
    views(&node)
        .into_iter()
        .find(|t| t.name == req.name)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "removed again meanwhile"))
}

/// `DELETE /tenants/{name}`: forgets a tenant. Its home and nodes stay, reachable only by
/// `super` until an operator reassigns them (or declares the name again).
pub async fn remove(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<TenantView>>> {
    change(&node, TenantChange::Remove { name }).await?;
    Ok(Json(views(&node)))
}

/// Proposes a tenant change and waits until this node has applied it.
async fn change(node: &Node, change: TenantChange) -> ApiResult<()> {
    let version = crate::upgrade::cluster_version(node);
    if version < TENANTS_SINCE {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "the cluster version is {version}: tenants need version {TENANTS_SINCE}, which \
                 the cluster reaches once every member runs release 0.2 or later (GET /status \
                 shows cluster_version)"
            ),
        ));
    }
    let origin = node.origin();
    let time_ms = crate::clock::now_ms();
    let what = format!("{change:?}");
    let rx = node.propose_and_wait(
        origin,
        Command::Tenant {
            origin,
            time_ms,
            change,
        },
        None,
    );
    match tokio::time::timeout(CHANGE_TIMEOUT, rx).await {
        Ok(Ok(Completion::Tenant {
            refused: None,
            zxid,
        })) => {
            tracing::info!(zxid = format_args!("{zxid:#x}"), change = %what, "tenant change applied");
            Ok(())
        }
        Ok(Ok(Completion::Tenant {
            refused: Some(why), ..
        })) => Err(ApiError::new(StatusCode::BAD_REQUEST, why)),
        Ok(Ok(Completion::Failed(why))) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the change's outcome is unknown ({why}); see GET /tenants"),
        )),
        Ok(Ok(other)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected completion {other:?}"),
        )),
        Ok(Err(_)) | Err(_) => {
            lock(&node.replica)
                .observer
                .pending
                .fail(origin.request, "timed out".into());
            Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the change was not applied within {CHANGE_TIMEOUT:?}; it may still be: \
                     see GET /tenants"
                ),
            ))
        }
    }
}
