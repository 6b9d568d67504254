//! The secure client port against a real single-node synod server (the `synod` binary): TLS 1.3
//! with client certificates verified against the node's CA; a certificate's subject CN is the
//! connection's `x509` identity, which ACLs grant to; clients without a certificate the CA
//! vouches for (none, another CA's, an expired one, plaintext) are refused during the handshake
//! and leave no connection behind. kazoo (Debian's python3-kazoo), a ZooKeeper client that is
//! not synod's, speaks to the secure port with its own TLS stack.

use std::path::{Path, PathBuf};
use std::time::Duration;

use synod_client::tls::TlsOptions;
use synod_client::{perms, Acl, Client, ConnectOptions, CreateMode, Error};
use synod_server::tls::certs::{create_ca, issue, Issued, Subject, Validity};
use synod_testkit::{blocking, free_ports, Ensemble, SynodEnsemble};

/// A CA and the certificates the tests use, written to a temp dir.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = create_ca("synod test CA", Validity::days(1)).expect("CA");
        ca.write(dir.path(), "ca").expect("write CA");
        let node = Subject::Node {
            id: 1,
            hosts: vec!["127.0.0.1".into(), "localhost".into()],
        };
        let write = |issued: Issued, stem: &str| {
            issued.write(dir.path(), stem).expect("write certificate");
        };
        write(issue(&ca, &node, Validity::days(1)).expect("node"), "node1");
        for (name, institution) in [("alice", "lab-3"), ("bob", "imaging-1")] {
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

/// A single node with a plaintext and a secure client port.
struct Server {
    ens: SynodEnsemble,
    secure: String,
}

impl Server {
    fn start(pki: &Pki) -> Server {
        let port = free_ports(1).expect("free port")[0];
        let secure = format!("127.0.0.1:{port}");
        let arg = |p: PathBuf| p.display().to_string();
        let extra = vec![
            "--secure-client-addr".into(),
            secure.clone(),
            "--tls-ca".into(),
            arg(pki.path("ca.crt")),
            "--tls-cert".into(),
            arg(pki.path("node1.crt")),
            "--tls-key".into(),
            arg(pki.path("node1.key")),
        ];
        let bin = Path::new(env!("CARGO_BIN_EXE_synod"));
        let ens = blocking(|| SynodEnsemble::start(bin, 1, &extra)).expect("start synod");
        Server { ens, secure }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_identities_and_clients_without_a_vouched_one_are_refused() {
    let pki = Pki::new();
    let server = Server::start(&pki);

    // alice's certificate makes her x509:alice: a node only she may read stays hers.
    let alice = server
        .connect(&pki.client(Some("alice")))
        .await
        .expect("alice connects with her certificate");
    alice
        .create_full(
            "/case-17",
            b"diagnosis draft",
            &[Acl::new(perms::ALL, "x509", "alice")],
            CreateMode::Persistent,
            None,
        )
        .await
        .expect("alice creates her case");
    let (data, _) = alice.get_data("/case-17").await.expect("alice reads it");
    assert_eq!(&data[..], b"diagnosis draft");

    let bob = server
        .connect(&pki.client(Some("bob")))
        .await
        .expect("bob connects with his certificate");
    assert_eq!(bob.get_data("/case-17").await.err(), Some(Error::NoAuth));
    let plain = Client::connect(
        &server.ens.addrs()[0].to_string(),
        ConnectOptions::default(),
    )
    .await
    .expect("plaintext port");
    assert_eq!(plain.get_data("/case-17").await.err(), Some(Error::NoAuth));
    plain.close().await.expect("close");
    bob.close().await.expect("close");

    // Refused during the handshake: no certificate, an expired one, alice's name from another
    // CA, and plaintext on the TLS port.
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
