//! The client's one error type: every ZooKeeper error code as a variant, plus what can go wrong on
//! this side of the wire (connection loss, timeouts, bad arguments caught before sending).

use synod_proto::{path::InvalidPath, ErrorCode, MultiResult};

macro_rules! keeper_errors {
    ($( $(#[$m:meta])* $name:ident => $msg:literal ),* $(,)?) => {
        /// An error from a ZooKeeper-protocol server or from the client itself.
        #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
        pub enum Error {
            $( $(#[$m])* #[error($msg)] $name, )*
            /// A code this client does not know (a newer server).
            #[error("unknown error code {0}")]
            Unknown(i32),
            /// A multi failed: `code` at op `index`; `results` holds every op's result, as
            /// ZooKeeper reports them (`Ok` before the failing op, `RuntimeInconsistency` after).
            #[error("multi failed at op {index}: {code}")]
            Multi { index: usize, code: ErrorCode, results: Vec<MultiResult> },
            /// A path that ZooKeeper would reject; caught before sending.
            #[error("{0}")]
            InvalidPath(InvalidPath),
            /// The connect string could not be parsed or resolved.
            #[error("invalid connect string: {0}")]
            InvalidConnectString(String),
            /// No server accepted a session within the connect timeout.
            #[error("timed out connecting to {0}")]
            ConnectTimeout(String),
            /// The server sent bytes that are not a valid reply; the connection was dropped.
            #[error("protocol error: {0}")]
            Protocol(String),
            /// The client was closed (by `close` or because every handle was dropped).
            #[error("client closed")]
            Closed,
            /// A recipe waited for something (a lock, leadership, a barrier, a decision) longer
            /// than its caller allowed.
            #[error("timed out waiting for {0}")]
            WaitTimeout(String),
            /// A recipe found the tree in a state it cannot interpret (e.g. a malformed
            /// transaction node), or lost what it held (e.g. its lock node vanished).
            #[error("recipe: {0}")]
            Recipe(String),
            /// The TLS material to connect with could not be loaded or used.
            #[error("TLS: {0}")]
            Tls(#[from] crate::tls::TlsError),
        }

        impl Error {
            /// The error for a non-zero ZooKeeper error code.
            pub fn from_code(code: ErrorCode) -> Self {
                match code {
                    $( ErrorCode::$name => Error::$name, )*
                    ErrorCode::Ok => Error::Unknown(0),
                    ErrorCode::Other(v) => Error::Unknown(v),
                }
            }

            /// The ZooKeeper code this error stands for, if it is one (a failed multi gives the
            /// code of its failing op; `Closed` reads as `ConnectionLoss`, as ZooKeeper's
            /// clients report it).
            pub fn code(&self) -> Option<ErrorCode> {
                match self {
                    $( Error::$name => Some(ErrorCode::$name), )*
                    Error::Unknown(v) => Some(ErrorCode::Other(*v)),
                    Error::Multi { code, .. } => Some(*code),
                    Error::InvalidPath(_) => Some(ErrorCode::BadArguments),
                    Error::ConnectTimeout(_) | Error::Closed => Some(ErrorCode::ConnectionLoss),
                    Error::InvalidConnectString(_)
                    | Error::Protocol(_)
                    | Error::WaitTimeout(_)
                    | Error::Recipe(_)
                    | Error::Tls(_) => None,
                }
            }
        }
    };
}

keeper_errors! {
    SystemError => "system error",
    RuntimeInconsistency => "runtime inconsistency",
    DataInconsistency => "data inconsistency",
    /// The connection broke before the reply arrived; the request may or may not have been applied.
    ConnectionLoss => "connection loss",
    MarshallingError => "marshalling error",
    Unimplemented => "unimplemented",
    OperationTimeout => "operation timeout",
    BadArguments => "bad arguments",
    NewConfigNoQuorum => "new config has no quorum",
    ReconfigInProgress => "reconfig in progress",
    UnknownSession => "unknown session",
    ApiError => "api error",
    NoNode => "no node",
    NoAuth => "not authorized",
    BadVersion => "bad version",
    NoChildrenForEphemerals => "ephemeral nodes may not have children",
    NodeExists => "node exists",
    NotEmpty => "node has children",
    /// The session is gone (expired or closed by the server); create a new client.
    SessionExpired => "session expired",
    InvalidCallback => "invalid callback",
    InvalidAcl => "invalid acl",
    AuthFailed => "authentication failed",
    SessionMoved => "session moved to another server",
    NotReadOnly => "server is not read-only",
    EphemeralOnLocalSession => "ephemeral on local session",
    NoWatcher => "no such watcher",
    RequestTimeout => "request timeout",
    ReconfigDisabled => "reconfig disabled",
    SessionClosedRequireSaslAuth => "session closed: sasl auth required",
    QuotaExceeded => "quota exceeded",
    ThrottledOp => "operation throttled",
}

impl Error {
    /// The name ZooKeeper's tools print for this error (e.g. `NoNode`).
    pub fn name(&self) -> String {
        match self.code() {
            Some(ErrorCode::Other(_)) | None => match self {
                Error::InvalidConnectString(_) => "InvalidConnectString".into(),
                Error::Protocol(_) => "ProtocolError".into(),
                Error::WaitTimeout(_) => "WaitTimeout".into(),
                Error::Recipe(_) => "RecipeError".into(),
                Error::Tls(_) => "TlsError".into(),
                _ => "Unknown".into(),
            },
            Some(c) => c.name().into(),
        }
    }
}

/// Shorthand for results of client operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_a_variant_and_back() {
        for &c in ErrorCode::ALL.iter().filter(|c| **c != ErrorCode::Ok) {
            assert_eq!(Error::from_code(c).code(), Some(c), "{c}");
        }
        assert_eq!(Error::from_code(ErrorCode::NoNode).name(), "NoNode");
        assert_eq!(
            Error::from_code(ErrorCode::Other(-999)),
            Error::Unknown(-999)
        );
    }
}
