//! The authorization sweep against synod (testkit/src/authz.rs): a 3-node secure cluster, an
//! anonymous client and another tenant's identity try every door of the client protocol on a
//! node only its owner may use — nothing of it may leak, including through the events replayed
//! to a resuming session. Then every four-letter word and every admin endpoint, asked by a
//! client certificate that is not an operator's (and by none), must refuse or reveal nothing of
//! that node.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use synod_testkit::{authz, blocking, AdminHttp, SynodEnsemble};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_of_another_tenants_node_leaks_through_any_door() {
    let optional = ["--client-auth".to_string(), "optional".to_string()];
    let ens = Arc::new(
        SynodEnsemble::start_tls(Path::new(env!("CARGO_BIN_EXE_synod")), 3, &optional)
            .expect("start a 3-node synod cluster"),
    );
    let root = "/authz-sweep";
    let findings = authz::sweep(ens.clone(), root, true)
        .await
        .unwrap_or_else(|e| panic!("the sweep could not run: {e}\n{}", ens.logs()));
    let table = authz::table(&findings);
    eprintln!("authorization sweep against synod:\n{table}");
    assert!(findings.len() >= 46, "too few probes:\n{table}");
    assert!(
        findings.iter().all(authz::Finding::holds),
        "a door leaks:\n{table}"
    );

    // The admin port: what is open to any TLS client reveals no path; the rest needs an
    // operator (401 without a certificate, 403 with a tenant's).
    let certs = ens.root().join("certs");
    let ca = certs.join("ca.crt");
    let tenant = AdminHttp::https(
        &ca,
        Some((&certs.join("tester.crt"), &certs.join("tester.key"))),
    )
    .expect("a tenant's HTTPS client");
    let anonymous = AdminHttp::https(&ca, None).expect("an anonymous HTTPS client");
    let admin = ens.admin_addr(0).expect("admin address");
    // (path, open to any TLS client)
    let mut paths: Vec<(String, bool)> = [
        ("/health", true),
        ("/ready", true),
        ("/status", true),
        ("/members", true),
        ("/membership", true),
        ("/metrics", true),
        ("/commands", true),
        ("/ui", true),
        ("/sessions", false),
        ("/watches", false),
        ("/tree?path=/authz-sweep/secret", false),
        ("/digest", false),
        ("/snapshot", false),
    ]
    .iter()
    .map(|(p, open)| (p.to_string(), *open))
    .collect();
    let open_words = ["ruok", "srvr", "mntr", "isro"];
    for w in [
        "ruok", "srvr", "stat", "mntr", "cons", "envi", "conf", "wchs", "wchc", "wchp", "dump",
        "isro", "srst", "crst",
    ] {
        paths.push((format!("/commands/{w}"), open_words.contains(&w)));
    }
    let timeout = Duration::from_secs(30);
    for (path, open) in &paths {
        for (who, client, refused) in [("anonymous", &anonymous, 401), ("a tenant", &tenant, 403)] {
            let (status, body) = blocking(|| client.request(admin, "GET", path, None, timeout))
                .unwrap_or_else(|e| panic!("GET {path} as {who}: {e}"));
            let body = String::from_utf8_lossy(&body);
            let want = if *open { 200 } else { refused };
            assert_eq!(status, want, "GET {path} as {who}: {body}");
            assert!(
                !body.contains("secret"),
                "GET {path} as {who} reveals the node: {body}"
            );
        }
    }
    for (method, path) in [
        ("POST", "/snapshot"),
        ("POST", "/members/add-learner"),
        ("POST", "/members/promote"),
        ("POST", "/members/remove"),
    ] {
        let (status, _) = blocking(|| tenant.request(admin, method, path, Some("{}"), timeout))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(status, 403, "{method} {path} as a tenant");
    }
}
