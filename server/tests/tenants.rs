//! Tenants on a real 3-node secure cluster: institutions declared by the operator on the admin
//! port, identified by their certificates' organisation; what one institution stores is
//! invisible to another unless shared by name; new nodes inherit their parent's ACL; quotas hold
//! exactly at the limit (a multi crossing one changes nothing); the table and the usage are equal
//! on every replica and survive a snapshot and a restart; removing a tenant takes effect at once.
//! Then the whole authorization sweep, with the owner's nodes guarded by a `tenant:` ACL.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use synod_client::tls::TlsOptions;
use synod_client::{
    perms, Acl, AddWatchMode, Client, ConnectOptions, CreateMode, Error, ErrorCode, Op,
};
use synod_testkit::{authz, blocking, AdminHttp, Ensemble, SynodEnsemble};

const BIN: &str = env!("CARGO_BIN_EXE_synod");
const WAIT: Duration = Duration::from_secs(30);

/// Issues a client certificate for `name` of organisation `org` into the cluster's cert dir.
fn issue(ens: &SynodEnsemble, name: &str, org: &str) {
    let dir = ens.root().join("certs");
    let out = Command::new(BIN)
        .args(["certs", "--dir"])
        .arg(&dir)
        .args(["create-client", "--name", name, "--institution", org])
        .output()
        .expect("run synod certs");
    assert!(
        out.status.success(),
        "synod certs create-client {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client presenting `name`'s certificate.
async fn as_cert(ens: &SynodEnsemble, name: &str) -> Client {
    try_cert(ens, name)
        .await
        .unwrap_or_else(|e| panic!("{name} connects: {e}"))
}

/// [`as_cert`], or why the connection failed.
async fn try_cert(ens: &SynodEnsemble, name: &str) -> Result<Client, Error> {
    let dir = ens.root().join("certs");
    let tls = TlsOptions::new(dir.join("ca.crt"))
        .identity(
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        )
        .connector()
        .expect("TLS connector");
    let opts = ConnectOptions {
        tls: Some(tls),
        ..ConnectOptions::default()
    };
    Client::connect(&ens.connect_string(), opts).await
}

fn admin(
    ens: &SynodEnsemble,
    idx: usize,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    ens.admin_json(idx, method, path, body)
}

fn code<T: std::fmt::Debug>(r: Result<T, Error>) -> ErrorCode {
    match r {
        Ok(_) => ErrorCode::Ok,
        Err(Error::Multi { code, .. }) => code,
        Err(e) => e
            .code()
            .unwrap_or_else(|| panic!("no ZooKeeper code in {e:?}")),
    }
}

/// Polls `f` until it returns `Some`, at most [`WAIT`].
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every replica's digest once they agree.
fn agreed_digest(ens: &SynodEnsemble) -> String {
    ens.agreed_digest(&[0, 1, 2], WAIT)
}

/// The digest every replica agrees on once it has held still for 600 ms, and the applied index
/// it was taken at: then no batched audit record of reads (flushed every 250 ms) or other
/// entry of what came before is still on its way.
fn quiet_digest(ens: &SynodEnsemble) -> (String, u64) {
    wait_for("an agreed digest that holds still", || {
        let first = agreed_digest(ens);
        std::thread::sleep(Duration::from_millis(600));
        let (_, d) = admin(ens, 0, "GET", "/digest", None);
        let again = agreed_digest(ens);
        (first == again).then(|| (again, d["applied_index"].as_u64().unwrap_or(0)))
    })
}

fn usage(ens: &SynodEnsemble, idx: usize, tenant: &str) -> Value {
    let (status, list) = admin(ens, idx, "GET", "/tenants", None);
    assert_eq!(status, 200, "GET /tenants: {list}");
    list.as_array()
        .and_then(|l| l.iter().find(|t| t["name"] == tenant))
        .map(|t| t["usage"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn institutions_are_isolated_shared_by_name_and_held_to_their_quotas() {
    let ens = SynodEnsemble::start_tls(Path::new(BIN), 3, &[]).expect("start a 3-node cluster");
    issue(&ens, "nurse", "St Mary Hospital");
    issue(&ens, "analyst", "City Lab");

    // The operator declares two institutions by their certificates' organisation.
    let (status, hospital) = admin(
        &ens,
        0,
        "POST",
        "/tenants",
        Some(json!({"name": "hospital", "members": ["org:St Mary Hospital"]})),
    );
    assert_eq!(status, 200, "declare hospital: {hospital}");
    assert_eq!(hospital["home"], "/tenants/hospital");
    let lab_quota = json!({"znodes": 3, "bytes": 64, "ephemerals": 1, "sessions": 2, "watches": 2});
    let (status, lab) = admin(
        &ens,
        1,
        "POST",
        "/tenants",
        Some(json!({"name": "lab", "members": ["org:City Lab"], "quota": lab_quota})),
    );
    assert_eq!(
        status, 200,
        "declare lab through a follower or the leader: {lab}"
    );
    // Refused declarations say why and change nothing.
    for (body, why) in [
        (
            json!({"name": "clinic", "members": ["org:City Lab"]}),
            "already belongs to tenant \"lab\"",
        ),
        (json!({"name": "a/b"}), "a name is"),
        (
            json!({"name": "clinic", "members": ["ip:10.0.0.1"]}),
            "not an identity a tenant may list",
        ),
    ] {
        let (status, v) = admin(&ens, 2, "POST", "/tenants", Some(body.clone()));
        assert_eq!(status, 400, "{body}: {v}");
        assert!(
            v["error"].as_str().unwrap_or_default().contains(why),
            "{body}: {v}"
        );
    }
    // Only an operator may see or change the table.
    let certs = ens.root().join("certs");
    let tenant_http = AdminHttp::https(
        &certs.join("ca.crt"),
        Some((&certs.join("nurse.crt"), &certs.join("nurse.key"))),
    )
    .expect("a tenant's HTTPS client");
    let addr = ens.admin_addr(0).expect("admin address");
    for (method, path, body) in [
        ("GET", "/tenants", None),
        ("POST", "/tenants", Some(r#"{"name":"x"}"#)),
        ("DELETE", "/tenants/lab", None),
    ] {
        let (status, _) = blocking(|| tenant_http.request(addr, method, path, body, WAIT))
            .unwrap_or_else(|e| panic!("{method} {path} as a tenant: {e}"));
        assert_eq!(status, 403, "{method} {path} as a tenant");
    }

    let nurse = as_cert(&ens, "nurse").await;
    let analyst = as_cert(&ens, "analyst").await;
    let outsider = as_cert(&ens, "tester").await; // org synod-tests: no tenant

    // The hospital writes with the client's default (open) ACL: its home's ACL is inherited.
    let case = "/tenants/hospital/case-17";
    nurse
        .create(case, b"patient data", CreateMode::Persistent)
        .await
        .expect("create case");
    nurse
        .create(&format!("{case}/notes"), b"n", CreateMode::Persistent)
        .await
        .expect("create notes");
    let (acl, _) = nurse.get_acl(case).await.expect("getACL");
    assert_eq!(acl, vec![Acl::new(perms::ALL, "tenant", "hospital")]);
    for who in [&analyst, &outsider] {
        assert_eq!(code(who.get_data(case).await), ErrorCode::NoAuth);
        assert_eq!(code(who.exists(case).await), ErrorCode::NoAuth);
        assert_eq!(code(who.get_children(case).await), ErrorCode::NoAuth);
        assert_eq!(code(who.get_acl(case).await), ErrorCode::NoAuth);
        assert_eq!(
            code(who.set_data(case, b"forged", None).await),
            ErrorCode::NoAuth
        );
        assert_eq!(
            code(
                who.create(&format!("{case}/x"), b"", CreateMode::Persistent)
                    .await
            ),
            ErrorCode::NoAuth
        );
        assert_eq!(
            code(who.delete(&format!("{case}/notes"), None).await),
            ErrorCode::NoAuth
        );
    }
    // An ACL naming an organisation, or a tenant nobody declared, is invalid.
    for bad in [
        Acl::new(perms::ALL, "org", "City Lab"),
        Acl::new(perms::ALL, "tenant", "labb"),
    ] {
        let r = nurse
            .create_full("/bad", b"", &[bad], CreateMode::Persistent, None)
            .await;
        assert_eq!(code(r), ErrorCode::InvalidAcl);
    }

    // A shared workflow area grants named institutions named rights; its children inherit.
    let shared = [
        Acl::new(perms::ALL, "tenant", "hospital"),
        Acl::new(perms::READ | perms::WRITE, "tenant", "lab"),
    ];
    // Anyone may list the cases; the hospital opens them.
    let mut cases_acl = Acl::read_unsafe();
    cases_acl.push(Acl::new(perms::ALL, "tenant", "hospital"));
    nurse
        .create_full("/cases", b"", &cases_acl, CreateMode::Persistent, None)
        .await
        .expect("create /cases");
    nurse
        .create_full(
            "/cases/case-17",
            b"proposal",
            &shared,
            CreateMode::Persistent,
            None,
        )
        .await
        .expect("create the shared case");
    nurse
        .create("/cases/case-17/imaging", b"scan", CreateMode::Persistent)
        .await
        .expect("create a child of the shared case");
    assert_eq!(
        analyst
            .get_data("/cases/case-17/imaging")
            .await
            .expect("lab reads")
            .0,
        &b"scan"[..]
    );
    analyst
        .set_data("/cases/case-17", b"lab finding", None)
        .await
        .expect("lab writes its finding");
    assert_eq!(
        code(
            analyst
                .create("/cases/case-17/x", b"", CreateMode::Persistent)
                .await
        ),
        ErrorCode::NoAuth,
        "the lab may not create there"
    );
    assert_eq!(
        code(outsider.get_data("/cases/case-17").await),
        ErrorCode::NoAuth
    );

    // Reads across tenants are audited (batched): the lab's refused read of the hospital's
    // case and its served read of the shared one, with who read and whose node it was.
    let reads = wait_for("the lab's reads in the audit trail", || {
        let (_, v) = admin(&ens, 0, "GET", "/audit?tenant=lab&limit=1000", None);
        let reads: Vec<Value> = v["records"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["action"]["Reads"]["reads"].as_array().cloned())
            .flatten()
            .filter(|a| a["tenant"] == "lab")
            .collect();
        let refused = reads.iter().any(|a| {
            a["path"] == case
                && a["op"] == "getData"
                && a["err"] == -102
                && a["owner"] == "hospital"
        });
        let served = reads
            .iter()
            .any(|a| a["path"] == "/cases/case-17/imaging" && a["err"] == 0);
        (refused && served).then_some(reads)
    });
    assert!(
        reads.iter().all(|a| a["identities"]
            .as_array()
            .is_some_and(|ids| ids.iter().any(|i| i == "x509:analyst"))),
        "{reads:#?}"
    );

    // Quotas: the lab may own 3 znodes, 64 bytes, 1 ephemeral, wherever it creates them.
    let home = "/tenants/lab";
    for i in 0..2 {
        analyst
            .create(
                &format!("{home}/r{i}"),
                b"0123456789",
                CreateMode::Persistent,
            )
            .await
            .expect("within quota");
    }
    analyst
        .create(&format!("{home}/e"), b"", CreateMode::Ephemeral)
        .await
        .expect("the one ephemeral");
    assert_eq!(
        code(
            analyst
                .create(&format!("{home}/r3"), b"", CreateMode::Persistent)
                .await
        ),
        ErrorCode::QuotaExceeded,
        "a fourth znode"
    );
    assert_eq!(
        code(
            analyst
                .set_data(&format!("{home}/r0"), &[b'x'; 55], None)
                .await
        ),
        ErrorCode::QuotaExceeded,
        "65 bytes"
    );
    analyst
        .set_data(&format!("{home}/r0"), &[b'x'; 54], None)
        .await
        .expect("exactly 64 bytes");
    // A multi that frees one znode and creates two fails whole.
    let multi = analyst
        .multi(vec![
            Op::delete(&format!("{home}/r1"), None),
            Op::create(&format!("{home}/m1"), Vec::new(), CreateMode::Persistent),
            Op::create(&format!("{home}/m2"), Vec::new(), CreateMode::Persistent),
        ])
        .await;
    assert_eq!(code(multi), ErrorCode::QuotaExceeded);
    let children = analyst
        .get_children(home)
        .await
        .expect("list the lab's home");
    assert_eq!(children, ["e", "r0", "r1"], "nothing of the multi applied");
    // Watches: two per node; a third registration is refused (and leaves no watch), and a
    // watch that fires makes room again.
    let (_, _, fired) = analyst
        .get_data_watch(&format!("{home}/r0"))
        .await
        .expect("a first watch");
    let _kept = analyst
        .exists_watch(&format!("{home}/r1"))
        .await
        .expect("a second watch");
    assert_eq!(
        code(analyst.get_children_watch(home).await.map(|_| ())),
        ErrorCode::QuotaExceeded,
        "a third watch"
    );
    assert_eq!(
        code(
            analyst
                .add_watch(home, AddWatchMode::PersistentRecursive)
                .await
                .map(|_| ())
        ),
        ErrorCode::QuotaExceeded,
        "a persistent watch counts too"
    );
    analyst
        .set_data(&format!("{home}/r0"), &[b'x'; 54], None)
        .await
        .expect("fire the first watch");
    let event = tokio::time::timeout(WAIT, fired)
        .await
        .expect("the watch fires");
    assert_eq!(event.event_type, synod_client::EventType::NodeDataChanged);
    analyst
        .get_children_watch(home)
        .await
        .expect("room for a watch again");
    // Sessions: the lab may hold two; a third is told its session expired (the client stops).
    let second = as_cert(&ens, "analyst").await;
    let third = try_cert(&ens, "analyst").await;
    assert!(
        matches!(third, Err(Error::SessionExpired)),
        "a third session: {:?}",
        third.as_ref().map(|c| c.session_id())
    );
    second.close().await.expect("close the second session");
    let again = as_cert(&ens, "analyst").await;
    again.close().await.expect("close it again");
    // Node 3 may not have applied the last close yet: its usage converges.
    let want = json!({"znodes": 3, "bytes": 64, "ephemerals": 1, "sessions": 1});
    let used = wait_for("the lab's usage on node 3", || {
        let used = usage(&ens, 2, "lab");
        (used == want).then_some(used)
    });
    // The hospital's quota is its own: the lab's full quota does not limit it.
    nurse
        .create("/tenants/hospital/more", b"", CreateMode::Persistent)
        .await
        .expect("the hospital has no quota");
    // Node 1's gauges, once it has applied what node 3 shows.
    wait_for("the lab's usage in node 1's /metrics", || {
        let metrics = blocking(|| ens.http(0, "GET", "/metrics", None))?;
        let metrics = String::from_utf8_lossy(&metrics.1).into_owned();
        (metrics.contains(r#"synod_tenant_usage{tenant="lab",resource="znodes"} 3"#)
            || metrics.contains(r#"synod_tenant_usage{resource="znodes",tenant="lab"} 3"#))
        .then_some(())
    });

    // Every replica holds the same table, usage and tree; a snapshot and a restart keep them.
    let (before, before_index) = quiet_digest(&ens);
    let (status, snap) = admin(&ens, 1, "POST", "/snapshot", None);
    assert_eq!(status, 200, "snapshot: {snap}");
    ens.terminate(1, WAIT).expect("stop node 2");
    ens.spawn(1).expect("restart node 2");
    ens.wait_caught_up(1, WAIT).expect("node 2 catches up");
    let after = agreed_digest(&ens);
    if after != before {
        // What was applied in between says which change it was.
        let since = format!("/audit?since={}&limit=50", before_index << 16);
        let (_, applied) = admin(&ens, 0, "GET", &since, None);
        panic!("the same state after the restart: {before} -> {after}; applied since: {applied}");
    }
    assert_eq!(
        usage(&ens, 1, "lab"),
        used,
        "usage rebuilt from the snapshot"
    );

    // Removing the lab takes effect at once: its identities reach nothing the tenant names.
    let (status, _) = admin(&ens, 0, "DELETE", "/tenants/lab", None);
    assert_eq!(status, 200);
    assert_eq!(
        code(analyst.get_data("/cases/case-17").await),
        ErrorCode::NoAuth
    );
    let (status, v) = admin(&ens, 0, "DELETE", "/tenants/lab", None);
    assert_eq!(status, 400, "removing it twice: {v}");
    nurse.close().await.ok();
    analyst.close().await.ok();
    outsider.close().await.ok();
}

/// The authorization sweep (every door of the client protocol) with the owner's private nodes
/// guarded by its institution's `tenant:` ACL, and the other principal a declared institution of
/// its own: nothing leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_of_another_institutions_node_leaks_through_any_door() {
    let optional = ["--client-auth".to_string(), "optional".to_string()];
    let ens = Arc::new(
        SynodEnsemble::start_tls(Path::new(BIN), 3, &optional).expect("start a 3-node cluster"),
    );
    let (owner, other) = authz::principals();
    for (name, id) in [("owner-inst", owner), ("other-inst", other)] {
        let body = json!({"name": name, "members": [format!("digest:{}", id.id)]});
        let (status, v) = admin(&ens, 0, "POST", "/tenants", Some(body));
        assert_eq!(status, 200, "declare {name}: {v}");
    }
    let guarded = vec![Acl::new(perms::ALL, "tenant", "owner-inst")];
    let findings = authz::sweep_with(ens.clone(), "/authz-tenants", true, guarded)
        .await
        .unwrap_or_else(|e| panic!("the sweep could not run: {e}\n{}", ens.logs()));
    let table = authz::table(&findings);
    eprintln!("authorization sweep between institutions:\n{table}");
    assert!(findings.len() >= 46, "too few probes:\n{table}");
    assert!(
        findings.iter().all(authz::Finding::holds),
        "a door leaks:\n{table}"
    );
}

/// ZooKeeper's quota nodes of a tenant's node are as private as the node: zkCli's `setquota` on
/// `/tenants/hospital/case-17` makes `/zookeeper/quota/tenants/hospital/case-17` and its limits
/// and stats nodes with the open ACL, and their names and stats name and measure the case.
/// Another institution can neither list, read nor hear of them (`QuotaGuard`,
/// `raft-store/src/tree.rs`), also once the case is deleted; the hospital still can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_nodes_of_a_private_node_are_as_private_as_it_is() {
    let ens = SynodEnsemble::start_tls(Path::new(BIN), 3, &[]).expect("start a 3-node cluster");
    issue(&ens, "nurse", "St Mary Hospital");
    issue(&ens, "analyst", "City Lab");
    for (name, org) in [("hospital", "St Mary Hospital"), ("lab", "City Lab")] {
        let body = json!({"name": name, "members": [format!("org:{org}")]});
        let (status, v) = admin(&ens, 0, "POST", "/tenants", Some(body));
        assert_eq!(status, 200, "declare {name}: {v}");
    }
    let nurse = as_cert(&ens, "nurse").await;
    let analyst = as_cert(&ens, "analyst").await;
    let mut heard = analyst
        .add_watch("/zookeeper/quota", AddWatchMode::PersistentRecursive)
        .await
        .expect("a recursive watch on the quota tree");

    let case = "/tenants/hospital/case-17";
    nurse
        .create(case, b"findings", CreateMode::Persistent)
        .await
        .expect("the hospital's case");
    // zkCli's `setquota -n 10 /tenants/hospital/case-17`: the path's mirror, open, then the
    // limits and the stats.
    let mirror = format!("/zookeeper/quota{case}");
    for p in [
        "/zookeeper/quota/tenants",
        "/zookeeper/quota/tenants/hospital",
        &mirror,
    ] {
        nurse
            .create(p, b"", CreateMode::Persistent)
            .await
            .unwrap_or_else(|e| panic!("create {p}: {e}"));
    }
    let limits = format!("{mirror}/zookeeper_limits");
    let stats = format!("{mirror}/zookeeper_stats");
    nurse
        .create(&limits, b"count=10,bytes=-1", CreateMode::Persistent)
        .await
        .expect("the limits");
    nurse
        .create(&stats, b"count=0,bytes=0", CreateMode::Persistent)
        .await
        .expect("the stats");
    let (counted, _) = nurse
        .get_data(&stats)
        .await
        .expect("the hospital reads its stats");
    assert_eq!(&counted[..], b"count=1,bytes=8");

    // The lab: tenant names are public (as /tenants is), the hospital's mirror is not.
    assert_eq!(
        analyst
            .get_children("/zookeeper/quota/tenants")
            .await
            .expect("list the tenants' mirrors"),
        vec!["hospital".to_string()]
    );
    let refused = |what: &str, r: ErrorCode| {
        assert_eq!(r, ErrorCode::NoAuth, "the lab's {what}");
    };
    refused(
        "listing of the hospital's mirror",
        code(
            analyst
                .get_children("/zookeeper/quota/tenants/hospital")
                .await,
        ),
    );
    refused(
        "listing of the case's mirror",
        code(analyst.get_children(&mirror).await),
    );
    refused("read of the stats", code(analyst.get_data(&stats).await));
    refused("read of the limits", code(analyst.get_data(&limits).await));
    refused("exists of the stats", code(analyst.exists(&stats).await));

    // Its own mirror, made after the hospital's: once its event arrives, every earlier one has.
    analyst
        .create("/zookeeper/quota/tenants/lab", b"", CreateMode::Persistent)
        .await
        .expect("the lab's mirror");
    let mut paths = Vec::new();
    loop {
        let ev = tokio::time::timeout(WAIT, heard.next())
            .await
            .expect("the lab's own event arrives")
            .expect("the watch stays");
        if ev.path == "/zookeeper/quota/tenants/lab" {
            break;
        }
        paths.push(ev.path);
    }
    assert!(
        paths
            .iter()
            .all(|p| !p.starts_with("/zookeeper/quota/tenants/hospital")),
        "the lab heard of the hospital's quota nodes: {paths:?}"
    );

    // The case deleted, its quota nodes stay (as in ZooKeeper): who may set a quota there (ADMIN
    // on the hospital's home) may still read them, nobody else.
    nurse.delete(case, None).await.expect("delete the case");
    refused(
        "read of a deleted case's stats",
        code(analyst.get_data(&stats).await),
    );
    refused(
        "listing of a deleted case's mirror",
        code(
            analyst
                .get_children("/zookeeper/quota/tenants/hospital")
                .await,
        ),
    );
    nurse
        .get_data(&limits)
        .await
        .expect("the hospital still reads its limits");
    nurse.close().await.expect("close");
    analyst.close().await.expect("close");
}
