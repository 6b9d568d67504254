//! The server crate's one error type, and the one place where internal failures become ZooKeeper
//! error codes for clients.

use synod_proto::ErrorCode;

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
    #[error("protocol: {0}")]
    Protocol(#[from] synod_proto::ProtoError),
    /// The write's fate is unknown (leader lost, forward failed): the client must be told by
    /// losing its connection, as ZooKeeper does.
    #[error("request outcome unknown: {0}")]
    Unknown(String),
}

impl ServerError {
    /// The ZooKeeper code a client sees for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            ServerError::Protocol(_) => ErrorCode::MarshallingError,
            ServerError::Config(_) => ErrorCode::BadArguments,
            ServerError::Unknown(_) => ErrorCode::ConnectionLoss,
            ServerError::Io(_) | ServerError::Storage(_) | ServerError::Raft(_) => {
                ErrorCode::SystemError
            }
        }
    }
}
