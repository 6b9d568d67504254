//! ZooKeeper's four-letter words, answered on the client port before any handshake (a client
//! that sends `ruok` instead of a frame length gets `imok`), for existing monitoring scripts.

use synod_raft_store::state_machine::lock;

use crate::node::Node;

/// The answer to a four-letter word, or None if `head` is not one (it is then a frame length).
pub fn answer(node: &Node, head: &[u8; 4]) -> Option<String> {
    let word = std::str::from_utf8(head).ok()?;
    Some(match word {
        "ruok" => "imok".to_string(),
        "isro" => "rw".to_string(),
        "srvr" | "stat" => srvr(node),
        _ => return None,
    })
}

/// `srvr`/`stat`: the fields synod tracks today (latency and packet counters arrive with the
/// metrics work); monitoring scripts mostly read `Mode:`.
fn srvr(node: &Node) -> String {
    let m = node.raft.metrics().borrow().clone();
    let mode = if node.is_leader() {
        "leader"
    } else if m.current_leader.is_some() {
        "follower"
    } else {
        return "This ZooKeeper instance is not currently serving requests\n".into();
    };
    let (zxid, nodes, conns) = {
        let r = lock(&node.replica);
        (
            r.applied_zxid(),
            r.tree.node_count(),
            r.observer.connection_count(),
        )
    };
    format!(
        "Zookeeper version: synod-{}\nConnections: {conns}\nZxid: {zxid:#x}\nMode: {mode}\nNode count: {nodes}\n",
        env!("CARGO_PKG_VERSION")
    )
}
