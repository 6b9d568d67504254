//! The authorization sweep: every door of the client protocol through which one principal could
//! learn of, or change, another's node — every read opcode, every multi and multiRead sub-op,
//! every write, every watch kind (one-shot data, exist, persistent, recursive) and the replay of
//! missed events to a resuming session — tried by an anonymous client and by another tenant's
//! identity against a node only its owner may use, and by the owner itself (the control: it
//! passes, so the others' refusals are about who asked). The same sweep runs against synod
//! (server/tests/authz.rs), which must refuse everything, and against the Apache ZooKeeper of the
//! test machine (testkit/tests/authz.rs), whose differences are listed.
//!
//! Principals are digest identities, so the sweep means the same on both servers; over TLS the
//! clients present no certificate (a certificate would be one more identity).

use std::sync::Arc;
use std::time::Duration;

use synod_client::{
    perms, Acl, AddWatchMode, Client, ConnectOptions, CreateMode, Error, EventType, Op,
    WatchedEvent, WatcherType,
};

use crate::ensemble::Ensemble;

/// How long a probe waits for an event it must or must not get.
const EVENT_WAIT: Duration = Duration::from_secs(10);

/// The owner's credential; the node under test grants only it.
const OWNER: &[u8] = b"owner:owner-secret";
/// Another tenant's credential.
const OTHER: &[u8] = b"other:other-secret";

/// What one probe showed one principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The door tried, e.g. `getData /secret`.
    pub door: String,
    /// Who tried: `anonymous` or `other-tenant`.
    pub who: &'static str,
    /// What came back, in a short canonical form (`NoAuth`, `none`, `events: [...]`, ...).
    pub outcome: String,
    /// What a server with ZooKeeper's authorization fixes (3.8.4 / 3.9.2) and synod's rules
    /// answers: the outcome that leaks nothing.
    pub expected: String,
}

impl Finding {
    /// Whether the outcome is the one that leaks nothing.
    pub fn holds(&self) -> bool {
        self.outcome == self.expected
    }
}

fn short<T: std::fmt::Debug>(r: &Result<T, Error>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => err_short(e),
    }
}

fn err_short(e: &Error) -> String {
    match e {
        Error::Multi { code, .. } => format!("multi {code:?}"),
        e => format!("{e:?}"),
    }
}

/// [`short`] of a result that must be kept (a watch handle).
fn short_ref<T>(r: &Result<T, Error>, ok: impl FnOnce(&T) -> String) -> String {
    match r {
        Ok(v) => format!("ok {}", ok(v)),
        Err(e) => err_short(e),
    }
}

/// Connects a client with no certificate and, if `cred` is given, a digest credential.
async fn principal(ens: &dyn Ensemble, cred: Option<&[u8]>) -> Result<Client, String> {
    let opts = ConnectOptions {
        tls: ens.anonymous_tls(),
        ..ConnectOptions::default()
    };
    let c = Client::connect(&ens.connect_string(), opts)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    if let Some(cred) = cred {
        c.add_auth("digest", cred)
            .await
            .map_err(|e| format!("addauth: {e}"))?;
    }
    Ok(c)
}

/// Events from a persistent watch stream until the control event on `control` arrives (events
/// come in zxid order, so anything the owner's earlier changes leaked comes before it).
async fn until_control(
    w: &mut synod_client::PersistentWatch,
    control: &str,
) -> Result<Vec<String>, String> {
    let mut seen = Vec::new();
    loop {
        let ev: Option<WatchedEvent> = tokio::time::timeout(EVENT_WAIT, w.next())
            .await
            .map_err(|_| format!("no control event on {control}; saw {seen:?}"))?;
        let ev = ev.ok_or("watch stream ended")?;
        if ev.path == control {
            return Ok(seen);
        }
        seen.push(format!("{:?} {}", ev.event_type, ev.path));
    }
}

/// Runs the sweep under a fresh root and returns every finding. With `reconnect`, it adds the
/// probe of the events a session is told across a reconnect, which kills (and restarts) the
/// server the prober is connected to (only for an ensemble of at least three nodes that can kill
/// one). Only for synod: ZooKeeper replays no missed event of a persistent watch, so what its
/// client is told there depends on how fast it reconnects.
pub async fn sweep(
    ens: Arc<dyn Ensemble>,
    root: &str,
    reconnect: bool,
) -> Result<Vec<Finding>, String> {
    sweep_with(ens, root, reconnect, Acl::creator_all()).await
}

/// The owner's and the other principal's identities (digest ids), e.g. to declare each as a
/// tenant of its own.
pub fn principals() -> (synod_client::Id, synod_client::Id) {
    let id = |cred: &[u8]| {
        let text = String::from_utf8_lossy(cred);
        let (user, password) = text.split_once(':').unwrap_or_default();
        synod_client::digest_id(user, password)
    };
    (id(OWNER), id(OTHER))
}

/// [`sweep`] with the owner's private nodes created with `owner_only` (e.g. a `tenant:` ACL of
/// the owner's institution) instead of `auth:cdrwa`.
pub async fn sweep_with(
    ens: Arc<dyn Ensemble>,
    root: &str,
    reconnect: bool,
    owner_only: Vec<Acl>,
) -> Result<Vec<Finding>, String> {
    let owner = principal(&*ens, Some(OWNER)).await?;
    // What a reader without ADMIN is shown of the shared node's ACL: digests masked.
    let shown_shared = std::iter::once(format!("world:anyone={}", perms::READ))
        .chain(owner_only.iter().map(|a| match a.id.scheme.as_str() {
            "digest" | "auth" => format!("digest:owner:x={}", a.perms),
            scheme => format!("{scheme}:{}={}", a.id.id, a.perms),
        }))
        .collect::<Vec<_>>()
        .join(",");
    let shared_acl = {
        let mut a = Acl::read_unsafe();
        a.extend(owner_only.iter().cloned());
        a
    };
    let secret = format!("{root}/secret");
    let shared = format!("{root}/shared");
    let open = format!("{root}/open");
    let mk = |p: &str, acl: &[Acl], mode: CreateMode| {
        let (p, acl) = (p.to_string(), acl.to_vec());
        let owner = &owner;
        async move {
            owner
                .create_full(&p, b"secret-data", &acl, mode, None)
                .await
                .map_err(|e| format!("owner creates {p}: {e}"))
        }
    };
    mk(root, &Acl::open_unsafe(), CreateMode::Persistent).await?;
    mk(&secret, &owner_only, CreateMode::Persistent).await?;
    mk(
        &format!("{secret}/child"),
        &owner_only,
        CreateMode::Persistent,
    )
    .await?;
    mk(&shared, &shared_acl, CreateMode::Persistent).await?;
    mk(&open, &Acl::open_unsafe(), CreateMode::Persistent).await?;
    mk(
        &format!("{open}/owner-eph"),
        &owner_only,
        CreateMode::Ephemeral,
    )
    .await?;

    let mut findings = Vec::new();
    for (who, cred) in [("anonymous", None), ("other-tenant", Some(OTHER))] {
        let c = principal(&*ens, cred).await?;
        let mut note = |door: &str, outcome: String, expected: &str| {
            findings.push(Finding {
                door: door.to_string(),
                who,
                outcome,
                expected: expected.to_string(),
            })
        };
        let s = secret.as_str();
        let child = format!("{s}/child");
        note("getData", short(&c.get_data(s).await.map(|_| ())), "NoAuth");
        note("getChildren", short(&c.get_children(s).await), "NoAuth");
        note("getChildren2", short(&c.get_children2(s).await), "NoAuth");
        note(
            "getAllChildrenNumber",
            short(&c.get_all_children_number(s).await),
            "NoAuth",
        );
        note("exists", short(&c.exists(s).await), "NoAuth");
        note("getACL", short(&c.get_acl(s).await), "NoAuth");
        // A node others may read shows its ACL with the owner's password hash masked.
        let masked = match c.get_acl(&shared).await {
            Ok((acl, _)) => acl
                .iter()
                .map(|a| format!("{}:{}={}", a.id.scheme, a.id.id, a.perms))
                .collect::<Vec<_>>()
                .join(","),
            Err(e) => format!("{e:?}"),
        };
        note("getACL of a world-readable node", masked, &shown_shared);
        note(
            "getEphemerals",
            short(&c.get_ephemerals(root).await),
            "ok []",
        );
        let reads = c
            .multi_read(vec![Op::get_data(s), Op::get_children(s)])
            .await
            .map(|r| r.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>());
        note(
            "multiRead getData+getChildren",
            short(&reads),
            "ok [\"Error(NoAuth)\", \"Error(NoAuth)\"]",
        );
        note(
            "multi check",
            short(&c.multi(vec![Op::check(s, 0)]).await),
            "multi NoAuth",
        );
        note(
            "multi setData",
            short(&c.multi(vec![Op::set_data(s, &b"x"[..], None)]).await),
            "multi NoAuth",
        );
        note(
            "multi create child",
            short(
                &c.multi(vec![Op::create(
                    &format!("{s}/m"),
                    &b""[..],
                    CreateMode::Persistent,
                )])
                .await,
            ),
            "multi NoAuth",
        );
        note(
            "multi delete child",
            short(&c.multi(vec![Op::delete(&child, None)]).await),
            "multi NoAuth",
        );
        note("setData", short(&c.set_data(s, b"x", None).await), "NoAuth");
        note(
            "delete child",
            short(&c.delete(&child, None).await),
            "NoAuth",
        );
        note(
            "create child",
            short(
                &c.create(&format!("{s}/x"), b"", CreateMode::Persistent)
                    .await,
            ),
            "NoAuth",
        );
        note(
            "setACL",
            short(&c.set_acl(s, &Acl::open_unsafe(), None).await),
            "NoAuth",
        );

        // Watches: every kind is set where the server lets it be, then the owner changes its
        // nodes, then an open node (the control): nothing but the control may arrive.
        let exists_watch = c.exists_watch(s).await;
        note(
            "exists watch on the node",
            short_ref(&exists_watch, |(st, _)| format!("{:?}", st.is_some())),
            "NoAuth",
        );
        let later = format!("{open}/later-{who}");
        let (missing, later_watch) = c
            .exists_watch(&later)
            .await
            .map_err(|e| format!("exists watch on a missing node: {e}"))?;
        if missing.is_some() {
            return Err(format!("{later} exists already"));
        }
        let mut recursive = c
            .add_watch(root, AddWatchMode::PersistentRecursive)
            .await
            .map_err(|e| format!("addWatch recursive: {e}"))?;
        let persistent = c.add_watch(s, AddWatchMode::Persistent).await;
        note(
            "addWatch persistent on the node",
            short_ref(&persistent, |_| "()".into()),
            "ok ()",
        );
        let bumped = format!("{s}/bumped-{who}");
        owner
            .set_data(s, b"changed", None)
            .await
            .map_err(|e| format!("owner sets: {e}"))?;
        owner
            .create_full(&bumped, b"", &owner_only, CreateMode::Persistent, None)
            .await
            .map_err(|e| format!("owner creates: {e}"))?;
        owner
            .delete(&bumped, None)
            .await
            .map_err(|e| format!("owner deletes: {e}"))?;
        owner
            .create_full(&later, b"", &owner_only, CreateMode::Persistent, None)
            .await
            .map_err(|e| format!("owner creates {later}: {e}"))?;
        let control = format!("{open}/control-{who}");
        owner
            .create(&control, b"", CreateMode::Persistent)
            .await
            .map_err(|e| format!("owner creates the control: {e}"))?;
        note(
            "recursive watch on the parent",
            format!(
                "events: {:?}",
                until_control(&mut recursive, &control).await?
            ),
            "events: []",
        );
        if let Ok(mut p) = persistent {
            // The persistent watch is on the node itself: it has no control event; anything
            // the owner's changes sent it has arrived by the time the recursive one's did.
            let got = tokio::time::timeout(Duration::from_millis(500), p.next()).await;
            note(
                "persistent watch on the node",
                match got {
                    Ok(Some(ev)) => format!("event {:?} {}", ev.event_type, ev.path),
                    _ => "no event".into(),
                },
                "no event",
            );
        }
        let owner_only_creation = tokio::time::timeout(Duration::from_millis(500), later_watch)
            .await
            .map(|ev| format!("event {:?}", ev.event_type))
            .unwrap_or_else(|_| "no event".into());
        note(
            "exists watch on a missing path the owner then creates for itself",
            owner_only_creation,
            "no event",
        );
        // Nor may the watch's fate tell of the creation: it is still set.
        let still_set = c.remove_watches(&later, WatcherType::Data).await;
        note(
            "that watch, still set after the owner's creation",
            short_ref(&still_set, |_| "()".into()),
            "ok ()",
        );
        if let Ok((_, w)) = exists_watch {
            let got = tokio::time::timeout(Duration::from_millis(500), w)
                .await
                .map(|ev: WatchedEvent| format!("event {:?}", ev.event_type))
                .unwrap_or_else(|_| "no event".into());
            note("the exists watch it was let set", got, "no event");
        }
        if reconnect && ens.can_kill() && ens.addrs().len() >= 3 {
            let replayed = replay_probe(&*ens, &c, &owner, root, &secret, who).await?;
            note(
                "events across a reconnect (its server killed; setWatches2 replays what it missed)",
                replayed,
                &format!("events: [\"NodeCreated {open}/while-away-{who}\"]"),
            );
        }
        let _ = c.close().await;
    }
    findings.extend(owner_controls(&owner, &secret, &owner_only).await?);
    let _ = owner.close().await;
    Ok(findings)
}

/// The positive control: the owner passes the doors the others were refused at, so that their
/// refusals are about who asked, not about a node that is missing or broken.
async fn owner_controls(
    owner: &Client,
    s: &str,
    owner_only: &[Acl],
) -> Result<Vec<Finding>, String> {
    let mut found = Vec::new();
    let mut note = |door: &str, outcome: String, expected: &str| {
        found.push(Finding {
            door: door.to_string(),
            who: "owner",
            outcome,
            expected: expected.to_string(),
        })
    };
    let child = format!("{s}/child");
    let unit = |r: Result<(), Error>| short(&r);
    note(
        "getData",
        unit(owner.get_data(s).await.map(|_| ())),
        "ok ()",
    );
    note(
        "getChildren",
        short(&owner.get_children(s).await),
        "ok [\"child\"]",
    );
    note(
        "getAllChildrenNumber",
        short(&owner.get_all_children_number(s).await),
        "ok 1",
    );
    note(
        "exists",
        short(&owner.exists(s).await.map(|st| st.is_some())),
        "ok true",
    );
    note("getACL", unit(owner.get_acl(s).await.map(|_| ())), "ok ()");
    let reads = owner
        .multi_read(vec![Op::get_data(s), Op::get_children(s)])
        .await
        .map(|r| {
            r.iter()
                .filter(|x| !format!("{x:?}").starts_with("Error"))
                .count()
        });
    note("multiRead getData+getChildren", short(&reads), "ok 2");
    note(
        "multi create and delete a child",
        unit(
            owner
                .multi(vec![
                    Op::create(&format!("{s}/m"), &b""[..], CreateMode::Persistent),
                    Op::delete(&format!("{s}/m"), None),
                ])
                .await
                .map(|_| ()),
        ),
        "ok ()",
    );
    note(
        "setACL",
        unit(owner.set_acl(s, owner_only, None).await.map(|_| ())),
        "ok ()",
    );
    let watch = owner.exists_watch(&child).await;
    note(
        "setData",
        unit(owner.set_data(&child, b"mine", None).await.map(|_| ())),
        "ok ()",
    );
    let heard = match watch {
        Ok((_, w)) => tokio::time::timeout(EVENT_WAIT, w)
            .await
            .map(|ev: WatchedEvent| format!("event {:?}", ev.event_type))
            .unwrap_or_else(|_| "no event".into()),
        Err(e) => err_short(&e),
    };
    note(
        "exists watch on its own node",
        heard,
        "event NodeDataChanged",
    );
    Ok(found)
}

/// Kills the server `c` is connected to; the owner changes its secret node and then an open one;
/// once `c` resumed its recursive watch elsewhere, reports what it was told. The client
/// reconnects within milliseconds, so the owner's changes may reach it live rather than as a
/// replay: the replay itself is checked deterministically by server/tests/cluster.rs
/// (`a_replay_tells_a_resuming_session_only_what_it_may_read`), with a raw setWatches2.
async fn replay_probe(
    ens: &dyn Ensemble,
    c: &Client,
    owner: &Client,
    root: &str,
    secret: &str,
    who: &str,
) -> Result<String, String> {
    let mut w = c
        .add_watch(root, AddWatchMode::PersistentRecursive)
        .await
        .map_err(|e| format!("addWatch: {e}"))?;
    let addr = c.connected_server().ok_or("not connected")?;
    let idx = ens
        .addrs()
        .iter()
        .position(|a| *a == addr)
        .ok_or("connected to an unknown server")?;
    ens.kill(idx).map_err(|e| format!("kill node {idx}: {e}"))?;
    let away = async {
        // The killed server may have led: the owner's writes are retried through the
        // election (a create retried after a lost reply finds its node).
        let control = format!("{root}/open/while-away-{who}");
        retried("owner sets while away", || async {
            owner
                .set_data(secret, b"while away", None)
                .await
                .map(|_| ())
        })
        .await?;
        retried("owner creates while away", || async {
            match owner.create(&control, b"", CreateMode::Persistent).await {
                Err(Error::NodeExists) => Ok(()),
                r => r.map(|_| ()),
            }
        })
        .await?;
        // The prober resumes on a surviving server and is replayed what it missed.
        let mut seen = Vec::new();
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(30), w.next())
                .await
                .map_err(|_| format!("nothing replayed; saw {seen:?}"))?
                .ok_or("watch stream ended")?;
            if ev.event_type == EventType::None {
                continue;
            }
            seen.push(format!("{:?} {}", ev.event_type, ev.path));
            if ev.path == control {
                return Ok::<_, String>(format!("events: {seen:?}"));
            }
        }
    }
    .await;
    let restarted = ens.restart(idx);
    let out = away?;
    restarted.map_err(|e| format!("restart node {idx}: {e}"))?;
    Ok(out)
}

/// Runs `op` until it succeeds, for at most 30 s (a leader change in between).
async fn retried<F, Fut>(what: &str, mut op: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match op().await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("{what}: {e}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The sweep's findings as an aligned table, one line per probe.
pub fn table(findings: &[Finding]) -> String {
    let mut s = String::new();
    for f in findings {
        s.push_str(&format!(
            "{:<4} {:<13} {:<66} {}{}\n",
            if f.holds() { "ok" } else { "LEAK" },
            f.who,
            f.door,
            f.outcome,
            if f.holds() {
                String::new()
            } else {
                format!("   (expected {})", f.expected)
            }
        ));
    }
    s
}
