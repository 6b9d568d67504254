//! Runs every example program against a real secure 3-node synod cluster (its clients, and
//! synodctl, over TLS with the `SYNOD_TLS_*` environment) and checks its own outcome (exit status)
//! and the key lines of what it printed.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use synod_testkit::{synod_bin, Ensemble, SynodEnsemble};

/// Upper bound of one example's run.
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The cluster's size.
const NODES: usize = 3;

/// Runs `bin` against the cluster; returns its stdout. Kills it by pid after the timeout.
fn run_example(ens: &SynodEnsemble, bin: &str) -> String {
    let started = Instant::now();
    let mut cmd = Command::new(bin);
    let node_dir = &ens.nodes()[0].dir;
    let certs = node_dir.parent().unwrap_or(node_dir).join("certs");
    cmd.env("SYNOD_SERVERS", ens.connect_string())
        .env("SYNOD_TLS_CA", certs.join("ca.crt"))
        .env("SYNOD_TLS_CERT", certs.join("tester.crt"))
        .env("SYNOD_TLS_KEY", certs.join("tester.key"))
        .env_remove("SYNOD_INSECURE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // synodctl, when built into the same target directory, lets shared_config edit with it.
    if let Some(ctl) = std::path::Path::new(bin)
        .parent()
        .map(|d| d.join("synodctl"))
        .filter(|p| p.is_file())
    {
        cmd.env("SYNODCTL", ctl);
    }
    let mut child = cmd.spawn().expect("start the example");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().expect("poll the example") {
            break st;
        }
        if started.elapsed() > EXAMPLE_TIMEOUT {
            // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
            }
            let _ = child.wait();
            panic!(
                "{bin} did not finish within {EXAMPLE_TIMEOUT:?}; output so far:\n{}",
                out.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = out.join().expect("stdout reader");
    let err = err.join().expect("stderr reader");
    eprintln!("{bin} finished in {:.1?} with {status}", started.elapsed());
    eprintln!("--- stdout ---\n{out}--- stderr ---\n{err}");
    if !status.success() {
        // What the servers saw: an example that fails on a lost connection says why only here.
        for idx in 0..NODES {
            eprintln!(
                "--- synod node {idx}, last lines ---\n{}",
                ens.log_tail(idx)
            );
        }
    }
    assert!(status.success(), "{bin} failed: {status}");
    out
}

fn assert_lines(out: &str, needles: &[&str]) {
    for n in needles {
        assert!(out.contains(n), "output lacks {n:?}");
    }
}

/// Every example, one after the other, against one 3-node synod cluster (each example works in
/// its own directory of the tree).
#[test]
fn examples_against_a_synod_cluster() {
    let bin = synod_bin().expect("the synod binary");
    let ens =
        SynodEnsemble::start_tls(&bin, NODES, &[]).expect("start a secure 3-node synod cluster");
    diagnosis_workflow(&ens);
    shared_config(&ens);
    work_queue(&ens);
}

/// Issues a client certificate of its own to each party of the diagnosis workflow (and to the
/// rogue institution), beside the cluster's CA, where the example looks for them.
fn issue_party_certificates(ens: &SynodEnsemble) {
    let certs = ens.root().join("certs");
    for name in ["workflow", "hospital", "lab", "imaging", "rogue"] {
        if certs.join(format!("{name}.crt")).exists() {
            continue;
        }
        let out = Command::new(synod_bin().expect("the synod binary"))
            .arg("certs")
            .arg("--dir")
            .arg(&certs)
            .args(["create-client", "--name", name, "--institution", name])
            .output()
            .expect("synod certs");
        assert!(
            out.status.success(),
            "issue {name}'s certificate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn diagnosis_workflow(ens: &SynodEnsemble) {
    issue_party_certificates(ens);
    let out = run_example(ens, env!("CARGO_BIN_EXE_diagnosis_workflow"));
    assert_lines(
        &out,
        &[
            "hospital: registered as x509:hospital (certificate)",
            "lab: registered as x509:lab (certificate)",
            "imaging: registered as x509:imaging (certificate)",
            "rogue: list the case: refused (NoAuth)",
            "rogue: forge the imaging centre's vote: refused (NoAuth)",
            "rogue: write the decision first: refused (NoAuth)",
            "rogue: could neither see the case nor forge a vote nor decide",
            "all institutions are online",
            "holds the lock on the case (fencing token",
            "elected case coordinator",
            "began transaction joint-diagnosis",
            ">>> killing the coordinator",
            "found open transactions left by a previous coordinator",
            "transaction joint-diagnosis decided: commit",
            "decision on joint-diagnosis: commit",
            "the joint diagnosis is committed at all three institutions",
            "OUTCOME OK",
        ],
    );
    // Exactly one process began the transaction; a different one finished it.
    let began: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("began transaction"))
        .collect();
    let finished: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("decided: commit"))
        .collect();
    assert_eq!(began.len(), 1, "{began:?}");
    assert_eq!(finished.len(), 1, "{finished:?}");
    let who = |l: &str| {
        l.split("] ")
            .nth(1)
            .and_then(|r| r.split(':').next())
            .map(str::to_string)
    };
    assert_ne!(
        who(began[0]),
        who(finished[0]),
        "the killed coordinator finished its own transaction"
    );
}

fn shared_config(ens: &SynodEnsemble) {
    let out = run_example(ens, env!("CARGO_BIN_EXE_shared_config"));
    assert_lines(
        &out,
        &[
            "hospital-portal: now uses hospital/ai-triage = on",
            "lab-analyser: now uses lab/turnaround-hours = 12",
            "imaging-router: now uses imaging/max-parallel-studies = 8",
            "every service saw every edit",
            "OUTCOME OK",
        ],
    );
}

fn work_queue(ens: &SynodEnsemble) {
    let out = run_example(ens, env!("CARGO_BIN_EXE_work_queue"));
    assert_lines(
        &out,
        &[
            "queued 12 studies",
            "crashes before reading it",
            "12 of 12 studies read; read twice: 0; never read: 0",
            "every study was read exactly once",
            "OUTCOME OK",
        ],
    );
}

#[test]
fn examples_refuse_an_unreachable_cluster() {
    // Nothing listens on a just-freed port: the example must fail (non-zero), not hang.
    let port = synod_testkit::free_ports(1).expect("a free port")[0];
    let started = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_work_queue"))
        .env("SYNOD_SERVERS", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run the example");
    assert!(!status.success());
    assert!(started.elapsed() < Duration::from_secs(30));
}
