//! The secure client and admin ports against a real single-node synod server (the `synod`
//! binary, secure by default): TLS 1.3 with client certificates verified against the node's CA;
//! a certificate's subject CN is the connection's `x509` identity, which ACLs grant to; clients
//! without a certificate the CA vouches for (none, another CA's, an expired one, plaintext) are
//! refused during the handshake and leave no connection behind. kazoo (Debian's python3-kazoo),
//! a ZooKeeper client that is not synod's, speaks to the secure port with its own TLS stack. The
//! admin port answers probes to anyone, and everything else only to an operator's certificate
//! (401 without a certificate, 403 with another's, and neither leaks data). Certificates rotate
//! under load (new files and SIGHUP) without losing a session.

use std::path::{Path, PathBuf};
use std::time::Duration;

use synod_client::tls::TlsOptions;
use synod_client::{perms, Acl, Client, ConnectOptions, CreateMode, Error};
use synod_server::tls::certs::{create_ca, issue, Issued, Subject, Validity};
use synod_testkit::{blocking, free_ports, AdminHttp, Ensemble, SynodEnsemble};

/// A CA and the certificates the tests use, written to a temp dir.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// Certificates from the ensemble's CA (`certs`: its directory), and a few from another.
    fn new(certs: &Path) -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Issued::read(&certs.join("ca.crt"), &certs.join("ca.key")).expect("read the CA");
        ca.write(dir.path(), "ca").expect("write CA");
        let write = |issued: Issued, stem: &str| {
            issued.write(dir.path(), stem).expect("write certificate");
        };
        for (name, institution) in [
            ("alice", "lab-3"),
            ("bob", "imaging-1"),
            ("breakglass", "it-ops"),
        ] {
            let who = Subject::Client {
                name: name.into(),
                institution: Some(institution.into()),
            };
            write(issue(&ca, &who, Validity::days(1)).expect("client"), name);
        }
        // An expired certificate from the right CA.
        let now = time::OffsetDateTime::now_utc();
        let expired = Validity {
            not_before: now - time::Duration::days(10),
            not_after: now - time::Duration::days(1),
        };
        let carol = Subject::Client {
            name: "carol".into(),
            institution: None,
        };
        write(
            issue(&ca, &carol, expired).expect("expired"),
            "carol-expired",
        );
        // A certificate for "alice" from another CA.
        let rogue_ca = create_ca("rogue CA", Validity::days(1)).expect("rogue CA");
        let alice = Subject::Client {
            name: "alice".into(),
            institution: Some("lab-3".into()),
        };
        write(
            issue(&rogue_ca, &alice, Validity::days(1)).expect("rogue"),
            "alice-rogue",
        );
        Pki { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Client TLS options trusting the CA, presenting `<stem>.crt` if `stem` is given.
    fn client(&self, stem: Option<&str>) -> TlsOptions {
        let tls = TlsOptions::new(self.path("ca.crt"));
        match stem {
            Some(s) => tls.identity(
                self.path(&format!("{s}.crt")),
                self.path(&format!("{s}.key")),
            ),
            None => tls,
        }
    }
}

/// A single secure node that also keeps a plaintext client port (as a site migrating to TLS).
struct Server {
    ens: SynodEnsemble,
    /// The secure client port.
    secure: String,
    /// The plaintext client port.
    plain: String,
}

impl Server {
    /// Starts the node; returns it with certificates from its CA.
    fn start() -> (Server, Pki) {
        Server::start_with(&[])
    }

    /// Like [`Server::start`], with more flags.
    fn start_with(more: &[&str]) -> (Server, Pki) {
        let port = free_ports(1).expect("free port")[0];
        let plain = format!("127.0.0.1:{port}");
        let mut extra = vec!["--client-addr".to_string(), plain.clone()];
        extra.extend(more.iter().map(|s| s.to_string()));
        let bin = Path::new(env!("CARGO_BIN_EXE_synod"));
        let ens = blocking(|| SynodEnsemble::start_tls(bin, 1, &extra)).expect("start synod");
        let secure = ens.addrs()[0].to_string();
        let pki = Pki::new(&Server::certs_dir(&ens));
        (Server { ens, secure, plain }, pki)
    }

    /// The ensemble's certificates (`synod certs` wrote them beside the node directory).
    fn certs_dir(ens: &SynodEnsemble) -> PathBuf {
        let node_dir = &ens.nodes()[0].dir;
        node_dir.parent().unwrap_or(node_dir).join("certs")
    }

    async fn connect(&self, tls: &TlsOptions) -> Result<Client, Error> {
        let connector = tls.connector().expect("client TLS material loads");
        let opts = ConnectOptions::default()
            .connect_timeout(Duration::from_secs(3))
            .tls(connector);
        Client::connect(&self.secure, opts).await
    }

    /// (connections on the node, live sessions) from `/status`.
    fn footprint(&self) -> (u64, u64) {
        let field = |f| {
            self.ens
                .status_u64(0, f)
                .unwrap_or_else(|| panic!("/status reports {f}"))
        };
        (field("connections"), field("sessions"))
    }
}

/// alice, connected with her certificate, after creating `path` with `data` that only
/// `x509:alice` may use.
async fn alice_owns(server: &Server, pki: &Pki, path: &str, data: &[u8]) -> Client {
    let alice = server
        .connect(&pki.client(Some("alice")))
        .await
        .expect("alice connects with her certificate");
    alice
        .create_full(
            path,
            data,
            &[Acl::new(perms::ALL, "x509", "alice")],
            CreateMode::Persistent,
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("alice creates {path}: {e}"));
    alice
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_identities_and_clients_without_a_vouched_one_are_refused() {
    let (server, pki) = Server::start();

    // alice's certificate makes her x509:alice: a node only she may read stays hers.
    let alice = alice_owns(&server, &pki, "/case-17", b"diagnosis draft").await;
    let (data, _) = alice.get_data("/case-17").await.expect("alice reads it");
    assert_eq!(&data[..], b"diagnosis draft");

    let bob = server
        .connect(&pki.client(Some("bob")))
        .await
        .expect("bob connects with his certificate");
    assert_eq!(bob.get_data("/case-17").await.err(), Some(Error::NoAuth));
    let plain = Client::connect(&server.plain, ConnectOptions::default())
        .await
        .expect("plaintext port");
    assert_eq!(plain.get_data("/case-17").await.err(), Some(Error::NoAuth));
    plain.close().await.expect("close");
    bob.close().await.expect("close");

    // Refused during the handshake: no certificate, an expired one, alice's name from another
    // CA, and plaintext on the TLS port. First, bob's and the plaintext connection are gone
    // (a close is answered before the server drops the connection): only alice's is left.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.footprint() != (1, 1) {
        assert!(
            std::time::Instant::now() < deadline,
            "closed connections linger: {:?}",
            server.footprint()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = server.footprint();
    for (what, tls) in [
        ("no certificate", pki.client(None)),
        ("an expired certificate", pki.client(Some("carol-expired"))),
        ("another CA's certificate", pki.client(Some("alice-rogue"))),
    ] {
        match server.connect(&tls).await {
            Err(Error::ConnectTimeout(_)) => {}
            Err(e) => panic!("{what}: expected the connection refused, got {e}"),
            Ok(_) => panic!("{what}: a session was established"),
        }
    }
    let plaintext_on_tls = Client::connect(
        &server.secure,
        ConnectOptions::default().connect_timeout(Duration::from_secs(3)),
    )
    .await;
    assert!(
        matches!(plaintext_on_tls, Err(Error::ConnectTimeout(_))),
        "plaintext on the TLS port must not get a session"
    );
    // Nothing left behind (no connection, no session); alice is still served.
    assert_eq!(server.footprint(), before);
    let (data, _) = alice
        .get_data("/case-17")
        .await
        .expect("alice still served");
    assert_eq!(&data[..], b"diagnosis draft");

    // kazoo, with alice's certificate, creates a node only x509:alice may use.
    let secure = server.secure.clone();
    let kazoo_pki = pki.dir.path().to_path_buf();
    let out = blocking(move || kazoo(&secure, &kazoo_pki)).expect("run kazoo");
    assert!(out.contains("kazoo-ok"), "kazoo over TLS: {out}");
    let (data, _) = alice.get_data("/kazoo-tls").await.expect("alice reads it");
    assert_eq!(&data[..], b"from kazoo");
    let bob = server
        .connect(&pki.client(Some("bob")))
        .await
        .expect("bob connects");
    assert_eq!(bob.get_data("/kazoo-tls").await.err(), Some(Error::NoAuth));
    bob.close().await.expect("close");
    alice.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_that_reveal_or_change_need_an_operator() {
    let (server, pki) = Server::start();
    let certs = Server::certs_dir(&server.ens);
    let admin = server.ens.admin_addr(0).expect("admin address");
    let ca = certs.join("ca.crt");
    let anonymous = AdminHttp::https(&ca, None).expect("anonymous HTTPS client");
    let alice = AdminHttp::https(&ca, Some((&pki.path("alice.crt"), &pki.path("alice.key"))))
        .expect("alice's HTTPS client");
    let operator = AdminHttp::https(
        &ca,
        Some((&certs.join("admin.crt"), &certs.join("admin.key"))),
    )
    .expect("the operator's HTTPS client");
    let timeout = Duration::from_secs(30);

    // Something secret to look for in every answer.
    let owner = alice_owns(&server, &pki, "/patient-4711", b"biopsy: malignant").await;

    // Probes and scrapers need no certificate.
    for path in ["/health", "/ready", "/status", "/metrics", "/commands/ruok"] {
        let (status, _) = blocking(|| anonymous.request(admin, "GET", path, None, timeout))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(status, 200, "GET {path} without a certificate");
    }
    // Everything that reveals data or changes state: 401 without a certificate, 403 with one
    // that is not an operator's; neither answer says anything about the data.
    let protected = [
        ("GET", "/tree?path=/patient-4711"),
        ("GET", "/snapshot"),
        ("GET", "/sessions"),
        ("GET", "/watches"),
        ("GET", "/digest"),
        ("GET", "/commands/dump"),
        ("GET", "/commands/cons"),
        ("GET", "/commands/envi"),
        ("POST", "/snapshot"),
        ("POST", "/members/remove"),
        ("POST", "/members/add-learner"),
    ];
    for (method, path) in protected {
        for (who, client, want) in [("anonymous", &anonymous, 401), ("alice", &alice, 403)] {
            let (status, body) =
                blocking(|| client.request(admin, method, path, Some("{}"), timeout))
                    .unwrap_or_else(|e| panic!("{method} {path} as {who}: {e}"));
            let body = String::from_utf8_lossy(&body);
            assert_eq!(status, want, "{method} {path} as {who}: {body}");
            assert!(
                !body.contains("patient-4711") && !body.contains("biopsy"),
                "{method} {path} as {who} leaks: {body}"
            );
        }
    }
    // The operator is served.
    let (status, body) =
        blocking(|| operator.request(admin, "GET", "/tree?path=/patient-4711", None, timeout))
            .expect("the operator's GET /tree");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("patient-4711"));
    let (status, _) = blocking(|| operator.request(admin, "POST", "/snapshot", None, timeout))
        .expect("the operator's POST /snapshot");
    assert_eq!(status, 200);
    // Plaintext HTTP gets no answer from the HTTPS port.
    assert!(
        blocking(|| AdminHttp::plain().request(admin, "GET", "/health", None, timeout)).is_err()
    );
    owner.close().await.expect("close");
}

/// kazoo's side: connect over TLS as alice, create `/kazoo-tls` readable by `x509:alice` only,
/// read it back.
const KAZOO_SCRIPT: &str = r#"
import sys
from kazoo.client import KazooClient
from kazoo.security import make_acl
hosts, ca, cert, key = sys.argv[1:5]
zk = KazooClient(hosts=hosts, use_ssl=True, ca=ca, certfile=cert, keyfile=key,
                 verify_certs=True, timeout=10)
zk.start(timeout=20)
zk.create("/kazoo-tls", b"from kazoo", acl=[make_acl("x509", "alice", all=True)])
data, _ = zk.get("/kazoo-tls")
assert data == b"from kazoo", data
zk.stop()
zk.close()
print("kazoo-ok")
"#;

/// How long the kazoo script may take.
const KAZOO_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs [`KAZOO_SCRIPT`] with Debian's python (package python3-kazoo, which scripts/test.sh
/// installs) against `hosts` with alice's certificate from `certs`; returns its output. The
/// process is killed if it outlives [`KAZOO_TIMEOUT`].
fn kazoo(hosts: &str, certs: &Path) -> std::io::Result<String> {
    let path = |f: &str| certs.join(f).display().to_string();
    let mut child = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(KAZOO_SCRIPT)
        .args([
            hosts.to_string(),
            path("ca.crt"),
            path("alice.crt"),
            path("alice.key"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let deadline = std::time::Instant::now() + KAZOO_TIMEOUT;
    while child.try_wait()?.is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other("kazoo did not finish in time"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output()?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// The break-glass identity `super` — by certificate (`--super-identities`) and by ZooKeeper's
/// superDigest (`--super-digest`) — passes every ACL, and every use of it is logged; nobody else
/// gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_super_identity_is_granted_by_certificate_or_digest_and_logged() {
    // The digest of `super:letmein`, as ZooKeeper's DigestAuthenticationProvider computes it.
    let (server, pki) = Server::start_with(&[
        "--super-identities",
        "breakglass",
        "--super-digest",
        "super:5ZIErkhbrC1ytr/v6D+dXQw7elQ=",
    ]);
    let alice = alice_owns(&server, &pki, "/sealed", b"only alice").await;
    let bob = server
        .connect(&pki.client(Some("bob")))
        .await
        .expect("bob connects");
    assert_eq!(bob.get_data("/sealed").await.err(), Some(Error::NoAuth));
    // A wrong super password is just another digest identity.
    bob.add_auth("digest", b"super:guess")
        .await
        .expect("addauth");
    assert_eq!(bob.get_data("/sealed").await.err(), Some(Error::NoAuth));

    let by_cert = server
        .connect(&pki.client(Some("breakglass")))
        .await
        .expect("breakglass connects");
    let (data, _) = by_cert
        .get_data("/sealed")
        .await
        .expect("super by certificate reads");
    assert_eq!(&data[..], b"only alice");
    let by_digest = server
        .connect(&pki.client(Some("bob")))
        .await
        .expect("bob connects again");
    by_digest
        .add_auth("digest", b"super:letmein")
        .await
        .expect("addauth super");
    by_digest
        .set_data("/sealed", b"overridden", None)
        .await
        .expect("super by digest writes");
    let log = server.ens.log(0);
    assert!(
        log.contains("certificate grants the super identity"),
        "the certificate's use is logged"
    );
    assert!(
        log.contains("addauth grants the super identity"),
        "the digest's use is logged"
    );
    assert!(log.contains("request as super"), "each request is logged");
    assert!(
        !log.contains("letmein"),
        "the password never reaches the log"
    );
    for c in [alice, bob, by_cert, by_digest] {
        c.close().await.expect("close");
    }
}

/// The leaf certificate a TLS server at `addr` presents to a client with `tls`.
async fn served_certificate(addr: std::net::SocketAddr, tls: &TlsOptions) -> Vec<u8> {
    let config = tls.client_config().expect("client TLS material loads");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("server name");
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| c.as_ref().to_vec());
    leaf.expect("the server presents a certificate")
}

/// The DER of the first certificate in a PEM file.
fn pem_leaf(path: &Path) -> Vec<u8> {
    synod_client::tls::load_certs(path)
        .expect("PEM certificate")
        .first()
        .map(|c| c.as_ref().to_vec())
        .expect("a certificate")
}

/// Certificates are replaced on every node (new files, then SIGHUP) while sessions write: every
/// session lives on and every write is acknowledged; new connections on the client and admin
/// ports get the new certificate; a reload from unusable files keeps the material in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load_without_losing_a_session() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    let bin = Path::new(env!("CARGO_BIN_EXE_synod"));
    let ens = blocking(|| SynodEnsemble::start_tls(bin, 3, &[])).expect("start a TLS cluster");
    let certs = Server::certs_dir(&ens);
    let tester = TlsOptions::new(certs.join("ca.crt"))
        .identity(certs.join("tester.crt"), certs.join("tester.key"));

    // Four sessions, each writing its own znode as fast as it is answered.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let client = Client::connect(
            &ens.connect_string(),
            ens.connect_options()
                .connect_timeout(Duration::from_secs(10)),
        )
        .await
        .expect("a writer connects");
        let path = format!("/rotation-{w}");
        client
            .create(&path, b"0", CreateMode::Persistent)
            .await
            .expect("create the writer's node");
        let (stop, acked) = (stop.clone(), Arc::new(AtomicU64::new(0)));
        let counter = acked.clone();
        let session = client.session_id();
        let task = tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = counter.load(Ordering::Relaxed) + 1;
                client
                    .set_data(&path, n.to_string().as_bytes(), None)
                    .await
                    .map_err(|e| format!("write {n} of {path}: {e}"))?;
                counter.store(n, Ordering::Relaxed);
            }
            Ok::<_, String>((client, path))
        });
        writers.push((task, acked, session));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // New certificates for every node from the same CA, moved over the files the nodes were
    // started with, then SIGHUP.
    let ca = Issued::read(&certs.join("ca.crt"), &certs.join("ca.key")).expect("read the CA");
    let fresh = tempfile::tempdir().expect("temp dir");
    let mut new_leaves = Vec::new();
    for (idx, node) in ens.nodes().iter().enumerate() {
        let stem = format!("node{}", node.id);
        let subject = Subject::Node {
            id: node.id as u64,
            hosts: vec!["127.0.0.1".into(), "localhost".into()],
        };
        let (crt, key) = issue(&ca, &subject, Validity::days(30))
            .expect("issue")
            .write(fresh.path(), &stem)
            .expect("write");
        std::fs::rename(&key, certs.join(format!("{stem}.key"))).expect("replace the key");
        std::fs::rename(&crt, certs.join(format!("{stem}.crt"))).expect("replace the certificate");
        new_leaves.push(pem_leaf(&certs.join(format!("{stem}.crt"))));
        ens.hangup(idx).expect("SIGHUP");
    }
    let at_rotation: Vec<u64> = writers
        .iter()
        .map(|(_, acked, _)| acked.load(Ordering::Relaxed))
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while (0..3).any(|i| !ens.log(i).contains("certificates reloaded")) {
        assert!(std::time::Instant::now() < deadline, "no reload logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (idx, leaf) in new_leaves.iter().enumerate() {
        assert_eq!(
            &served_certificate(ens.addrs()[idx], &tester).await,
            leaf,
            "node {idx}'s client port serves the new certificate"
        );
        let admin = ens.admin_addr(idx).expect("admin address");
        assert_eq!(
            &served_certificate(admin, &tester).await,
            leaf,
            "node {idx}'s admin port serves the new certificate"
        );
    }

    // An unusable key: the reload fails and says so; the node keeps serving what it had.
    std::fs::write(certs.join("node1.key"), b"not a key").expect("break the key");
    ens.hangup(0).expect("SIGHUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !ens.log(0).contains("certificate reload failed") {
        assert!(
            std::time::Instant::now() < deadline,
            "no failed reload logged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        &served_certificate(ens.addrs()[0], &tester).await,
        &new_leaves[0]
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for (w, (task, acked, session)) in writers.into_iter().enumerate() {
        let (client, path) = task
            .await
            .expect("writer task")
            .unwrap_or_else(|e| panic!("writer {w}: {e}"));
        let acked = acked.load(Ordering::Relaxed);
        assert!(
            acked > at_rotation[w],
            "writer {w} went on writing after the rotation"
        );
        assert_eq!(client.session_id(), session, "writer {w} kept its session");
        let (data, stat) = client.get_data(&path).await.expect("read back");
        assert_eq!(
            data,
            acked.to_string().as_bytes(),
            "writer {w}'s last write"
        );
        assert_eq!(
            stat.version as u64, acked,
            "writer {w}: every write applied once"
        );
        client.close().await.expect("close");
    }
}
