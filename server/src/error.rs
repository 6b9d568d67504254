//! The server crate's one error type: what can stop a node from starting or running (bad
//! configuration, I/O, storage, Raft). Client-visible failures are ZooKeeper codes decided by the
//! DataTree in apply; a write whose outcome is unknown closes the client's connection instead.

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("config: {0}")]
    Config(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage: {0}")]
    Storage(String),
    #[error("raft: {0}")]
    Raft(String),
}
