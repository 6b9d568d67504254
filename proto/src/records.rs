//! The jute records of the client protocol (`zookeeper.jute`, modules `data` and `proto`), plus
//! the 3.9 `whoAmI` records. Field order is wire order.

use bytes::Bytes;

use crate::jute::jute_record;
use crate::mode::perms;

jute_record! {
    /// An identity: a scheme (`world`, `auth`, `digest`, `ip`, ...) and an id within it.
    pub struct Id {
        pub scheme: String,
        pub id: String,
    }
}

jute_record! {
    /// One ACL entry: permission bits for an identity.
    pub struct Acl {
        pub perms: i32,
        pub id: Id,
    }
}

impl Acl {
    pub fn new(perms: i32, scheme: &str, id: &str) -> Self {
        Acl {
            perms,
            id: Id {
                scheme: scheme.into(),
                id: id.into(),
            },
        }
    }

    /// `world:anyone` with every permission (`ZooDefs.Ids.OPEN_ACL_UNSAFE`).
    pub fn open_unsafe() -> Vec<Acl> {
        vec![Acl::new(perms::ALL, "world", "anyone")]
    }

    /// Every permission to the creator's authenticated ids (`CREATOR_ALL_ACL`).
    pub fn creator_all() -> Vec<Acl> {
        vec![Acl::new(perms::ALL, "auth", "")]
    }

    /// `world:anyone` may read (`READ_ACL_UNSAFE`).
    pub fn read_unsafe() -> Vec<Acl> {
        vec![Acl::new(perms::READ, "world", "anyone")]
    }
}

jute_record! {
    /// The metadata of a znode as clients see it. zxids are log positions; times are
    /// milliseconds since the epoch as stamped by the proposer.
    #[derive(Copy, Hash)]
    pub struct Stat {
        pub czxid: i64,
        pub mzxid: i64,
        pub ctime: i64,
        pub mtime: i64,
        pub version: i32,
        pub cversion: i32,
        pub aversion: i32,
        pub ephemeral_owner: i64,
        pub data_length: i32,
        pub num_children: i32,
        pub pzxid: i64,
    }
}

jute_record! {
    /// The first frame a client sends on a connection.
    pub struct ConnectRequestBase {
        pub protocol_version: i32,
        pub last_zxid_seen: i64,
        pub timeout: i32,
        pub session_id: i64,
        pub passwd: Bytes,
    }
}

jute_record! {
    pub struct ConnectResponseBase {
        pub protocol_version: i32,
        pub timeout: i32,
        pub session_id: i64,
        pub passwd: Bytes,
    }
}

/// A connect request with the trailing read-only flag that 3.4+ clients append (older clients omit
/// it, so it decodes as `false` when absent).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectRequest {
    pub base: ConnectRequestBase,
    pub read_only: bool,
}

/// The server's answer to a connect request; a `timeout` of 0 or less means the session expired.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectResponse {
    pub base: ConnectResponseBase,
    pub read_only: bool,
}

macro_rules! with_read_only {
    ($name:ident, $base:ident) => {
        impl crate::jute::Encode for $name {
            fn encode(&self, buf: &mut bytes::BytesMut) {
                self.base.encode(buf);
                self.read_only.encode(buf);
            }
        }
        impl crate::jute::Decode for $name {
            fn decode(r: &mut crate::jute::Reader) -> Result<Self, crate::error::ProtoError> {
                let base = $base::decode(r)?;
                let read_only = if r.is_empty() { false } else { r.read_bool()? };
                Ok(Self { base, read_only })
            }
        }
        #[cfg(test)]
        impl crate::jute::arb::Arb for $name {
            fn arb() -> proptest::strategy::BoxedStrategy<Self> {
                use proptest::strategy::Strategy;
                (
                    <$base as crate::jute::arb::Arb>::arb(),
                    proptest::prelude::any::<bool>(),
                )
                    .prop_map(|(base, read_only)| Self { base, read_only })
                    .boxed()
            }
        }
    };
}
with_read_only!(ConnectRequest, ConnectRequestBase);
with_read_only!(ConnectResponse, ConnectResponseBase);

jute_record! {
    pub struct RequestHeader {
        pub xid: i32,
        pub op: i32,
    }
}

jute_record! {
    /// Precedes every reply; `err` is an [`crate::ErrorCode`] and when it is not 0 no body follows
    /// (except for multi, whose results carry per-op errors).
    #[derive(Copy)]
    pub struct ReplyHeader {
        pub xid: i32,
        pub zxid: i64,
        pub err: i32,
    }
}

jute_record! {
    /// Precedes each op of a multi request and each result of a multi response; a header with
    /// `done` set ends the list.
    #[derive(Copy)]
    pub struct MultiHeader {
        pub op: i32,
        pub done: bool,
        pub err: i32,
    }
}

jute_record! {
    pub struct AuthPacket {
        pub auth_type: i32,
        pub scheme: String,
        pub auth: Bytes,
    }
}

jute_record! {
    pub struct SetWatches {
        pub relative_zxid: i64,
        pub data_watches: Vec<String>,
        pub exist_watches: Vec<String>,
        pub child_watches: Vec<String>,
    }
}

jute_record! {
    pub struct SetWatches2 {
        pub relative_zxid: i64,
        pub data_watches: Vec<String>,
        pub exist_watches: Vec<String>,
        pub child_watches: Vec<String>,
        pub persistent_watches: Vec<String>,
        pub persistent_recursive_watches: Vec<String>,
    }
}

jute_record! {
    pub struct GetDataRequest {
        pub path: String,
        pub watch: bool,
    }
}

jute_record! {
    pub struct SetDataRequest {
        pub path: String,
        /// Null (`None`) is kept apart from empty, as ZooKeeper does.
        pub data: Option<Bytes>,
        pub version: i32,
    }
}

jute_record! {
    pub struct ReconfigRequest {
        /// Null (`None`) when not given: a non-null `new_members` makes the reconfig
        /// non-incremental.
        pub joining_servers: Option<String>,
        pub leaving_servers: Option<String>,
        pub new_members: Option<String>,
        pub cur_config_id: i64,
    }
}

jute_record! {
    pub struct SetDataResponse {
        pub stat: Stat,
    }
}

jute_record! {
    pub struct GetSaslRequest {
        pub token: Bytes,
    }
}

jute_record! {
    pub struct SetSaslRequest {
        pub token: Bytes,
    }
}

jute_record! {
    pub struct SetSaslResponse {
        pub token: Bytes,
    }
}

jute_record! {
    pub struct CreateRequest {
        pub path: String,
        /// Null (`None`) is kept apart from empty, as ZooKeeper does.
        pub data: Option<Bytes>,
        pub acl: Vec<Acl>,
        pub flags: i32,
    }
}

jute_record! {
    pub struct CreateTtlRequest {
        pub path: String,
        /// Null (`None`) is kept apart from empty, as ZooKeeper does.
        pub data: Option<Bytes>,
        pub acl: Vec<Acl>,
        pub flags: i32,
        pub ttl: i64,
    }
}

jute_record! {
    pub struct DeleteRequest {
        pub path: String,
        pub version: i32,
    }
}

jute_record! {
    pub struct GetChildrenRequest {
        pub path: String,
        pub watch: bool,
    }
}

jute_record! {
    pub struct GetAllChildrenNumberRequest {
        pub path: String,
    }
}

jute_record! {
    pub struct GetChildren2Request {
        pub path: String,
        pub watch: bool,
    }
}

jute_record! {
    pub struct CheckVersionRequest {
        pub path: String,
        pub version: i32,
    }
}

jute_record! {
    pub struct SyncRequest {
        pub path: String,
    }
}

jute_record! {
    pub struct SyncResponse {
        pub path: String,
    }
}

jute_record! {
    pub struct GetAclRequest {
        pub path: String,
    }
}

jute_record! {
    pub struct SetAclRequest {
        pub path: String,
        pub acl: Vec<Acl>,
        pub version: i32,
    }
}

jute_record! {
    pub struct SetAclResponse {
        pub stat: Stat,
    }
}

jute_record! {
    pub struct AddWatchRequest {
        pub path: String,
        pub mode: i32,
    }
}

jute_record! {
    /// A watch notification (sent with xid -1).
    pub struct WatcherEvent {
        pub event_type: i32,
        pub state: i32,
        pub path: String,
    }
}

jute_record! {
    pub struct ErrorResponse {
        pub err: i32,
    }
}

jute_record! {
    pub struct CreateResponse {
        pub path: String,
    }
}

jute_record! {
    pub struct Create2Response {
        pub path: String,
        pub stat: Stat,
    }
}

jute_record! {
    pub struct ExistsRequest {
        pub path: String,
        pub watch: bool,
    }
}

jute_record! {
    pub struct ExistsResponse {
        pub stat: Stat,
    }
}

jute_record! {
    pub struct GetDataResponse {
        /// Null (`None`) is kept apart from empty, as ZooKeeper does.
        pub data: Option<Bytes>,
        pub stat: Stat,
    }
}

jute_record! {
    pub struct GetChildrenResponse {
        pub children: Vec<String>,
    }
}

jute_record! {
    pub struct GetAllChildrenNumberResponse {
        pub total_number: i32,
    }
}

jute_record! {
    pub struct GetChildren2Response {
        pub children: Vec<String>,
        pub stat: Stat,
    }
}

jute_record! {
    pub struct GetAclResponse {
        pub acl: Vec<Acl>,
        pub stat: Stat,
    }
}

jute_record! {
    pub struct CheckWatchesRequest {
        pub path: String,
        pub watcher_type: i32,
    }
}

jute_record! {
    pub struct RemoveWatchesRequest {
        pub path: String,
        pub watcher_type: i32,
    }
}

jute_record! {
    pub struct GetEphemeralsRequest {
        pub prefix_path: String,
    }
}

jute_record! {
    pub struct GetEphemeralsResponse {
        pub ephemerals: Vec<String>,
    }
}

jute_record! {
    /// One authenticated identity of a session, as whoAmI reports it.
    pub struct ClientInfo {
        pub auth_scheme: String,
        pub user: String,
    }
}

jute_record! {
    pub struct WhoAmIResponse {
        pub client_info: Vec<ClientInfo>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jute::{arb::Arb, from_bytes, to_bytes};
    use proptest::prelude::*;

    macro_rules! round_trip {
        ($($t:ident),* $(,)?) => {
            proptest! {
                #![proptest_config(ProptestConfig::with_cases(64))]
                $(
                    #[test]
                    #[allow(non_snake_case)]
                    fn $t(v in <$t as Arb>::arb()) {
                        let back: $t = from_bytes(to_bytes(&v)).unwrap();
                        prop_assert_eq!(back, v);
                    }
                )*
            }
        };
    }

    mod round_trips {
        use super::*;
        round_trip!(
            Id,
            Acl,
            Stat,
            ConnectRequest,
            ConnectResponse,
            RequestHeader,
            ReplyHeader,
            MultiHeader,
            AuthPacket,
            SetWatches,
            SetWatches2,
            GetDataRequest,
            SetDataRequest,
            ReconfigRequest,
            SetDataResponse,
            GetSaslRequest,
            SetSaslRequest,
            SetSaslResponse,
            CreateRequest,
            CreateTtlRequest,
            DeleteRequest,
            GetChildrenRequest,
            GetAllChildrenNumberRequest,
            GetChildren2Request,
            CheckVersionRequest,
            SyncRequest,
            SyncResponse,
            GetAclRequest,
            SetAclRequest,
            SetAclResponse,
            AddWatchRequest,
            WatcherEvent,
            ErrorResponse,
            CreateResponse,
            Create2Response,
            ExistsRequest,
            ExistsResponse,
            GetDataResponse,
            GetChildrenResponse,
            GetAllChildrenNumberResponse,
            GetChildren2Response,
            GetAclResponse,
            CheckWatchesRequest,
            RemoveWatchesRequest,
            GetEphemeralsRequest,
            GetEphemeralsResponse,
            ClientInfo,
            WhoAmIResponse,
        );
    }

    #[test]
    fn stat_is_68_bytes_on_the_wire() {
        assert_eq!(to_bytes(&Stat::default()).len(), 68);
    }

    #[test]
    fn connect_request_without_read_only_flag_decodes() {
        let req = ConnectRequest {
            base: ConnectRequestBase {
                timeout: 30000,
                passwd: Bytes::from(vec![0; 16]),
                ..Default::default()
            },
            read_only: false,
        };
        let full = to_bytes(&req);
        let short = full.slice(..full.len() - 1);
        assert_eq!(from_bytes::<ConnectRequest>(short).unwrap(), req);
    }
}
