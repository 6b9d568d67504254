//! The Debian package, built by `scripts/package.sh` from the binaries under test, installed
//! with `dpkg -i` on this machine (root), and started the way its systemd unit starts it: the
//! unit's `ExecStartPre` (check-config) and `ExecStart` lines run as the package's user, with a
//! `NOTIFY_SOCKET` standing in for systemd (which does not run here). The node must say
//! `READY=1`, serve a client, keep its data private to its user, and stop cleanly on SIGTERM.
//! The package is purged afterwards (also when the test fails).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use synod_client::{Client, ConnectOptions, CreateMode};
use synod_testkit::{free_ports, runtime};

const BIN: &str = env!("CARGO_BIN_EXE_synod");
const UNIT: &str = "/lib/systemd/system/synod.service";
const CONFIG: &str = "/etc/synod/synod.toml";
const DATA: &str = "/var/lib/synod";

/// Purges the package on drop, and the data directory if the test made it.
struct Installed {
    data_was_there: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .args(["--purge", "synod"])
            .stdout(Stdio::null())
            .status();
        if !self.data_was_there {
            let _ = std::fs::remove_dir_all(DATA);
        }
    }
}

/// Kills the node on drop, if it still runs.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The command of the unit's `key=` line (e.g. `ExecStart`), split on spaces.
fn unit_command(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {UNIT}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// `argv` as the package's user (setpriv execs it: the pid is the node's).
fn as_synod(argv: &[String]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid",
        "synod",
        "--regid",
        "synod",
        "--init-groups",
        "--",
    ])
    .args(argv);
    cmd
}

#[test]
fn the_package_installs_and_its_unit_starts_a_node_that_serves() {
    let bins = Path::new(BIN).parent().expect("the binaries' directory");
    let out_dir = tempfile::TempDir::new().expect("tempdir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/package.sh");
    let built = Command::new("bash")
        .arg(&script)
        .env("SYNOD_PACKAGE_BINARIES", bins)
        .env("SYNOD_PACKAGE_OUT", out_dir.path())
        .output()
        .expect("run scripts/package.sh");
    assert!(
        built.status.success(),
        "package.sh: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let deb = PathBuf::from(
        String::from_utf8_lossy(&built.stdout)
            .lines()
            .last()
            .expect("the package's path as the last line")
            .trim(),
    );
    assert!(deb.exists(), "{}", deb.display());
    eprintln!(
        "{} ({} KiB)",
        deb.display(),
        std::fs::metadata(&deb).map(|m| m.len() / 1024).unwrap_or(0)
    );

    let _installed = Installed {
        data_was_there: Path::new(DATA).exists(),
    };
    let dpkg = Command::new("dpkg")
        .arg("-i")
        .arg(&deb)
        .output()
        .expect("dpkg -i");
    assert!(
        dpkg.status.success(),
        "dpkg -i: {}{}",
        String::from_utf8_lossy(&dpkg.stdout),
        String::from_utf8_lossy(&dpkg.stderr)
    );
    let version = Command::new("/usr/bin/synod")
        .arg("--version")
        .output()
        .expect("synod --version");
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("synod "));
    let data = std::fs::metadata(DATA).expect("the package made /var/lib/synod");
    assert_eq!(
        data.permissions().mode() & 0o777,
        0o700,
        "private data directory"
    );
    let config = std::fs::metadata(CONFIG).expect("the example configuration");
    assert_eq!(config.permissions().mode() & 0o777, 0o640);

    // A one-node configuration on free ports (plaintext: this is about the package, not TLS).
    let ports = free_ports(3).expect("ports");
    std::fs::write(
        CONFIG,
        format!(
            "id = 1\ninsecure = true\nclient_addr = \"127.0.0.1:{}\"\n\
             admin_addr = \"127.0.0.1:{}\"\ndata_dir = \"{DATA}\"\n\n\
             [members]\n1 = \"127.0.0.1:{}\"\n",
            ports[0], ports[1], ports[2]
        ),
    )
    .expect("write the configuration");
    let unit = std::fs::read_to_string(UNIT).expect("the unit");
    let pre = as_synod(&unit_command(&unit, "ExecStartPre"))
        .output()
        .expect("ExecStartPre");
    assert!(
        pre.status.success(),
        "ExecStartPre (check-config): {}",
        String::from_utf8_lossy(&pre.stderr)
    );

    let sockets = tempfile::TempDir::new().expect("tempdir");
    std::fs::set_permissions(sockets.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let socket = sockets.path().join("notify");
    let notify = UnixDatagram::bind(&socket).expect("bind the notify socket");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let log = std::fs::File::create(out_dir.path().join("synod.log")).expect("log");
    let mut node = Running(
        as_synod(&unit_command(&unit, "ExecStart"))
            .env("NOTIFY_SOCKET", &socket)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("ExecStart"),
    );
    let log_of = || std::fs::read_to_string(out_dir.path().join("synod.log")).unwrap_or_default();
    let mut buf = [0u8; 4096];
    let n = notify
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no READY=1: {e}\n{}", log_of()));
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(
        ready
            .lines()
            .any(|l| l == format!("MAINPID={}", node.0.id())),
        "the node itself is the main process: {ready}"
    );

    runtime().block_on(async {
        let zk = Client::connect(
            &format!("127.0.0.1:{}", ports[0]),
            ConnectOptions::default().connect_timeout(Duration::from_secs(30)),
        )
        .await
        .expect("a client connects to the packaged node");
        zk.create("/installed", b"by dpkg", CreateMode::Persistent)
            .await
            .expect("create");
        let (data, _) = zk.get_data("/installed").await.expect("read");
        assert_eq!(&data[..], b"by dpkg");
        let _ = zk.close().await;
    });
    for entry in std::fs::read_dir(DATA).expect("data dir").flatten() {
        let meta = entry.metadata().expect("metadata");
        let uid = std::fs::metadata(DATA).expect("data").uid();
        assert_eq!(meta.uid(), uid, "{:?} belongs to synod", entry.path());
        assert_eq!(
            meta.permissions().mode() & 0o077,
            0,
            "{:?} is private",
            entry.path()
        );
    }

    // SAFETY: kill(2) on our own unreaped child.
    unsafe {
        libc::kill(node.0.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = node.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "no clean stop:\n{}", log_of());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "stopped with {status}:\n{}", log_of());
    let n = notify.recv(&mut buf).expect("STOPPING=1");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
}
