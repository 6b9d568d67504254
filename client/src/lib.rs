//! An async (tokio) client for ZooKeeper-protocol servers: synod, and Apache ZooKeeper 3.5+.
//!
//! One [`Client`] is one session. It connects to one server of the list at a time, pipelines
//! requests (answered in the order sent), pings at a third of the session timeout, and when its
//! connection breaks moves to another server within the session timeout, resuming the same session
//! with the last zxid it has seen and re-registering every watch, so that no event is lost.
//!
//! [`recipe`] builds locks, leader election, barriers, queues, a counter, a tree cache and a
//! two-phase commit on top of it.
//!
//! ```no_run
//! use synod_client::{Client, ConnectOptions, CreateMode};
//!
//! # async fn demo() -> Result<(), synod_client::Error> {
//! let zk = Client::connect("127.0.0.1:2181,127.0.0.1:2182/app", ConnectOptions::default()).await?;
//! zk.create("/config", b"v1", CreateMode::Persistent).await?;
//! let (data, stat, changed) = zk.get_data_watch("/config").await?;
//! assert_eq!(&data[..], b"v1");
//! zk.set_data("/config", b"v2", Some(stat.version)).await?;
//! let event = changed.await; // NodeDataChanged, delivered before the reply to any later read
//! println!("{:?} on {}", event.event_type, event.path);
//! zk.close().await?;
//! # Ok(()) }
//! ```

pub mod acl;
mod client;
pub mod connect_string;
pub mod error;
pub mod recipe;
mod session;
pub mod tls;
pub mod watch;

pub use acl::digest_id;
pub use client::{Client, ConnectOptions, Op, OpResult, StateStream, CONFIG_NODE};
pub use error::{Error, Result};
pub use session::SessionState;
pub use synod_proto::records::ClientInfo;
pub use synod_proto::{
    mode::perms, Acl, AddWatchMode, CreateMode, ErrorCode, EventType, Id, KeeperState, MultiResult,
    Stat, WatcherType,
};
pub use watch::{OneshotWatch, PersistentWatch, WatchedEvent};
