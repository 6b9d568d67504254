//! synodctl against a real secure single-node synod server (the workspace's `synod` binary):
//! its certificate is the session's `x509` identity (`whoami`), `--auth` adds a digest one,
//! `setacl`/`getacl` round-trip ACL entries, and the admin commands speak HTTPS — answered for
//! an operator's certificate, refused for anyone else's. The node is killed by its pid and its
//! directory removed when the test ends, also when it fails.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long the node may take to serve.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The synodctl binary under test.
fn synodctl_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_synodctl"))
}

/// The server binary, built beside synodctl by `cargo test --workspace` (or `$SYNOD_BIN`).
fn synod_bin() -> PathBuf {
    std::env::var_os("SYNOD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| synodctl_bin().with_file_name("synod"))
}

/// Three distinct loopback addresses nothing listens on right now, none handed out before by
/// this process (the kernel may offer a released port again, and the tests run in parallel).
/// This crate cannot use the testkit's `free_ports` (the testkit depends on the client).
fn free_addrs() -> (SocketAddr, SocketAddr, SocketAddr) {
    static HANDED_OUT: Mutex<BTreeSet<SocketAddr>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    // Held until the end, so the kernel cannot offer the same port twice here.
    let mut probes = Vec::new();
    let mut addrs = Vec::new();
    while addrs.len() < 3 {
        assert!(probes.len() < 1024, "no free loopback ports");
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = probe.local_addr().expect("local addr");
        if handed_out.insert(addr) {
            addrs.push(addr);
        }
        probes.push(probe);
    }
    (addrs[0], addrs[1], addrs[2])
}

/// A started `synod` process, killed (by pid) and reaped when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running node; killed and reaped when dropped (before its directory is removed).
struct Node {
    _child: Running,
    client: SocketAddr,
    admin: SocketAddr,
    certs: PathBuf,
    /// Kept for its removal on drop.
    _dir: tempfile::TempDir,
}

/// Runs `synod certs --dir <dir> <args>`.
fn certs(dir: &Path, args: &[&str]) {
    let out = Command::new(synod_bin())
        .arg("certs")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .expect("run synod certs");
    assert!(
        out.status.success(),
        "synod certs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Node {
    fn start() -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let certs_dir = dir.path().join("certs");
        certs(&certs_dir, &["create-ca"]);
        certs(
            &certs_dir,
            &["create-node", "--id", "1", "--host", "127.0.0.1"],
        );
        for name in ["tester", "admin"] {
            certs(
                &certs_dir,
                &["create-client", "--name", name, "--institution", "lab-1"],
            );
        }
        let (client, admin, peer) = free_addrs();
        let log = std::fs::File::create(dir.path().join("synod.log")).expect("log file");
        let child = Command::new(synod_bin())
            .args(["--id", "1", "--members", &format!("1={peer}")])
            .args(["--secure-client-addr", &client.to_string()])
            .args(["--admin-addr", &admin.to_string()])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--tls-ca")
            .arg(certs_dir.join("ca.crt"))
            .arg("--tls-cert")
            .arg(certs_dir.join("node1.crt"))
            .arg("--tls-key")
            .arg(certs_dir.join("node1.key"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start synod");
        let node = Node {
            _child: Running(child),
            client,
            admin,
            certs: certs_dir,
            _dir: dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let out = node.ctl(
                "admin",
                &["--json", "cluster", "list", "--admin", &admin.to_string()],
            );
            if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"leader\":1")
            {
                return node;
            }
            assert!(
                Instant::now() < deadline,
                "the node did not serve within {START_TIMEOUT:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs synodctl with `identity`'s certificate against this node.
    fn ctl(&self, identity: &str, args: &[&str]) -> Output {
        self.ctl_env(identity, args, &[])
    }

    fn ctl_env(&self, identity: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(synodctl_bin())
            .arg("--servers")
            .arg(self.client.to_string())
            .arg("--tls-ca")
            .arg(self.certs.join("ca.crt"))
            .arg("--tls-cert")
            .arg(self.certs.join(format!("{identity}.crt")))
            .arg("--tls-key")
            .arg(self.certs.join(format!("{identity}.key")))
            .args(args)
            .env_remove("SYNOD_AUTH")
            .env_remove("SYNOD_INSECURE")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run synodctl")
    }
}

/// stdout of a run that must succeed.
fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn synodctl_speaks_tls_with_identities_acls_and_an_operator_certificate() {
    let node = Node::start();
    let admin = node.admin.to_string();

    // The certificate is the session's x509 identity; --auth (here from the environment) adds a
    // digest identity.
    let who = ok(node.ctl("tester", &["whoami"]), "whoami");
    assert!(who.lines().any(|l| l == "x509:tester"), "{who}");
    let who = ok(
        node.ctl_env("tester", &["whoami"], &[("SYNOD_AUTH", "bob:secret")]),
        "whoami --auth",
    );
    assert!(who.lines().any(|l| l == "digest:bob"), "{who}");

    // setacl / getacl round-trip; the ACL then decides who may read.
    ok(
        node.ctl("tester", &["create", "/case-9", "draft"]),
        "create",
    );
    let bob = "digest:bob:fyVmFCwVbTJYrznoSu1koqYEYF0=:r";
    ok(
        node.ctl("tester", &["setacl", "/case-9", "x509:tester:cdrwa", bob]),
        "setacl",
    );
    let acl = ok(node.ctl("tester", &["getacl", "/case-9"]), "getacl");
    assert_eq!(acl, format!("x509:tester:cdrwa\n{bob}\n"));
    let denied = node.ctl("admin", &["get", "/case-9"]);
    assert!(!denied.status.success(), "x509:admin is not in the ACL");
    assert!(String::from_utf8_lossy(&denied.stderr).contains("NoAuth"));
    let read = ok(
        node.ctl("admin", &["--auth", "bob:secret", "get", "/case-9"]),
        "get as digest:bob",
    );
    assert_eq!(read.trim_end(), "draft");
    let bad = node.ctl("tester", &["setacl", "/case-9", "x509:tester:xyz"]);
    assert!(!bad.status.success(), "permissions are letters of cdrwa");
    // create --acl: the znode is born private, with no window in which it is open.
    ok(
        node.ctl(
            "tester",
            &[
                "create",
                "--acl",
                "x509:tester:cdrwa",
                "/case-10",
                "private",
            ],
        ),
        "create --acl",
    );
    let acl = ok(node.ctl("tester", &["getacl", "/case-10"]), "getacl");
    assert_eq!(acl, "x509:tester:cdrwa\n");
    let denied = node.ctl("admin", &["get", "/case-10"]);
    assert!(!denied.status.success(), "x509:admin is not in the ACL");
    let bad = node.ctl("tester", &["create", "--acl", "nonsense", "/case-11"]);
    assert!(!bad.status.success(), "a malformed --acl entry");

    // The admin port over HTTPS: the operator's certificate is served, another is not.
    ok(
        node.ctl("admin", &["cluster", "list", "--admin", &admin]),
        "cluster list as the operator",
    );
    let snap = ok(
        node.ctl("admin", &["snapshot", "--admin", &admin]),
        "snapshot as the operator",
    );
    assert!(snap.contains("last_log"), "{snap}");
    let refused = node.ctl("tester", &["snapshot", "--admin", &admin]);
    assert!(!refused.status.success(), "a non-operator's snapshot");
    let why = String::from_utf8_lossy(&refused.stdout).into_owned()
        + &String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("not an operator"), "{why}");

    // Tenants and the audit trail, as the operator.
    ok(
        node.ctl(
            "admin",
            &[
                "tenant",
                "add",
                "lab",
                "--x509",
                "tester",
                "--max-znodes",
                "100",
                "--admin",
                &admin,
            ],
        ),
        "tenant add",
    );
    let tenants = ok(
        node.ctl("admin", &["tenant", "list", "--admin", &admin]),
        "tenant list",
    );
    assert!(
        tenants.starts_with("lab\t/tenants/lab\tx509:tester\tznodes=0/100"),
        "{tenants}"
    );
    ok(
        node.ctl("tester", &["create", "/tenants/lab/x", "1"]),
        "create in the home",
    );
    let tenants = ok(
        node.ctl("admin", &["tenant", "list", "--admin", &admin]),
        "tenant list",
    );
    assert!(tenants.contains("znodes=1/100"), "{tenants}");
    let trail = ok(
        node.ctl("admin", &["audit", "--path", "/case-9", "--admin", &admin]),
        "audit --path",
    );
    assert!(
        trail.lines().count() == 2
            && trail.contains("x509:tester")
            && trail.contains("create2 /case-9 err=0")
            && trail.contains("setAcl /case-9 err=0"),
        "{trail}"
    );
    let export = node._dir.path().join("trail.jsonl");
    ok(
        node.ctl(
            "admin",
            &["audit", "-o", &export.to_string_lossy(), "--admin", &admin],
        ),
        "audit -o",
    );
    let verify = std::process::Command::new(synod_bin())
        .args(["audit", "verify", "--export"])
        .arg(&export)
        .output()
        .expect("run synod audit verify");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // --insecure against the secure port gets no session.
    let plain = node.ctl("tester", &["--insecure", "--timeout-ms", "2000", "ls", "/"]);
    assert!(!plain.status.success(), "plaintext to the TLS port");
}

#[test]
fn an_insecure_cluster_is_reached_with_synod_insecure_set_as_cluster_sh_env_sets_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (client, admin, peer) = free_addrs();
    let log = std::fs::File::create(dir.path().join("synod.log")).expect("log file");
    let child = Command::new(synod_bin())
        .args(["--id", "1", "--members", &format!("1={peer}"), "--insecure"])
        .args(["--client-addr", &client.to_string()])
        .args(["--admin-addr", &admin.to_string()])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start synod");
    // Killed and reaped before its directory is removed (fields drop in order).
    let _node = (Running(child), dir);
    // `scripts/cluster.sh env` exports SYNOD_INSECURE=1 for an insecure cluster.
    let ctl = |args: &[&str]| {
        Command::new(synodctl_bin())
            .args(["--servers", &client.to_string()])
            .args(args)
            .env_remove("SYNOD_TLS_CA")
            .env_remove("SYNOD_TLS_CERT")
            .env_remove("SYNOD_TLS_KEY")
            .env_remove("SYNOD_AUTH")
            .env("SYNOD_INSECURE", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run synodctl")
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let out = ctl(&["--json", "cluster", "list", "--admin", &admin.to_string()]);
        if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"leader\":1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "synodctl cluster list over plain HTTP never succeeded: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    ok(ctl(&["create", "/plain", "x"]), "create over plaintext");
    assert!(ok(ctl(&["ls", "/"]), "ls over plaintext").contains("plain"));
}
