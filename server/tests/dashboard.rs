//! The `/ui` dashboard in a real headless browser (Debian's `chromium`; scripts/test.sh installs
//! it): against a 3-node synod cluster, the page shows the three members and the leader, and
//! browsing to a znode through the URL hash (`/ui#/path`) shows its data. A screenshot is saved
//! under `$CARGO_TARGET_TMPDIR/dashboard/dashboard.png` and its path printed.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use synod_client::{Client, ConnectOptions, CreateMode};
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

/// Runs headless chromium with `args` then `url`; returns its stdout. Fails on a non-zero exit
/// or after [`BROWSER_TIMEOUT`] (the browser is killed).
fn chromium(args: &[String], url: &str, work: &Path) -> String {
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
    let ens = SynodEnsemble::start(synod_bin(), 3, &[]).expect("start a 3-node synod cluster");
    let leader = ens.wait_for_leader(CONVERGE_TIMEOUT).expect("a leader");
    let leader_id = leader + 1;
    let admin = ens.admin_addr(leader).expect("admin address");
    let zk = rt
        .block_on(Client::connect(
            &ens.addrs()[leader].to_string(),
            ConnectOptions::default().connect_timeout(Duration::from_secs(20)),
        ))
        .expect("connect");
    let data = "case 42: biopsy review, owner=lab-3";
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

    // The overview: three members, one of them the leader.
    let dom = chromium(
        &["--dump-dom".into()],
        &format!("http://{admin}/ui"),
        &out_dir,
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

    // Deep link to a znode: its data and stat are shown.
    let dom = chromium(
        &["--dump-dom".into()],
        &format!("http://{admin}/ui#/diagnosis/case-42"),
        &out_dir,
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
        &format!("http://{admin}/ui#/diagnosis/case-42"),
        &out_dir,
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    eprintln!("dashboard screenshot: {}", shot.display());
    load.abort();
    drop(rt);
}
