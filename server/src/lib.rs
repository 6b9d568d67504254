//! The synod server: a node of a Raft-replicated coordination service speaking the ZooKeeper
//! client protocol. The files trace the architecture.
//!
//! A **write** (create, setData, multi, closeSession, ...):
//! 1. [`listener`] admits the connection; [`pipeline::connection`] runs it;
//!    [`pipeline::handshake`] creates or resumes its session;
//! 2. [`pipeline::reader`] decodes the request and hands it to [`pipeline::proposer`] at once
//!    (in arrival order), registering a waiter in [`pipeline::pending`];
//! 3. the proposer batches it into one Raft entry with other writes (group commit) on the
//!    leader, or forwards it to the leader over the peer port ([`peer`]; the node's
//!    [`peer::PeerService`] in `peer/service.rs` answers), keeping each connection's writes
//!    with one leader at a time ([`pipeline::write_order`]); Raft replicates and fsyncs the
//!    entry (raft-store's log store);
//! 4. raft-store applies the entry to the DataTree; [`pipeline::apply`] (ZooKeeper's
//!    FinalRequestProcessor) records and delivers its watch events ([`watch`]) and completes
//!    the waiter once the whole entry is applied;
//! 5. [`pipeline::ordered`] sends the reply in request order through [`pipeline::outbox`] and
//!    [`pipeline::writer`].
//!
//! A **read** (getData, exists, getChildren, ...): steps 1–2, then [`pipeline::ordered`] waits
//! for the session's earlier writes and a linearizable read point ([`pipeline::read_index`]: one
//! heartbeat round on the leader serves every read queued behind it), then [`pipeline::read`]
//! evaluates it against the applied tree under the replica lock (setting any watch there) and
//! queues the reply. A reconnecting session's watches are resumed by [`watch::resume`].
//!
//! Around them: [`node`] (what everything shares) and [`bootstrap`] (starting a node);
//! [`session`] (the connection registry, the leader's session deadlines and their reaper);
//! [`admin`] (the HTTP port and four-letter words); [`server`] (listeners, deliberate shutdown);
//! [`tls`] (certificates, identities, `synod certs`); [`data_dir`] (whose data a directory
//! holds: node id, cluster id); [`disk`] (its free space: writes refused in the reserve);
//! [`notify`] (readiness for systemd); [`upgrade`] (the cluster version: rolling upgrades);
//! [`reconfig`] (ZooKeeper's `reconfig` and `/zookeeper/config` over Raft membership);
//! [`cut_off`] (a node cut off from the quorum closes its clients' connections);
//! [`read_only`] (such a node serving clients that allow read-only);
//! [`config`], [`error`], [`stats`],
//! [`clock`], [`backup`] (`synod restore`).

// The crate's documentation is for its developers: `scripts/test.sh` builds it with
// `--document-private-items` (warnings are errors), where links to private items resolve.
#![allow(rustdoc::private_intra_doc_links)]

pub mod admin;
pub mod audit;
pub mod backup;
pub mod bootstrap;
pub mod clock;
pub mod config;
pub mod cut_off;
pub mod data_dir;
pub mod disk;
pub mod error;
pub mod listener;
pub mod node;
pub mod notify;
pub mod peer;
pub mod pipeline;
pub mod read_only;
pub mod reconfig;
pub mod server;
pub mod session;
pub mod stats;
pub mod tls;
pub mod upgrade;
pub mod watch;
