//! The peer port of a real 3-node synod cluster (TLS, the default) against peers that must be
//! refused: one with another CA's certificate, one with a client certificate, node 2's
//! certificate claiming to be node 3 (in the hello, in a vote, in a forwarded write), a node of
//! another cluster id, a node certificate of a non-member, and a plaintext peer. Each one tries a
//! forwarded create carrying the identity `super` (which bypasses every ACL) and a vote at a
//! higher term; nothing changes: no node is created, no term moves, no entry is appended and the
//! replicas' digests stay equal. A genuine member's certificate, as a control, is answered.

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use openraft::raft::VoteRequest;
use openraft::Vote;
use synod_client::Client;
use synod_proto::records::CreateRequest;
use synod_proto::{Acl, Encode, OpCode};
use synod_raft_store::{Command, Origin};
use synod_server::data_dir::{ClusterId, ClusterIdCell};
use synod_server::peer::{LocalPeer, PeerPool, PeerRequest, PeerResponse, PeerTls};
use synod_server::tls::certs::{create_ca, issue, Subject, Validity};
use synod_server::tls::TlsFiles;
use synod_testkit::{blocking, Ensemble, SynodEnsemble};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The ensemble's certificate directory (`synod certs` wrote it beside the node directories).
fn certs_dir(ens: &SynodEnsemble) -> PathBuf {
    let node_dir = &ens.nodes()[0].dir;
    node_dir.parent().unwrap_or(node_dir).join("certs")
}

/// TLS files trusting the cluster's CA and presenting `<stem>.{crt,key}` from `dir`.
fn files(ca: &Path, dir: &Path, stem: &str) -> TlsFiles {
    TlsFiles {
        ca: ca.to_path_buf(),
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
    }
}

/// A peer identity: `node_id` in the hello, `tls` (or plaintext), and a cluster id.
fn peer(node_id: u64, tls: Option<&TlsFiles>, cluster: Option<ClusterId>) -> Arc<LocalPeer> {
    let cell = ClusterIdCell::in_memory(node_id);
    if let Some(id) = cluster {
        cell.accept(Some(id)).expect("fresh cell adopts");
    }
    Arc::new(LocalPeer {
        node_id,
        cluster: Arc::new(cell),
        tls: tls.map(|f| PeerTls::new(f).expect("peer TLS material loads")),
        versions: Default::default(),
    })
}

/// A forwarded `create /forged` as `super`, claiming to come from node `origin`.
fn forged_create(origin: u64) -> PeerRequest {
    PeerRequest::Forward(create_as_super(origin, "/forged"))
}

/// A forwarded group: a `create /forged-own` from `own`, then `create /forged` claiming to come
/// from node `origin` (every command of a group is checked, not only its first).
fn forged_group(own: u64, origin: u64) -> PeerRequest {
    PeerRequest::ForwardGroup(vec![
        create_as_super(own, "/forged-own"),
        create_as_super(origin, "/forged"),
    ])
}

/// A `create path` as `super`, from node `origin`.
fn create_as_super(origin: u64, path: &str) -> Command {
    let mut body = BytesMut::new();
    CreateRequest {
        path: path.into(),
        data: Some(Bytes::from_static(b"owned")),
        acl: vec![Acl::new(0x1f, "world", "anyone")],
        flags: 0,
    }
    .encode(&mut body);
    Command::Write {
        origin: Origin {
            node: origin,
            request: 1,
        },
        session_id: 0,
        time_ms: 0,
        auth: vec![("super".into(), String::new())],
        opcode: OpCode::Create.as_i32(),
        body: body.freeze(),
    }
}

/// A vote request from `candidate` at `term`.
fn vote(candidate: u64, term: u64) -> PeerRequest {
    PeerRequest::Vote(VoteRequest::new(Vote::new(term, candidate), None))
}

/// (term, last log index) of every node.
fn raft_positions(ens: &SynodEnsemble) -> Vec<(u64, u64)> {
    (0..3)
        .map(|i| {
            (
                ens.status_u64(i, "term").expect("term"),
                ens.status_u64(i, "last_log_index").expect("last_log_index"),
            )
        })
        .collect()
}

/// Every node's `/digest` once all have applied the same index.
fn digests(ens: &SynodEnsemble) -> Vec<String> {
    for i in 0..3 {
        ens.wait_caught_up(i, Duration::from_secs(20))
            .expect("node catches up");
    }
    (0..3)
        .map(|i| {
            let (_, d) = ens.json(i, "GET", "/digest", None).expect("digest");
            d.get("digest")
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .expect("digest field")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_port_refuses_everyone_but_members_speaking_as_themselves() {
    let bin = Path::new(env!("CARGO_BIN_EXE_synod"));
    let ens = blocking(|| SynodEnsemble::start_tls(bin, 3, &[])).expect("start a TLS cluster");
    let dir = certs_dir(&ens);
    let ca = dir.join("ca.crt");
    let leader = blocking(|| ens.wait_for_leader(Duration::from_secs(30))).expect("a leader");
    let target = ens.nodes()[leader].id as u64;
    let target_addr = ens.nodes()[leader].peer_addr().to_string();
    // A member other than the leader, whose certificate the attackers borrow or imitate.
    let member = ens.nodes()[(leader + 1) % 3].id as u64;
    let other = ens.nodes()[(leader + 2) % 3].id as u64;
    let cluster_id: ClusterId = ens
        .status_json(leader)
        .and_then(|s| s.get("cluster_id")?.as_str()?.parse().ok())
        .expect("/status names the cluster id");

    // More certificates from the cluster's CA (a client's, a non-member node's), and node
    // `member`'s name from another CA.
    let status = Process::new(bin)
        .arg("certs")
        .arg("--dir")
        .arg(&dir)
        .args([
            "create-client",
            "--name",
            "mallory",
            "--institution",
            "lab-9",
        ])
        .status()
        .expect("synod certs runs");
    assert!(status.success(), "synod certs create-client");
    let status = Process::new(bin)
        .arg("certs")
        .arg("--dir")
        .arg(&dir)
        .args(["create-node", "--id", "9", "--host", "127.0.0.1"])
        .status()
        .expect("synod certs runs");
    assert!(status.success(), "synod certs create-node");
    let rogue = tempfile::tempdir().expect("temp dir");
    let rogue_ca = create_ca("rogue CA", Validity::days(1)).expect("rogue CA");
    let imitation = Subject::Node {
        id: member,
        hosts: vec!["127.0.0.1".into()],
    };
    issue(&rogue_ca, &imitation, Validity::days(1))
        .expect("rogue node certificate")
        .write(rogue.path(), "rogue-node")
        .expect("write");

    let member_files = files(&ca, &dir, &format!("node{member}"));
    let before = raft_positions(&ens);
    let attackers = [
        (
            "another CA's certificate for a member",
            peer(member, Some(&files(&ca, rogue.path(), "rogue-node")), None),
            member,
        ),
        (
            "a client certificate",
            peer(member, Some(&files(&ca, &dir, "mallory")), None),
            member,
        ),
        (
            "a member's certificate claiming another member's id",
            peer(other, Some(&member_files), None),
            other,
        ),
        (
            "a member's certificate from another cluster",
            peer(
                member,
                Some(&member_files),
                Some(ClusterId(cluster_id.0 ^ 1)),
            ),
            member,
        ),
        (
            "a non-member's node certificate",
            peer(9, Some(&files(&ca, &dir, "node9")), None),
            9,
        ),
        ("plaintext", peer(member, None, None), member),
        (
            // The handshake passes; the requests claim another member.
            "a member forging another member's requests",
            peer(member, Some(&member_files), Some(cluster_id)),
            other,
        ),
    ];
    for (what, local, claims) in attackers {
        let pool = PeerPool::new(local, 1 << 20);
        let requests = [
            forged_create(claims),
            forged_group(member, claims),
            vote(claims, before[leader].0 + 10),
        ];
        for req in requests {
            match pool.call(target, &target_addr, req, CALL_TIMEOUT).await {
                Ok(response) => panic!("{what}: answered {}", response.variant_name()),
                Err(e) => eprintln!("{what}: refused ({e})"),
            }
        }
    }

    // The control: a member's own certificate, speaking as itself, is answered.
    let pool = PeerPool::new(peer(member, Some(&member_files), None), 1 << 20);
    let answer = pool
        .call(
            target,
            &target_addr,
            PeerRequest::HistoryFloor,
            CALL_TIMEOUT,
        )
        .await;
    assert!(
        matches!(answer, Ok(PeerResponse::HistoryFloor(_))),
        "a member is answered: {answer:?}"
    );

    // A member's malformed groups: empty, or holding a batch (which only a leader builds).
    let malformed = [
        ("an empty group", PeerRequest::ForwardGroup(Vec::new())),
        (
            "a group holding a batch",
            PeerRequest::ForwardGroup(vec![Command::Batch(
                vec![create_as_super(member, "/forged")].into(),
            )]),
        ),
    ];
    for (what, req) in malformed {
        match pool.call(target, &target_addr, req, CALL_TIMEOUT).await {
            Ok(response) => panic!("{what}: answered {}", response.variant_name()),
            Err(e) => eprintln!("{what}: refused ({e})"),
        }
    }

    // Nothing changed: no term moved, no entry appended, the node does not exist, and the
    // replicas agree.
    assert_eq!(raft_positions(&ens), before, "terms and logs unchanged");
    let client = Client::connect(&ens.connect_string(), ens.connect_options())
        .await
        .expect("a client connects");
    assert_eq!(client.exists("/forged").await, Ok(None));
    assert_eq!(client.exists("/forged-own").await, Ok(None));
    client.close().await.expect("close");
    let d = digests(&ens);
    assert!(d.iter().all(|x| x == &d[0]), "digests differ: {d:?}");
}
