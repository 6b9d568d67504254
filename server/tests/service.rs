//! A node under a service manager: with `NOTIFY_SOCKET` set (as systemd sets it for a
//! `Type=notify` unit), the node reports `READY=1` once it serves — a client connected right
//! after it is served — and `STOPPING=1` when SIGTERM begins its shutdown. The unit file
//! (`packaging/synod.service`) relies on both.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use synod_client::{Client, CreateMode};
use synod_testkit::{runtime, Ensemble, SynodEnsemble};

const BIN: &str = env!("CARGO_BIN_EXE_synod");

/// The next notification on `sock` (at most `within`).
fn next(sock: &UnixDatagram, within: Duration) -> String {
    sock.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notification in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn a_node_tells_the_service_manager_when_it_serves_and_when_it_stops() {
    let c = SynodEnsemble::unstarted_tls(Path::new(BIN), 1).expect("lay out a node");
    let socket = c.root().join("notify.sock");
    let sock = UnixDatagram::bind(&socket).expect("bind the notify socket");
    let started = Instant::now();
    c.spawn_with_env(
        0,
        &[("NOTIFY_SOCKET", socket.to_str().expect("utf-8 path"))],
    )
    .expect("spawn");
    let ready = next(&sock, Duration::from_secs(60));
    let pid = c.pid(0).expect("running");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(
        ready.lines().any(|l| l == format!("MAINPID={pid}")),
        "{ready}"
    );
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=serving")),
        "{ready}"
    );
    eprintln!("READY=1 {:?} after the start", started.elapsed());
    runtime().block_on(async {
        let opts = c.connect_options().connect_timeout(Duration::from_secs(30));
        let zk = Client::connect(&c.connect_string(), opts)
            .await
            .expect("a client is served once the node said it is ready");
        zk.create("/ready", b"", CreateMode::Persistent)
            .await
            .expect("a write is served");
        let _ = zk.close().await;
    });
    c.terminate(0, Duration::from_secs(20));
    let stopping = next(&sock, Duration::from_secs(5));
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
}

/// The unit file is one systemd accepts (`systemd-analyze verify`, with ExecStart pointing at
/// the binary under test since none is installed here), and its hardening rates "OK" or better
/// in `systemd-analyze security`.
#[test]
fn the_unit_file_verifies() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/synod.service");
    let text = std::fs::read_to_string(&unit).expect("packaging/synod.service");
    let dir = tempfile::TempDir::new().expect("tempdir");
    let copy = dir.path().join("synod.service");
    std::fs::write(&copy, text.replace("/usr/bin/synod", BIN)).expect("write the unit");
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze (scripts/test.sh installs systemd)");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let security = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&copy)
        .output()
        .expect("systemd-analyze security");
    let said = String::from_utf8_lossy(&security.stdout).into_owned();
    let overall = said
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_default()
        .to_string();
    eprintln!("{overall}");
    assert!(
        ["OK", "SAFE"].iter().any(|w| overall.contains(w)),
        "the unit's hardening: {overall}"
    );
}
