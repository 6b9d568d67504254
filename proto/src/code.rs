//! ZooKeeper error codes (`KeeperException.Code`), as carried in `ReplyHeader.err` and in multi
//! results. This is the one table that maps numbers to names; the server maps its internal errors
//! onto these variants in one place, and the client's error type wraps them.

macro_rules! error_codes {
    ($( $(#[$m:meta])* $name:ident = $val:expr ),* $(,)?) => {
        /// A ZooKeeper error code. `Ok` is success; an unknown number is kept as `Other`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( $(#[$m])* $name, )*
            /// A code this table does not know (a newer server).
            Other(i32),
        }

        impl ErrorCode {
            /// Every known code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            pub fn from_i32(v: i32) -> Self {
                match v {
                    $( $val => ErrorCode::$name, )*
                    other => ErrorCode::Other(other),
                }
            }

            pub fn as_i32(self) -> i32 {
                match self {
                    $( ErrorCode::$name => $val, )*
                    ErrorCode::Other(v) => v,
                }
            }

            /// The name ZooKeeper's tools print (e.g. `NoNode`).
            pub fn name(self) -> &'static str {
                match self {
                    $( ErrorCode::$name => stringify!($name), )*
                    ErrorCode::Other(_) => "Unknown",
                }
            }
        }
    };
}

error_codes! {
    Ok = 0,
    /// A server-side failure with no more specific code.
    SystemError = -1,
    RuntimeInconsistency = -2,
    DataInconsistency = -3,
    ConnectionLoss = -4,
    MarshallingError = -5,
    Unimplemented = -6,
    OperationTimeout = -7,
    BadArguments = -8,
    NewConfigNoQuorum = -13,
    ReconfigInProgress = -14,
    UnknownSession = -12,
    ApiError = -100,
    NoNode = -101,
    NoAuth = -102,
    BadVersion = -103,
    NoChildrenForEphemerals = -108,
    NodeExists = -110,
    NotEmpty = -111,
    SessionExpired = -112,
    InvalidCallback = -113,
    InvalidAcl = -114,
    AuthFailed = -115,
    SessionMoved = -118,
    NotReadOnly = -119,
    EphemeralOnLocalSession = -120,
    NoWatcher = -121,
    RequestTimeout = -122,
    ReconfigDisabled = -123,
    SessionClosedRequireSaslAuth = -124,
    QuotaExceeded = -125,
    ThrottledOp = -127,
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorCode::Other(v) => write!(f, "Unknown({v})"),
            c => f.write_str(c.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for &c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_i32(c.as_i32()), c);
            assert!(seen.insert(c.as_i32()), "duplicate {c}");
        }
        assert_eq!(ErrorCode::from_i32(-101), ErrorCode::NoNode);
        assert_eq!(ErrorCode::from_i32(-9999), ErrorCode::Other(-9999));
        assert_eq!(ErrorCode::NodeExists.to_string(), "NodeExists");
    }
}
