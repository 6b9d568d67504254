//! Checks the test harness itself: a real 3-node ZooKeeper ensemble starts with one leader, elects a
//! new one when the leader is SIGKILLed, takes the killed node back, and is cleaned up on drop.

use std::time::{Duration, Instant};

use synod_testkit::{Ensemble, External, ZkEnsemble};

#[test]
fn zookeeper_ensemble_fails_over_and_restarts() {
    let t0 = Instant::now();
    // Started from a thread that exits at once: PR_SET_PDEATHSIG fires when the forking *thread*
    // dies, so this checks that the nodes are tied to the process, not to the starting thread.
    let zk = std::thread::spawn(|| ZkEnsemble::start(3))
        .join()
        .expect("starter thread panicked")
        .expect("start a 3-node ZooKeeper ensemble");
    eprintln!(
        "ensemble serving after {:?}: {}",
        t0.elapsed(),
        zk.connect_string()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        zk.running(),
        [true, true, true],
        "nodes died with the thread that started them"
    );

    assert_eq!(zk.name(), "zookeeper");
    assert!(zk.can_kill());
    let addrs = zk.addrs();
    assert_eq!(addrs.len(), 3);
    assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    let modes: Vec<_> = (0..3).map(|i| zk.mode(i)).collect();
    assert_eq!(
        modes
            .iter()
            .filter(|m| m.as_deref() == Some("leader"))
            .count(),
        1,
        "{modes:?}"
    );
    assert_eq!(
        modes
            .iter()
            .filter(|m| m.as_deref() == Some("follower"))
            .count(),
        2,
        "{modes:?}"
    );
    let old_leader = zk.leader().expect("exactly one leader");

    let t1 = Instant::now();
    zk.kill(old_leader).expect("kill the leader");
    assert_eq!(zk.mode(old_leader), None, "killed node still answers");
    assert!(!zk.running()[old_leader]);
    let new_leader = zk
        .wait_for_leader(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", zk.log_tail((old_leader + 1) % 3)));
    assert_ne!(new_leader, old_leader);
    eprintln!(
        "node {new_leader} took over from node {old_leader} after {:?}",
        t1.elapsed()
    );

    let t2 = Instant::now();
    zk.restart(old_leader)
        .unwrap_or_else(|e| panic!("restart node {old_leader}: {e}"));
    assert_eq!(zk.mode(old_leader).as_deref(), Some("follower"));
    assert_eq!(
        zk.wait_for_leader(Duration::from_secs(10))
            .expect("leader after restart"),
        new_leader
    );
    eprintln!("node {old_leader} rejoined after {:?}", t2.elapsed());
    assert!(
        zk.restart(old_leader).is_err(),
        "restarting a running node must fail"
    );
    assert!(
        zk.log_tail(old_leader).contains("QuorumPeer"),
        "log is captured"
    );

    let root = zk
        .node_dir(0)
        .expect("node 0")
        .parent()
        .expect("root")
        .to_path_buf();
    drop(zk);
    assert!(
        !root.exists(),
        "data root {} not removed on drop",
        root.display()
    );
    for addr in addrs {
        assert!(
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(),
            "{addr} still up after drop"
        );
    }
}

#[test]
fn external_list_cannot_be_killed() {
    let ext = External::from_list(" 127.0.0.1:2181, localhost:2182 ,").expect("parse");
    assert_eq!(ext.name(), "external");
    assert_eq!(ext.connect_string(), "127.0.0.1:2181,localhost:2182");
    assert_eq!(ext.addrs().len(), 2);
    assert!(!ext.can_kill());
    assert_eq!(
        ext.kill(0).unwrap_err().kind(),
        std::io::ErrorKind::Unsupported
    );
    assert_eq!(
        ext.restart(0).unwrap_err().kind(),
        std::io::ErrorKind::Unsupported
    );
    assert!(External::from_list(" , ").is_err());
}
