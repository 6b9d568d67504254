//! The `/ui` dashboard in a real headless browser (Debian's `chromium`; scripts/test.sh installs
//! it): against a secure 3-node synod cluster, over HTTPS, the browser presenting the operator's
//! client certificate, the page shows the three members and the leader, and browsing to a znode
//! through the URL hash (`/ui#/path`) shows its data. A screenshot is saved under
//! `$CARGO_TARGET_TMPDIR/dashboard/dashboard.png` and its path printed.
//!
//! The browser's certificate: the operator's key and certificate are imported into an NSS
//! database in a `HOME` of the test's own (with the cluster's CA trusted), and a Chromium policy
//! file `AutoSelectCertificateForUrls` for exactly the admin port's URL — a headless browser
//! cannot ask anyone which certificate to present — is written to
//! `/etc/chromium/policies/managed/` and removed when the test ends (root only; the test fails
//! with a clear message otherwise).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use synod_client::{Client, CreateMode};
use synod_testkit::{Ensemble, SynodEnsemble};

/// Debian's browser binary.
const CHROMIUM: &str = "chromium";
/// Bound of one browser run.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);
/// Virtual time the page gets to load and poll (several 2 s polling rounds).
const VIRTUAL_TIME_MS: u64 = 9000;
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);

fn synod_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_synod"))
}

/// A browser process group, killed (SIGKILL to the group) when dropped.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // The group was created for this child (process_group(0)): its id is the child's pid.
            // SAFETY: kill(2) with a negative pid signals that process group only.
            unsafe {
                libc::kill(-(self.0.id() as i32), libc::SIGKILL);
            }
            let _ = self.0.wait();
        }
    }
}

/// Where Chromium reads managed policies on Debian.
const POLICY_DIR: &str = "/etc/chromium/policies/managed";

/// A browser identity: a `HOME` whose NSS database holds the operator's certificate and key and
/// trusts the cluster's CA, and the policy that makes Chromium present that certificate to one
/// URL. The policy file is removed when this is dropped.
struct BrowserIdentity {
    /// The `HOME` to run the browser with.
    home: tempfile::TempDir,
    /// The policy file written for this test.
    policy: PathBuf,
}

impl Drop for BrowserIdentity {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.policy);
    }
}

/// Removes the policy files of earlier runs whose process is gone (a run killed before its
/// `Drop` could remove its own).
fn remove_stale_policies() {
    let Ok(entries) = std::fs::read_dir(POLICY_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("synod-dashboard-test-")
            .and_then(|rest| rest.strip_suffix(".json"));
        if let Some(pid) = pid {
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Runs a setup command, failing the test with its output if it fails.
fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (scripts/test.sh installs libnss3-tools and openssl)")
    });
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl BrowserIdentity {
    /// The operator `stem` (`<certs>/<stem>.{crt,key}`) for `origin` (`https://host:port`).
    fn new(work: &Path, certs: &Path, stem: &str, origin: &str) -> BrowserIdentity {
        let home = tempfile::tempdir_in(work).expect("browser home");
        let db = home.path().join(".pki/nssdb");
        std::fs::create_dir_all(&db).expect("NSS database dir");
        let db_arg = format!("sql:{}", db.display());
        run(Command::new("certutil").args(["-d", &db_arg, "-N", "--empty-password"]));
        let p12 = home.path().join(format!("{stem}.p12"));
        run(Command::new("openssl")
            .args(["pkcs12", "-export", "-passout", "pass:", "-in"])
            .arg(certs.join(format!("{stem}.crt")))
            .arg("-inkey")
            .arg(certs.join(format!("{stem}.key")))
            .arg("-out")
            .arg(&p12));
        run(Command::new("pk12util")
            .args(["-d", &db_arg, "-W", "", "-i"])
            .arg(&p12));
        run(Command::new("certutil")
            .args([
                "-d",
                &db_arg,
                "-A",
                "-n",
                "synod-test-ca",
                "-t",
                "C,,",
                "-i",
            ])
            .arg(certs.join("ca.crt")));
        std::fs::create_dir_all(POLICY_DIR)
            .unwrap_or_else(|e| panic!("cannot create {POLICY_DIR} (the test needs root): {e}"));
        remove_stale_policies();
        let policy =
            Path::new(POLICY_DIR).join(format!("synod-dashboard-test-{}.json", std::process::id()));
        let pattern = serde_json::json!({ "pattern": origin, "filter": {} }).to_string();
        let body = serde_json::json!({ "AutoSelectCertificateForUrls": [pattern] });
        std::fs::write(&policy, body.to_string()).unwrap_or_else(|e| {
            panic!(
                "cannot write {} (the test needs root): {e}",
                policy.display()
            )
        });
        BrowserIdentity { home, policy }
    }
}

/// Runs headless chromium with `args` then `url`, as `identity`; returns its stdout. Fails on a
/// non-zero exit or after [`BROWSER_TIMEOUT`] (the browser is killed).
fn chromium(args: &[String], url: &str, work: &Path, identity: &BrowserIdentity) -> String {
    let profile = tempfile::tempdir_in(work).expect("browser profile dir");
    let out_path = work.join("stdout.html");
    let out = std::fs::File::create(&out_path).expect("stdout file");
    let err = std::fs::File::create(work.join("chromium.log")).expect("stderr file");
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        &format!("--user-data-dir={}", profile.path().display()),
        &format!("--virtual-time-budget={VIRTUAL_TIME_MS}"),
    ])
    .args(args)
    .arg(url)
    .env("HOME", identity.home.path())
    .stdin(Stdio::null())
    .stdout(out)
    .stderr(err)
    .process_group(0);
    let child = cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot run {CHROMIUM} ({e}); install it with `apt-get install -y chromium`")
    });
    let mut browser = Browser(child);
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        if let Some(s) = browser.0.try_wait().expect("wait for chromium") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "chromium did not finish within {BROWSER_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(browser);
    assert!(status.success(), "chromium failed: {status}");
    std::fs::read_to_string(&out_path).expect("chromium output")
}

/// The text inside the element with `id` (its first text run), if present in the dumped DOM.
fn element_text<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let rest = &dom[start..];
    let open_end = rest.find('>')? + 1;
    let rest = &rest[open_end..];
    Some(&rest[..rest.find('<')?])
}

#[test]
fn dashboard_shows_members_leader_and_znode_data() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let ens =
        SynodEnsemble::start_tls(synod_bin(), 3, &[]).expect("start a secure 3-node synod cluster");
    let leader = ens.wait_for_leader(CONVERGE_TIMEOUT).expect("a leader");
    let leader_id = leader + 1;
    let admin = ens.admin_addr(leader).expect("admin address");
    let zk = rt
        .block_on(Client::connect(
            &ens.addrs()[leader].to_string(),
            ens.connect_options()
                .connect_timeout(Duration::from_secs(20)),
        ))
        .expect("connect");
    let data = "case 42: biopsy review, owner=lab-3";
    // A tenant with a quota, for the tenants table: the test client's organisation.
    let (status, body) = ens
        .json(
            leader,
            "POST",
            "/tenants",
            Some(&serde_json::json!({"name": "lab-3", "members": ["org:synod-tests"], "quota": {"znodes": 50}})),
        )
        .expect("declare a tenant");
    assert_eq!(status, 200, "{body}");
    rt.block_on(async {
        zk.create("/diagnosis", b"", CreateMode::Persistent)
            .await
            .expect("create");
        zk.create(
            "/diagnosis/case-42",
            data.as_bytes(),
            CreateMode::Persistent,
        )
        .await
        .expect("create");
    });
    // Some traffic for the request-rate chart while the browser runs.
    let load = rt.spawn(async move {
        loop {
            if zk.get_data("/diagnosis/case-42").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });

    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&out_dir).expect("output dir");
    let node_dir = &ens.nodes()[0].dir;
    let certs = node_dir.parent().unwrap_or(node_dir).join("certs");
    let origin = format!("https://{admin}");
    let operator = BrowserIdentity::new(&out_dir, &certs, "admin", &origin);

    // The overview: three members, one of them the leader.
    let dom = chromium(
        &["--dump-dom".into()],
        &format!("{origin}/ui"),
        &out_dir,
        &operator,
    );
    let members = dom.matches("<tr class=\"member").count();
    assert_eq!(members, 3, "three member rows expected:\n{dom}");
    assert!(
        dom.contains(&format!(
            "<tr class=\"member leader\" data-id=\"{leader_id}\" data-role=\"leader\">"
        )),
        "leader row for node {leader_id} expected:\n{dom}"
    );
    assert_eq!(
        element_text(&dom, "leader"),
        Some(format!("leader: node {leader_id}").as_str())
    );
    assert_eq!(element_text(&dom, "node-role"), Some("leader"));
    // The tenants, with usage against quota.
    assert!(
        dom.contains("<tr class=\"tenant\" data-name=\"lab-3\"><td>lab-3</td><td>org:synod-tests</td><td>2 / 50</td><td>35</td>"),
        "the tenant lab-3 (the test client's organisation) with the 2 znodes and 35 bytes it \
         created expected:\n{dom}"
    );

    // Deep link to a znode: its data and stat are shown.
    let dom = chromium(
        &["--dump-dom".into()],
        &format!("{origin}/ui#/diagnosis/case-42"),
        &out_dir,
        &operator,
    );
    assert_eq!(
        element_text(&dom, "znode-path"),
        Some("/diagnosis/case-42"),
        "{dom}"
    );
    assert_eq!(element_text(&dom, "znode-data"), Some(data), "{dom}");
    assert!(dom.contains("<td>data_length</td><td>35</td>"), "{dom}");

    // A screenshot of the deep-linked page.
    let shot = out_dir.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,900".into(),
        ],
        &format!("{origin}/ui#/diagnosis/case-42"),
        &out_dir,
        &operator,
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    eprintln!("dashboard screenshot: {}", shot.display());
    load.abort();
    drop(rt);
}
