//! Three machines: a secure 3-node cluster whose nodes run on hosts of their own (network
//! namespaces with their own addresses and `/etc/hosts`, made and removed here), members given by
//! host name (`1=zk1.synod.test:<port>`), certificates issued for those names, and the clients
//! on a fifth host. Under write load, a machine is killed and restarted, then another is replaced
//! by a new machine at a new address and name (remove, add as a learner, promote); no
//! acknowledged write is lost and the replicas agree. The commands are those of docs/deploy.md.
//!
//! Needs root (network namespaces) and iproute2.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use synod_client::{Client, CreateMode};
use synod_testkit::load::WriteLoad;
use synod_testkit::netns::Netns;
use synod_testkit::{synod_certs, Ensemble, NodeArgs, SynodEnsemble};

const BIN: &str = env!("CARGO_BIN_EXE_synod");
const START: Duration = Duration::from_secs(60);
/// Host names: machines 1 to 4 (the fourth replaces one of the first three), then the clients.
const NAMES: [&str; 5] = [
    "zk1.synod.test",
    "zk2.synod.test",
    "zk3.synod.test",
    "zk4.synod.test",
    "clients.synod.test",
];
const CLIENTS: usize = 4;
const WRITERS: usize = 3;

#[test]
fn three_machines_by_host_name_survive_a_restart_and_a_replacement() {
    let net = Netns::create(NAMES.len()).expect("make the hosts (network namespaces; root)");
    net.name_hosts(&NAMES).expect("write the hosts' /etc/hosts");
    // Everything the test opens (clients, admin requests) is the clients' host's.
    let outcome = std::thread::scope(|s| {
        s.spawn(|| {
            net.enter(CLIENTS).expect("enter the clients' host");
            run(&net);
        })
        .join()
    });
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// `POST path body` on node `idx` as the operator: the answer's status and body.
fn post(c: &SynodEnsemble, idx: usize, path: &str, body: Value) -> (u16, Value) {
    c.admin_json(idx, "POST", path, Some(body))
}

fn run(net: &Netns) {
    let on = (0..4).map(|i| (net.addr(i), Some(net.name(i)))).collect();
    // Nodes 1-3 are the cluster; node 4 is a new machine that joins.
    let args: NodeArgs = Arc::new(|node, all| {
        let entry = |i: usize| format!("{}={}:{}", i + 1, NAMES[i], all[i].peer_port);
        if node.id <= 3 {
            let members: Vec<String> = (0..3).map(entry).collect();
            vec!["--members".into(), members.join(",")]
        } else {
            vec!["--members".into(), entry(node.id - 1), "--join".into()]
        }
    });
    let c = SynodEnsemble::start_custom_on(Path::new(BIN), 4, 0, &[], args, Vec::new(), on)
        .expect("lay out four machines");
    // Each machine's certificate names its host name (what its peers dial) and its address
    // (what the test's clients dial).
    let certs = c.root().join("certs");
    for (i, name) in NAMES.iter().enumerate().take(4) {
        for ext in ["crt", "key"] {
            std::fs::remove_file(certs.join(format!("node{}.{ext}", i + 1)))
                .expect("remove the ensemble's node certificate");
        }
        let (id, addr) = ((i + 1).to_string(), net.addr(i).to_string());
        let args = ["create-node", "--id", &id, "--host", name, "--host", &addr];
        synod_certs(Path::new(BIN), &certs, &args).expect("synod certs create-node");
    }
    for i in 0..3 {
        c.spawn(i).expect("start a machine");
    }
    let leader = c.wait_leader_among(&[0, 1, 2], START);
    let (status, members) = c.admin_json(leader, "GET", "/members", None);
    assert_eq!(status, 200, "{members}");
    for (i, name) in NAMES.iter().enumerate().take(3) {
        let m = members["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["id"] == i + 1))
            .unwrap_or_else(|| panic!("member {} in {members}", i + 1));
        assert_eq!(
            m["peer_addr"],
            format!("{name}:{}", c.nodes()[i].peer_port),
            "members are known by name"
        );
        // Every member's advertised client and admin addresses, as it describes itself.
        assert_eq!(m["client_addr"], c.nodes()[i].client_addr().to_string());
        assert_eq!(m["admin_addr"], c.nodes()[i].aux_addr().to_string());
    }

    let rt = synod_testkit::runtime();
    let opts = || {
        c.connect_options()
            .connect_timeout(Duration::from_secs(10))
            .session_timeout(Duration::from_secs(30))
    };
    rt.block_on(async {
        let zk = Client::connect(&c.connect_string_of(&[0, 1, 2]), opts())
            .await
            .expect("connect from the clients' host");
        zk.create("/machines", b"", CreateMode::Persistent)
            .await
            .expect("create /machines");
        let _ = zk.close().await;
    });
    let load = Arc::new(WriteLoad::default());
    let writers: Vec<_> = (0..WRITERS)
        .map(|k| {
            let connect = c.connect_string_of(&[0, 1, 2, 3]);
            rt.spawn(load.clone().writer(connect, opts(), "/machines".into(), k))
        })
        .collect();
    let mut rows = vec![format!(
        "{:<52} {:>12} {:>8}",
        "step", "acknowledged", "took"
    )];
    let mut row = |step: String, t: Instant, load: &WriteLoad| {
        rows.push(format!(
            "{step:<52} {:>12} {:>7.1}s",
            load.acknowledged_count(),
            t.elapsed().as_secs_f64()
        ));
    };
    std::thread::sleep(Duration::from_secs(2));
    row(
        format!("3 machines, node {} leads", leader + 1),
        Instant::now(),
        &load,
    );

    // A machine dies (SIGKILL) and comes back: the leader, so that a new one is elected among
    // peers known only by name.
    let t = Instant::now();
    c.kill(leader).expect("kill the leader's machine");
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let next = c.wait_leader_among(&others, START);
    c.restart(leader).expect("restart the machine");
    c.wait_leader_among(&[0, 1, 2], START);
    c.wait_caught_up(leader, START)
        .unwrap_or_else(|e| panic!("the restarted machine: {e}\n{}", c.logs()));
    row(
        format!("{} killed, restarted ({} led)", NAMES[leader], NAMES[next]),
        t,
        &load,
    );
    std::thread::sleep(Duration::from_secs(1));

    // A machine is replaced by a new one at a new address and name: it dies for good, it is
    // removed, the new machine starts empty with --join, is added as a learner by name and
    // promoted.
    let t = Instant::now();
    let lead = c.wait_leader_among(&[0, 1, 2], START);
    let gone = (0..3).find(|&i| i != lead).expect("a follower");
    c.kill(gone).expect("kill the machine to replace");
    let (st, v) = post(&c, lead, "/members/remove", json!({"id": gone + 1}));
    assert_eq!(st, 200, "remove node {}: {v}\n{}", gone + 1, c.logs());
    c.spawn(3).expect("start the new machine");
    let peer_addr = format!("{}:{}", NAMES[3], c.nodes()[3].peer_port);
    let (st, v) = post(
        &c,
        lead,
        "/members/add-learner",
        json!({"id": 4, "peer_addr": peer_addr}),
    );
    assert_eq!(st, 200, "add-learner 4: {v}\n{}", c.logs());
    let (st, v) = post(&c, lead, "/members/promote", json!({"id": 4}));
    assert_eq!(st, 200, "promote 4: {v}\n{}", c.logs());
    let live: Vec<usize> = (0..4).filter(|&i| i != gone).collect();
    c.wait_leader_among(&live, START);
    row(
        format!("{} replaced by {}", NAMES[gone], NAMES[3]),
        t,
        &load,
    );
    std::thread::sleep(Duration::from_secs(2));
    load.stop();
    rt.block_on(async {
        for w in writers {
            w.await.expect("writer task");
        }
    });

    // Nothing acknowledged is lost, on any machine of the new cluster.
    let acknowledged = load.acknowledged_count();
    assert!(acknowledged > 100, "too little load: {acknowledged} writes");
    let missing = rt.block_on(load.missing_on(&c, &live, "/machines"));
    for (i, p) in &missing {
        eprintln!("{} lacks acknowledged {p}", NAMES[*i]);
    }
    let lost = missing.len();
    rows.push(format!(
        "writes acknowledged {acknowledged}, failed (not acknowledged) {}, lost {lost}",
        load.failed()
    ));
    println!("\nthree machines by host name (hosts of their own, TLS, clients on a fifth):");
    for r in &rows {
        println!("  {r}");
    }
    assert_eq!(lost, 0, "acknowledged writes lost");
    let (_, members) = c.admin_json(live[0], "GET", "/members", None);
    let ids: Vec<u64> = members["members"]
        .as_array()
        .map(|m| m.iter().filter_map(|x| x["id"].as_u64()).collect())
        .unwrap_or_default();
    let mut expected: Vec<u64> = live.iter().map(|&i| i as u64 + 1).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected, "{members}");
    c.agreed_digest(&live, Duration::from_secs(20));
}
