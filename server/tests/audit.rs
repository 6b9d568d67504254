//! The audit trail on a real 3-node secure cluster: every change — writes (refused ones too),
//! sessions, tenant changes — is recorded with who (certificate identity, organisation, tenant,
//! client address, session), what (op, paths, result, version) and when; every replica holds
//! the same records and verifies them against the replicated head; queries filter by path,
//! identity and tenant; and offline, `synod audit verify` passes on a stopped node's data dir
//! and on its export, and names the record when one byte of the export is changed or a record
//! is removed.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use synod_client::tls::TlsOptions;
use synod_client::{perms, Acl, Client, ConnectOptions, CreateMode, Op};
use synod_testkit::{blocking, Ensemble, SynodEnsemble};

const BIN: &str = env!("CARGO_BIN_EXE_synod");
const WAIT: Duration = Duration::from_secs(30);

fn admin(
    ens: &SynodEnsemble,
    idx: usize,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    ens.admin_json(idx, method, path, body)
}

fn synod(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).output().expect("run synod");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The records of node `idx` matching `query` (without its leading `?`).
fn records(ens: &SynodEnsemble, idx: usize, query: &str) -> Vec<Value> {
    let (status, v) = admin(
        ens,
        idx,
        "GET",
        &format!("/audit?limit=10000&{query}"),
        None,
    );
    assert_eq!(status, 200, "GET /audit?{query}: {v}");
    v["records"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_recorded_alike_on_every_replica_and_verifiable() {
    let ens = SynodEnsemble::start_tls(Path::new(BIN), 3, &[]).expect("start a 3-node cluster");
    let certs = ens.root().join("certs");
    let (ok, out) = synod(&[
        "certs",
        "--dir",
        &certs.to_string_lossy(),
        "create-client",
        "--name",
        "nurse",
        "--institution",
        "St Mary Hospital",
    ]);
    assert!(ok, "issue a certificate: {out}");
    let (status, v) = admin(
        &ens,
        0,
        "POST",
        "/tenants",
        Some(json!({"name": "hospital", "members": ["org:St Mary Hospital"]})),
    );
    assert_eq!(status, 200, "{v}");

    let tls = TlsOptions::new(certs.join("ca.crt"))
        .identity(certs.join("nurse.crt"), certs.join("nurse.key"))
        .connector()
        .expect("TLS connector");
    let nurse = Client::connect(
        &ens.connect_string(),
        ConnectOptions {
            tls: Some(tls),
            ..ConnectOptions::default()
        },
    )
    .await
    .expect("the nurse connects");
    let session = nurse.session_id();
    let case = "/tenants/hospital/case-9";
    nurse
        .create(case, b"v0", CreateMode::Persistent)
        .await
        .expect("create");
    nurse.set_data(case, b"v1", None).await.expect("set");
    // Refused writes are recorded too.
    let locked = [Acl::new(perms::READ, "world", "anyone")];
    nurse
        .create_full("/locked", b"", &locked, CreateMode::Persistent, None)
        .await
        .expect("create /locked");
    assert!(nurse.set_data("/locked", b"x", None).await.is_err());
    let multi = nurse
        .multi(vec![
            Op::create(&format!("{case}/a"), Vec::new(), CreateMode::Persistent),
            Op::set_data(case, b"v2".to_vec(), Some(1)),
        ])
        .await;
    assert!(multi.is_ok(), "{multi:?}");
    nurse.close().await.expect("close");

    // Every replica holds the same trail, verified against the replicated head.
    let deadline = Instant::now() + WAIT;
    let trails = loop {
        let trails: Vec<Vec<Value>> = (0..3).map(|i| records(&ens, i, "")).collect();
        let closed = trails.iter().all(|t| {
            t.iter()
                .any(|r| r["session"] == session && r["action"]["SessionClosed"].is_object())
        });
        if closed && trails.iter().all(|t| *t == trails[0]) {
            break trails;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas' trails differ: {trails:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for i in 0..3 {
        let (status, v) = admin(&ens, i, "GET", "/audit/verify", None);
        assert_eq!(
            (status, &v["ok"], &v["head_matched"]),
            (200, &json!(true), &json!(true)),
            "node {i}: {v}"
        );
    }
    let trail = &trails[0];
    let of_case: Vec<&Value> = trail
        .iter()
        .filter(|r| {
            r["action"]["Write"]["ops"]
                .as_array()
                .is_some_and(|ops| ops.iter().any(|o| o["path"] == case))
        })
        .collect();
    assert_eq!(of_case.len(), 3, "create, set, multi: {of_case:#?}");
    let create = of_case[0];
    let ids: Vec<&str> = create["identities"]
        .as_array()
        .expect("identities")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(ids.contains(&"x509:nurse"), "{ids:?}");
    assert!(ids.contains(&"org:St Mary Hospital"), "{ids:?}");
    assert!(ids.iter().any(|i| i.starts_with("ip:127.0.0.1")), "{ids:?}");
    assert_eq!(create["tenant"], "hospital");
    assert_eq!(create["session"], session);
    assert!(create["time_ms"]
        .as_i64()
        .is_some_and(|t| t > 1_600_000_000_000));
    assert_eq!(create["action"]["Write"]["op"], "create2");
    assert_eq!(
        of_case[1]["action"]["Write"]["ops"][0]["version"], 1,
        "setData's new version"
    );
    assert_eq!(
        of_case[1]["action"]["Write"]["ops"][0]["version_before"], 0,
        "setData's version before"
    );
    assert_eq!(of_case[2]["action"]["Write"]["op"], "multi");
    let refused: Vec<&Value> = trail
        .iter()
        .filter(|r| r["action"]["Write"]["op"] == "setData" && r["action"]["Write"]["err"] == -102)
        .collect();
    assert_eq!(refused.len(), 1, "the refused setData (NoAuth): {trail:#?}");
    assert!(trail.iter().any(|r| r["action"]["Tenant"]["change"]
        .as_str()
        .is_some_and(|c| c.starts_with("declare hospital"))));
    let opened = trail
        .iter()
        .find(|r| r["session"] == session && r["action"]["SessionOpened"].is_object())
        .expect("the session's opening");
    let fingerprint = |i: &Value| {
        i.as_str()
            .is_some_and(|i| i.starts_with("x509-sha256:") && i.len() == 12 + 64)
    };
    assert!(
        opened["identities"]
            .as_array()
            .is_some_and(|ids| ids.iter().any(fingerprint)),
        "the certificate's fingerprint: {opened}"
    );
    // The trail begins where the cluster's version rose to one that keeps it, at the same
    // entry on every replica (the cluster's first entries, its initial membership included,
    // precede it).
    assert_eq!(
        trail[0]["action"]["ClusterVersion"]["version"],
        synod_raft_store::types::CLUSTER_VERSION,
        "the trail starts with the cluster version: {}",
        trail[0]
    );
    assert_eq!(
        trail[0]["action"]["ClusterVersion"]["voters"],
        serde_json::json!([1, 2, 3]),
        "with the membership: {}",
        trail[0]
    );
    // Filters.
    assert_eq!(records(&ens, 1, &format!("path={case}")).len(), 3);
    assert_eq!(
        records(&ens, 1, "path=/tenants/hospital").len(),
        3,
        "a prefix"
    );
    assert_eq!(
        records(&ens, 1, "path=/tenants/hosp").len(),
        0,
        "a prefix ends at a /"
    );
    let by_nurse = records(&ens, 2, "identity=x509:nurse");
    assert_eq!(
        by_nurse.len(),
        6,
        "the session's opening, create, set, create /locked, refused set, multi"
    );
    assert_eq!(records(&ens, 2, "tenant=hospital").len(), 6);

    // A backup and an export of the trail vouch for each other: the export reaches the
    // backup's replicated head; an export cut short does not.
    let (status, _) = admin(&ens, 0, "POST", "/snapshot", None);
    assert_eq!(status, 200);
    let (status, backup) =
        blocking(|| ens.http(0, "GET", "/snapshot", None)).expect("GET /snapshot");
    assert_eq!(status, 200);
    let backup_file = ens.root().join("backup.bin");
    std::fs::write(&backup_file, &backup).expect("write the backup");
    let (status, jsonl) = blocking(|| ens.http(0, "GET", "/audit?format=jsonl&limit=10000", None))
        .expect("GET /audit?format=jsonl");
    assert_eq!(status, 200);
    let full = ens.root().join("full.jsonl");
    std::fs::write(&full, &jsonl).expect("write the export");
    let b = backup_file.to_string_lossy().to_string();
    let (ok, out) = synod(&[
        "audit",
        "verify",
        "--export",
        &full.to_string_lossy(),
        "--backup",
        &b,
    ]);
    assert!(ok && out.contains("the replicated head matches"), "{out}");
    let text = String::from_utf8_lossy(&jsonl).to_string();
    let short: Vec<&str> = text.lines().collect();
    let cut = ens.root().join("cut.jsonl");
    std::fs::write(&cut, short[..short.len() - 3].join("\n")).expect("write");
    let (ok, out) = synod(&[
        "audit",
        "verify",
        "--export",
        &cut.to_string_lossy(),
        "--backup",
        &b,
    ]);
    assert!(
        !ok && out.contains("ends before the backup's replicated head"),
        "{out}"
    );

    // Offline: a stopped node's trail verifies; so does its export, and an edited export fails.
    ens.terminate(2, WAIT).expect("stop node 3");
    let dir = ens.node(2).expect("node").data_dir();
    let dir_s = dir.to_string_lossy().to_string();
    let (ok, out) = synod(&["audit", "verify", "--data-dir", &dir_s]);
    assert!(ok && out.contains("the replicated head matches"), "{out}");
    let export = ens.root().join("audit.jsonl");
    let export_s = export.to_string_lossy().to_string();
    let (ok, out) = synod(&["audit", "export", "--data-dir", &dir_s, "--out", &export_s]);
    assert!(ok, "{out}");
    let (ok, out) = synod(&["audit", "verify", "--export", &export_s]);
    assert!(ok, "{out}");
    let text = std::fs::read_to_string(&export).expect("read the export");
    let edited = text.replacen("case-9", "case-8", 1);
    assert_ne!(edited, text);
    std::fs::write(&export, &edited).expect("write");
    let (ok, out) = synod(&["audit", "verify", "--export", &export_s]);
    assert!(
        !ok && out.contains("the chain breaks at the record of zxid"),
        "an edited record: {out}"
    );
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(lines.len() / 2);
    std::fs::write(&export, lines.join("\n")).expect("write");
    let (ok, out) = synod(&["audit", "verify", "--export", &export_s]);
    assert!(
        !ok && out.contains("does not follow"),
        "a removed record: {out}"
    );
    ens.spawn(2).expect("restart node 3");
    ens.wait_caught_up(2, WAIT).expect("node 3 catches up");
    let (status, v) = admin(&ens, 2, "GET", "/audit/verify", None);
    assert_eq!(
        (status, &v["ok"]),
        (200, &json!(true)),
        "after the restart: {v}"
    );
}
