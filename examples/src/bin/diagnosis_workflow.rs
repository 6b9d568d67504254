//! The cross-institution diagnosis workflow: a hospital, a lab and an imaging centre, each its own
//! process, register themselves, share configuration, elect a case coordinator, take turns on the
//! patient's case under a lock while adding findings, and commit the joint diagnosis with the
//! two-phase-commit recipe. Midway through the commit this program kills the coordinator's process;
//! the next elected coordinator finishes the same transaction from what is in the tree.
//!
//!
//! The institutions trust nobody else on the cluster. Each has an identity of its own (its own
//! client certificate, `x509:<name>`, where the cluster's CA directory holds one — as
//! scripts/cluster.sh and the tests issue them — else a digest identity with a per-run secret):
//! every znode of the case is readable and writable by the three institutions and the
//! orchestrator only, the lock by its three contenders, and each vote of the joint diagnosis by
//! its own institution only (the guarded two-phase commit). A fourth institution, `rogue`, tries
//! to read the case, take the lock, forge a vote and write the decision first while the
//! transaction is open: every attempt is refused.
//!
//! Run `scripts/cluster.sh start 3`, then `cargo run -p synod-examples --bin diagnosis_workflow`.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use clap::Parser;
use synod_client::recipe::barrier::DoubleBarrier;
use synod_client::recipe::cache::TreeCache;
use synod_client::recipe::election::{current_leader, LeaderLatch};
use synod_client::recipe::lock::Lock;
use synod_client::recipe::twophase::{
    self, Coordinator, Outcome, Participant, Party as TxParty, Vote, VoteState,
};
use synod_client::recipe::{ensure_path, grant, retry};
use synod_client::{perms, Acl, Client, CreateMode, Error, Id};
use synod_examples::{
    fail, finish, party, run_id, run_secret, say, started_ms, Party, DEFAULT_SERVERS, SECRET_ENV,
    T0_ENV,
};
use tokio::process::{Child, Command};

/// The institutions taking part, with the endpoint each publishes and the time each needs to
/// review the proposed diagnosis before voting (staggered, so the coordinator can be killed after
/// some votes and before others).
const INSTITUTIONS: [(&str, &str, u64); 3] = [
    ("hospital", "https://hospital.example/fhir", 300),
    ("lab", "https://lab.example/results", 2500),
    ("imaging", "https://imaging.example/dicomweb", 4500),
];
/// The orchestrator's party name: it sets the case up and watches it, and votes on nothing.
const ORCHESTRATOR: &str = "workflow";
/// The institution that takes no part in the case, and tries to.
const ROGUE: &str = "rogue";
/// The transaction id of the joint diagnosis.
const TX: &str = "joint-diagnosis";
/// Session timeout of the institutions: how fast a crashed coordinator is noticed.
const INSTITUTION_SESSION: Duration = Duration::from_secs(3);
/// Upper bound of the whole run.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Parser, Debug)]
#[command(about = "Three institutions commit a joint diagnosis; the coordinator is killed midway")]
struct Args {
    /// The cluster to use.
    #[arg(long, env = "SYNOD_SERVERS", default_value = DEFAULT_SERVERS)]
    servers: String,
    /// Internal: run as one institution (`hospital`, `lab`, `imaging`).
    #[arg(long, hide = true)]
    institution: Option<String>,
    /// Internal: the run's directory name.
    #[arg(long, hide = true)]
    run: Option<String>,
    /// Internal: this institution restarts after a crash.
    #[arg(long, hide = true)]
    rejoin: bool,
}

/// The znodes of one run.
struct Paths {
    /// `/diagnosis/<run>`: everything of this run is below it.
    root: String,
}

/// The identities of the three institutions.
fn institution_ids() -> Vec<Id> {
    INSTITUTIONS.iter().map(|(n, _, _)| party(n).id).collect()
}

/// The ACL of every znode of the case: the three institutions and the orchestrator may do
/// anything, nobody else anything.
fn case_acl() -> Vec<Acl> {
    let mut ids = institution_ids();
    ids.push(party(ORCHESTRATOR).id);
    grant(&ids, perms::ALL)
}

impl Paths {
    fn new(run: &str) -> Paths {
        Paths {
            root: format!("/diagnosis/{run}"),
        }
    }
    fn config(&self) -> String {
        format!("{}/config", self.root)
    }
    fn registry(&self) -> String {
        format!("{}/institutions", self.root)
    }
    fn meeting(&self) -> String {
        format!("{}/meeting", self.root)
    }
    fn election(&self) -> String {
        format!("{}/coordinator", self.root)
    }
    fn case_lock(&self) -> String {
        format!("{}/case-lock", self.root)
    }
    fn case(&self) -> String {
        format!("{}/case", self.root)
    }
    fn tx(&self) -> String {
        format!("{}/tx", self.root)
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match (&args.institution, &args.run) {
        (Some(name), Some(run)) => {
            let name = name.clone();
            let outcome = match tokio::time::timeout(
                RUN_TIMEOUT,
                institution(&args.servers, run, &name, args.rejoin),
            )
            .await
            {
                Ok(o) => o,
                Err(_) => Err(format!("{name} did not finish within {RUN_TIMEOUT:?}")),
            };
            if let Err(why) = outcome {
                say(&name, format!("FAILED: {why}"));
                std::process::exit(1);
            }
        }
        _ => {
            let outcome = match tokio::time::timeout(RUN_TIMEOUT, orchestrate(&args.servers)).await
            {
                Ok(o) => o,
                Err(_) => Err(format!(
                    "the workflow did not finish within {RUN_TIMEOUT:?}"
                )),
            };
            finish("workflow", outcome)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The orchestrator: sets the case up, starts the institutions, kills the coordinator midway.
// ---------------------------------------------------------------------------------------------

/// Starts one institution process (this program, re-executed with a role).
fn spawn_institution(servers: &str, run: &str, name: &str, rejoin: bool) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(fail("find this program"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--servers")
        .arg(servers)
        .arg("--run")
        .arg(run)
        .arg("--institution")
        .arg(name)
        .env(T0_ENV, started_ms().to_string())
        .env(SECRET_ENV, run_secret())
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if rejoin {
        cmd.arg("--rejoin");
    }
    cmd.spawn().map_err(fail("start an institution process"))
}

async fn orchestrate(servers: &str) -> Result<(), String> {
    let me = ORCHESTRATOR;
    started_ms();
    let who = party(me);
    let zk = who
        .connect(servers, Duration::from_secs(10), case_acl())
        .await
        .map_err(fail("connect to the cluster"))?;
    let run = run_id();
    let paths = Paths::new(&run);
    say(
        me,
        format!(
            "connected to {servers} as {}:{} ({}); this run lives under {}",
            who.id.scheme,
            who.id.id,
            who.proof(),
            paths.root
        ),
    );
    // Every case's directory is listed in /diagnosis (open, shared by every run); the case's
    // own znodes are the parties' alone.
    match zk
        .create_full(
            "/diagnosis",
            b"",
            &Acl::open_unsafe(),
            CreateMode::Persistent,
            None,
        )
        .await
    {
        Ok(_) | Err(Error::NodeExists) => {}
        Err(e) => return Err(format!("create /diagnosis: {e}")),
    }
    say(
        me,
        format!(
            "the case is private to {:?} and the orchestrator",
            INSTITUTIONS.iter().map(|(n, _, _)| *n).collect::<Vec<_>>()
        ),
    );

    // Shared configuration every institution reads.
    ensure_path(&zk, &paths.config())
        .await
        .map_err(fail("create config"))?;
    for (key, value) in [
        ("patient", "patient 4711 (pseudonymised)"),
        ("question", "suspected pulmonary embolism"),
        ("vote-deadline-secs", "30"),
    ] {
        zk.create(
            &format!("{}/{key}", paths.config()),
            value.as_bytes(),
            CreateMode::Persistent,
        )
        .await
        .map_err(fail("write config"))?;
    }
    ensure_path(&zk, &paths.case())
        .await
        .map_err(fail("create case"))?;
    zk.set_data(&paths.case(), b"0", None)
        .await
        .map_err(fail("init case"))?;
    say(
        me,
        "shared configuration written: patient, question, vote deadline",
    );

    let mut children: BTreeMap<String, Child> = BTreeMap::new();
    for (name, _, _) in INSTITUTIONS {
        children.insert(
            name.to_string(),
            spawn_institution(servers, &run, name, false)?,
        );
        say(me, format!("started the {name}'s process"));
    }

    // Wait for the transaction to begin and for some (not all) votes.
    let tx_path = format!("{}/{TX}", paths.tx());
    let killed = loop {
        let st = match twophase::status(&zk, &paths.tx(), TX).await {
            Ok(st) => Some(st),
            Err(Error::NoNode) => None,
            Err(e) => return Err(format!("read the transaction: {e}")),
        };
        if let Some(st) = st {
            if st.decision.is_some() {
                return Err(
                    "the transaction was decided before the coordinator could be killed".into(),
                );
            }
            let voted: Vec<&String> = st
                .votes
                .iter()
                .filter(|(_, v)| **v != VoteState::Pending)
                .map(|(p, _)| p)
                .collect();
            if !voted.is_empty() {
                rogue_tries(servers, &paths).await?;
                let leader = current_leader(&zk, &paths.election())
                    .await
                    .map_err(fail("read the coordinator"))?
                    .ok_or("no coordinator elected")?;
                say(
                    me,
                    format!(
                        "transaction {TX} is open; votes in from {voted:?}; coordinator is the {leader}"
                    ),
                );
                say(
                    me,
                    format!(">>> killing the coordinator ({leader}) mid-transaction <<<"),
                );
                let child = children
                    .get_mut(&leader)
                    .ok_or_else(|| format!("unknown coordinator {leader}"))?;
                child.start_kill().map_err(fail("kill the coordinator"))?;
                let _ = child.wait().await;
                break leader;
            }
        }
        // Wake on any change under the transaction (or poll gently while it does not exist).
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            match zk.get_children_watch(&tx_path).await {
                Ok((_, _, w)) => {
                    w.await;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        })
        .await;
    };
    say(me, format!("the {killed}'s process is dead; its session will expire and the others elect a new coordinator"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    say(
        me,
        format!("restarting the {killed}'s process (it recovers its part of the transaction)"),
    );
    children.insert(
        killed.clone(),
        spawn_institution(servers, &run, &killed, true)?,
    );

    // Wait for the decision and for every institution to apply it.
    let status = loop {
        let st = twophase::status(&zk, &paths.tx(), TX)
            .await
            .map_err(fail("read the transaction"))?;
        if st.is_done() {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (outcome, reason) = status.decision.clone().ok_or("no decision")?;
    let coordinator = current_leader(&zk, &paths.election())
        .await
        .map_err(fail("read the coordinator"))?;
    if reason.is_empty() {
        say(me, format!("decision on {TX}: {outcome}"));
    } else {
        say(me, format!("decision on {TX}: {outcome} ({reason})"));
    }
    for (p, v) in &status.votes {
        say(me, format!("  {p}: {v:?}"));
    }
    for (name, mut child) in children {
        match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
            Ok(Ok(st)) if st.success() => {}
            Ok(Ok(st)) if name == killed && st.code().is_none() => {}
            Ok(Ok(st)) => return Err(format!("the {name}'s process failed: {st}")),
            Ok(Err(e)) => return Err(format!("wait for the {name}: {e}")),
            Err(_) => {
                let _ = child.start_kill();
                return Err(format!("the {name}'s process did not finish"));
            }
        }
    }
    let findings = zk
        .get_children(&paths.case())
        .await
        .map_err(fail("read the findings"))?;
    say(
        me,
        format!("the case holds {} findings: {findings:?}", findings.len()),
    );
    if outcome != Outcome::Commit {
        return Err(format!("the joint diagnosis was not committed: {reason}"));
    }
    if findings.len() != INSTITUTIONS.len() {
        return Err("a finding is missing".into());
    }
    say(
        me,
        format!(
            "the joint diagnosis is committed at all three institutions, finished by a new coordinator (last elected: {})",
            coordinator.as_deref().unwrap_or("none, all have left")
        ),
    );
    zk.close().await.map_err(fail("close"))?;
    Ok(())
}

/// A fourth institution, with an identity of its own, tries to learn of the case and to tamper
/// with it while the joint diagnosis is open; every attempt must be refused.
async fn rogue_tries(servers: &str, paths: &Paths) -> Result<(), String> {
    let rogue = party(ROGUE);
    let zk = rogue
        .connect(servers, Duration::from_secs(10), Acl::open_unsafe())
        .await
        .map_err(fail("connect the rogue institution"))?;
    let tx = format!("{}/{TX}", paths.tx());
    let refused = |what: &str, r: Result<(), Error>| match r {
        Err(Error::NoAuth) => {
            say(ROGUE, format!("{what}: refused (NoAuth)"));
            Ok(())
        }
        other => Err(format!("the rogue institution could {what}: {other:?}")),
    };
    refused(
        "list the case",
        zk.get_children(&paths.root).await.map(|_| ()),
    )?;
    refused(
        "read the findings",
        zk.get_children(&paths.case()).await.map(|_| ()),
    )?;
    refused(
        "read the proposed diagnosis",
        zk.get_data(&tx).await.map(|_| ()),
    )?;
    refused(
        "take the case lock",
        Lock::new(&zk, &paths.case_lock())
            .try_acquire()
            .await
            .map(|_| ()),
    )?;
    refused(
        "forge the imaging centre's vote",
        zk.set_data(&format!("{tx}/vote-imaging"), b"abort", Some(0))
            .await
            .map(|_| ()),
    )?;
    refused(
        "write the decision first",
        zk.create(&format!("{tx}/decision"), b"abort", CreateMode::Persistent)
            .await
            .map(|_| ()),
    )?;
    say(
        ROGUE,
        "could neither see the case nor forge a vote nor decide",
    );
    zk.close().await.map_err(fail("close"))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// One institution
// ---------------------------------------------------------------------------------------------

async fn institution(servers: &str, run: &str, name: &str, rejoin: bool) -> Result<(), String> {
    let paths = Paths::new(run);
    let (endpoint, review_ms) = INSTITUTIONS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, e, r)| (*e, *r))
        .ok_or_else(|| format!("unknown institution {name}"))?;
    let me = party(name);
    let zk = me
        .connect(servers, INSTITUTION_SESSION, case_acl())
        .await
        .map_err(fail("connect"))?;

    // Register (ephemeral: the registration disappears with the process's session).
    ensure_path(&zk, &paths.registry())
        .await
        .map_err(fail("registry"))?;
    let reg = format!("{}/{name}", paths.registry());
    match zk
        .create(&reg, endpoint.as_bytes(), CreateMode::Ephemeral)
        .await
    {
        Ok(_) => {}
        // A restarted process may find its old registration until the old session expires.
        Err(Error::NodeExists) => {
            let _ = zk.delete(&reg, None).await;
            zk.create(&reg, endpoint.as_bytes(), CreateMode::Ephemeral)
                .await
                .map_err(fail("register"))?;
        }
        Err(e) => return Err(format!("register: {e}")),
    }
    say(
        name,
        format!(
            "registered as {}:{} ({}), endpoint {endpoint}",
            me.id.scheme,
            me.id.id,
            me.proof()
        ),
    );

    // Shared configuration, kept in memory and up to date.
    let config = TreeCache::start(&zk, &paths.config())
        .await
        .map_err(fail("config cache"))?;
    let patient = config
        .data(&format!("{}/patient", paths.config()))
        .map(|d| String::from_utf8_lossy(&d).into_owned())
        .unwrap_or_default();
    let question = config
        .data(&format!("{}/question", paths.config()))
        .map(|d| String::from_utf8_lossy(&d).into_owned())
        .unwrap_or_default();
    let deadline_secs: u64 = config
        .data(&format!("{}/vote-deadline-secs", paths.config()))
        .and_then(|d| String::from_utf8_lossy(&d).parse().ok())
        .unwrap_or(30);
    say(
        name,
        format!("shared config: {patient}, question: {question}"),
    );

    if !rejoin {
        // Everyone meets before work starts.
        let meeting = DoubleBarrier::new(&zk, &paths.meeting(), name, INSTITUTIONS.len());
        meeting
            .enter(Duration::from_secs(30))
            .await
            .map_err(fail("meet the others"))?;
        let peers = zk
            .get_children(&paths.registry())
            .await
            .map_err(fail("list institutions"))?;
        say(name, format!("all institutions are online: {peers:?}"));

        // Add findings to the patient's case, one institution at a time, under the case lock.
        let lock = Lock::new(&zk, &paths.case_lock()).contenders(&institution_ids());
        let guard = lock.acquire().await.map_err(fail("lock the case"))?;
        let token = guard.fencing_token();
        say(
            name,
            format!("holds the lock on the case (fencing token {token})"),
        );
        fenced_add_finding(&zk, &paths, name, token).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        guard.release().await.map_err(fail("unlock the case"))?;
        say(name, "released the case");
    }

    // Stand for case coordinator; the coordinator role runs beside the participant role.
    let latch = LeaderLatch::start(&zk, &paths.election(), name)
        .await
        .map_err(fail("join the election"))?;
    let coordinator = tokio::spawn(coordinate(
        zk.clone(),
        latch,
        paths.tx(),
        paths.case(),
        me.clone(),
        deadline_secs,
    ));

    // Participant: review the proposal, vote, learn the decision, apply it.
    let me = Participant::new(&zk, &paths.tx(), name);
    let txid = if rejoin {
        TX.to_string()
    } else {
        me.wait_for_proposal(Duration::from_secs(60))
            .await
            .map_err(fail("wait for a proposal"))?
    };
    let proposal = me
        .proposal(&txid)
        .await
        .map_err(fail("read the proposal"))?;
    let pending = matches!(
        twophase::status(&zk, &paths.tx(), &txid)
            .await
            .map(|s| s.votes.get(name).copied()),
        Ok(Some(VoteState::Pending))
    );
    if pending {
        say(
            name,
            format!(
                "reviewing the proposed diagnosis \"{}\" ({} ms)",
                String::from_utf8_lossy(&proposal.payload),
                review_ms
            ),
        );
        tokio::time::sleep(Duration::from_millis(review_ms)).await;
        me.vote(&txid, Vote::Commit).await.map_err(fail("vote"))?;
        say(name, "voted COMMIT");
    } else {
        say(name, "already voted before the restart");
    }
    let outcome = me
        .await_decision(&txid, Duration::from_secs(60))
        .await
        .map_err(fail("learn the decision"))?;
    say(
        name,
        format!("learned the decision: {outcome}; applying it to the local record"),
    );
    me.ack(&txid, outcome).await.map_err(fail("acknowledge"))?;
    say(name, "applied and acknowledged");

    // A coordinator stays until the transaction is fully applied everywhere.
    let coordinated = coordinator.await.map_err(fail("coordinator task"))??;
    if coordinated {
        say(name, "coordinator duties done");
    }
    zk.close().await.map_err(fail("close"))?;
    Ok(())
}

/// Appends this institution's finding, refusing to write with a fencing token older than the
/// last one the case has seen (what a record system should do with the lock's token).
async fn fenced_add_finding(
    zk: &Client,
    paths: &Paths,
    name: &str,
    token: i64,
) -> Result<(), String> {
    let (data, stat) = zk
        .get_data(&paths.case())
        .await
        .map_err(fail("read the case"))?;
    let last: i64 = String::from_utf8_lossy(&data).parse().unwrap_or(0);
    if token <= last {
        return Err(format!("stale fencing token {token} (case saw {last})"));
    }
    let finding = match name {
        "hospital" => "clinical exam: dyspnoea, tachycardia, D-dimer elevated",
        "lab" => "troponin normal, D-dimer 2.1 mg/L",
        _ => "CT pulmonary angiography: filling defect, right lower lobe artery",
    };
    let ops = vec![
        synod_client::Op::set_data(
            &paths.case(),
            token.to_string().into_bytes(),
            Some(stat.version),
        ),
        synod_client::Op::create(
            &format!("{}/finding-{name}", paths.case()),
            format!("{finding} (fencing token {token})").into_bytes(),
            CreateMode::Persistent,
        ),
    ];
    zk.multi(ops).await.map_err(fail("add the finding"))?;
    say(name, format!("added its finding: {finding}"));
    Ok(())
}

/// The coordinator role: once elected, finish any open transaction (a predecessor may have
/// crashed), else begin the joint diagnosis once every finding is in, drive it to a decision, and
/// stay until every institution applied it. Returns whether this process coordinated.
async fn coordinate(
    zk: Client,
    mut latch: LeaderLatch,
    tx_root: String,
    case: String,
    me: Party,
    deadline_secs: u64,
) -> Result<bool, String> {
    let name = me.name.clone();
    loop {
        match latch.wait_leadership(Duration::from_millis(500)).await {
            Ok(()) => break,
            Err(Error::WaitTimeout(_)) => {
                // Not elected: done once the transaction is decided.
                match twophase::status(&zk, &tx_root, TX).await {
                    Ok(st) if st.decision.is_some() => {
                        latch.close().await.map_err(fail("leave the election"))?;
                        return Ok(false);
                    }
                    _ => continue,
                }
            }
            Err(e) => return Err(format!("election: {e}")),
        }
    }
    let coord = Coordinator::new(&zk, &tx_root, &name)
        .identity(me.id.clone())
        .observers(&[party(ORCHESTRATOR).id]);
    if let Ok(st) = coord.status(TX).await {
        if let Some((o, _)) = st.decision {
            // Elected after the decision (the coordinator before left): nothing left to do.
            say(
                &name,
                format!("elected case coordinator; {TX} is already decided ({o})"),
            );
            latch.close().await.map_err(fail("leave the election"))?;
            return Ok(false);
        }
    }
    say(&name, "elected case coordinator");
    let open = coord
        .open_transactions()
        .await
        .map_err(fail("list open transactions"))?;
    let exists = match coord.status(TX).await {
        Ok(_) => true,
        Err(Error::NoNode) => false,
        Err(e) => return Err(format!("read the transaction: {e}")),
    };
    if !open.is_empty() {
        say(&name, format!("found open transactions left by a previous coordinator: {open:?}; finishing them from the tree"));
    } else if !exists {
        // Wait until every finding is in the case.
        loop {
            let (findings, _, w) = retry::RetryPolicy::default()
                .run(&zk, || zk.get_children_watch(&case))
                .await
                .map_err(fail("read the case"))?;
            if findings.len() >= INSTITUTIONS.len() {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), w).await;
        }
        let participants: Vec<&str> = INSTITUTIONS.iter().map(|(n, _, _)| *n).collect();
        let parties: Vec<TxParty> = participants
            .iter()
            .map(|n| TxParty {
                name: n.to_string(),
                id: party(n).id,
            })
            .collect();
        coord
            .begin_guarded(
                TX,
                &parties,
                b"acute pulmonary embolism, right lower lobe; start anticoagulation",
                SystemTime::now() + Duration::from_secs(deadline_secs),
            )
            .await
            .map_err(fail("begin the transaction"))?;
        say(&name, format!("began transaction {TX}: asking {participants:?} to vote (deadline {deadline_secs}s; each may write only its own vote)"));
    }
    let outcome = coord
        .drive(TX, Duration::from_secs(60))
        .await
        .map_err(fail("drive the transaction"))?;
    say(&name, format!("transaction {TX} decided: {outcome}"));
    loop {
        let st = coord
            .status(TX)
            .await
            .map_err(fail("read the transaction"))?;
        if st.is_done() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    say(&name, format!("every institution applied {outcome}"));
    latch.close().await.map_err(fail("leave the election"))?;
    Ok(true)
}
