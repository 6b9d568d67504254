//! Reply bodies. A reply's body is chosen by the opcode of the request it answers, which only the
//! requester knows: the client decodes with [`Response::decode_body`] after matching the xid; the
//! server encodes with [`ReplyPacket`].

use bytes::{Bytes, BytesMut};

use crate::code::ErrorCode;
use crate::error::ProtoError;
use crate::jute::{Decode, Encode, Reader};
use crate::opcode::OpCode;
use crate::records::*;

/// The result of one op of a multi / multiRead, as ZooKeeper reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiResult {
    /// A create; `stat` is present for create2 / container / TTL creates.
    Create {
        path: String,
        stat: Option<Stat>,
    },
    Delete,
    SetData {
        stat: Stat,
    },
    Check,
    GetData {
        /// `None`: the node's data is null.
        data: Option<Bytes>,
        stat: Stat,
    },
    GetChildren {
        children: Vec<String>,
    },
    /// The op failed with this code (`Ok` for ops before a failing op of a failed multi,
    /// `RuntimeInconsistency` for ops after it).
    Error(ErrorCode),
}

impl MultiResult {
    fn encode(&self, buf: &mut BytesMut) {
        let header = |op: OpCode, err: i32| MultiHeader {
            op: op.as_i32(),
            done: false,
            err,
        };
        match self {
            MultiResult::Create { path, stat: None } => {
                header(OpCode::Create, 0).encode(buf);
                path.encode(buf);
            }
            MultiResult::Create {
                path,
                stat: Some(stat),
            } => {
                header(OpCode::Create2, 0).encode(buf);
                path.encode(buf);
                stat.encode(buf);
            }
            MultiResult::Delete => header(OpCode::Delete, 0).encode(buf),
            MultiResult::SetData { stat } => {
                header(OpCode::SetData, 0).encode(buf);
                stat.encode(buf);
            }
            MultiResult::Check => header(OpCode::Check, 0).encode(buf),
            MultiResult::GetData { data, stat } => {
                header(OpCode::GetData, 0).encode(buf);
                data.encode(buf);
                stat.encode(buf);
            }
            MultiResult::GetChildren { children } => {
                header(OpCode::GetChildren, 0).encode(buf);
                children.encode(buf);
            }
            MultiResult::Error(code) => {
                header(OpCode::Error, code.as_i32()).encode(buf);
                code.as_i32().encode(buf);
            }
        }
    }

    fn decode(h: MultiHeader, r: &mut Reader) -> Result<Self, ProtoError> {
        let bad = || ProtoError::InvalidValue {
            what: "multi result type",
            value: h.op.into(),
        };
        Ok(match OpCode::from_i32(h.op).ok_or_else(bad)? {
            OpCode::Create => MultiResult::Create {
                path: Decode::decode(r)?,
                stat: None,
            },
            OpCode::Create2 | OpCode::CreateContainer | OpCode::CreateTtl => {
                let path = Decode::decode(r)?;
                MultiResult::Create {
                    path,
                    stat: Some(Decode::decode(r)?),
                }
            }
            OpCode::Delete => MultiResult::Delete,
            OpCode::SetData => MultiResult::SetData {
                stat: Decode::decode(r)?,
            },
            OpCode::Check => MultiResult::Check,
            OpCode::GetData => {
                let data = Decode::decode(r)?;
                MultiResult::GetData {
                    data,
                    stat: Decode::decode(r)?,
                }
            }
            OpCode::GetChildren => MultiResult::GetChildren {
                children: Decode::decode(r)?,
            },
            OpCode::Error => MultiResult::Error(ErrorCode::from_i32(i32::decode(r)?)),
            _ => return Err(bad()),
        })
    }
}

/// A reply body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// No body: delete, ping, auth, setWatches(2), checkWatches, removeWatches, closeSession,
    /// and every reply whose header carries an error.
    Empty,
    /// create.
    Create(CreateResponse),
    /// create2, createContainer, createTTL.
    Create2(Create2Response),
    /// exists, setData, setACL (and a standalone check, where the server sends one).
    Stat(Stat),
    GetData(GetDataResponse),
    GetAcl(GetAclResponse),
    GetChildren(GetChildrenResponse),
    GetChildren2(GetChildren2Response),
    Sync(SyncResponse),
    /// multi and multiRead.
    Multi(Vec<MultiResult>),
    GetEphemerals(GetEphemeralsResponse),
    GetAllChildrenNumber(GetAllChildrenNumberResponse),
    WhoAmI(WhoAmIResponse),
    /// addWatch answers with an ErrorResponse body.
    Error(ErrorResponse),
    Sasl(SetSaslResponse),
}

impl Encode for Response {
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            Response::Empty => {}
            Response::Create(r) => r.encode(buf),
            Response::Create2(r) => r.encode(buf),
            Response::Stat(s) => s.encode(buf),
            Response::GetData(r) => r.encode(buf),
            Response::GetAcl(r) => r.encode(buf),
            Response::GetChildren(r) => r.encode(buf),
            Response::GetChildren2(r) => r.encode(buf),
            Response::Sync(r) => r.encode(buf),
            Response::Multi(results) => {
                for res in results {
                    res.encode(buf);
                }
                MultiHeader {
                    op: -1,
                    done: true,
                    err: -1,
                }
                .encode(buf);
            }
            Response::GetEphemerals(r) => r.encode(buf),
            Response::GetAllChildrenNumber(r) => r.encode(buf),
            Response::WhoAmI(r) => r.encode(buf),
            Response::Error(r) => r.encode(buf),
            Response::Sasl(r) => r.encode(buf),
        }
    }
}

impl Response {
    /// Reads the body of a successful reply (`err == 0`) to a request of type `op`.
    pub fn decode_body(op: OpCode, r: &mut Reader) -> Result<Self, ProtoError> {
        let d = r;
        Ok(match op {
            OpCode::Create => Response::Create(Decode::decode(d)?),
            OpCode::Create2 | OpCode::CreateContainer | OpCode::CreateTtl => {
                Response::Create2(Decode::decode(d)?)
            }
            OpCode::Exists | OpCode::SetData | OpCode::SetAcl => Response::Stat(Decode::decode(d)?),
            OpCode::Check if !d.is_empty() => Response::Stat(Decode::decode(d)?),
            OpCode::GetData | OpCode::Reconfig => Response::GetData(Decode::decode(d)?),
            OpCode::GetAcl => Response::GetAcl(Decode::decode(d)?),
            OpCode::GetChildren => Response::GetChildren(Decode::decode(d)?),
            OpCode::GetChildren2 => Response::GetChildren2(Decode::decode(d)?),
            OpCode::Sync => Response::Sync(Decode::decode(d)?),
            OpCode::Multi | OpCode::MultiRead => {
                let mut results = Vec::new();
                loop {
                    let h = MultiHeader::decode(d)?;
                    if h.done {
                        break Response::Multi(results);
                    }
                    results.push(MultiResult::decode(h, d)?);
                }
            }
            OpCode::GetEphemerals => Response::GetEphemerals(Decode::decode(d)?),
            OpCode::GetAllChildrenNumber => Response::GetAllChildrenNumber(Decode::decode(d)?),
            OpCode::WhoAmI => Response::WhoAmI(Decode::decode(d)?),
            OpCode::AddWatch if !d.is_empty() => Response::Error(Decode::decode(d)?),
            OpCode::Sasl => Response::Sasl(Decode::decode(d)?),
            _ => Response::Empty,
        })
    }
}

/// A whole reply frame: header and (when `err == 0`) body. The server encodes these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyPacket {
    pub header: ReplyHeader,
    pub response: Response,
}

impl Encode for ReplyPacket {
    fn encode(&self, buf: &mut BytesMut) {
        self.header.encode(buf);
        self.response.encode(buf);
    }
}

/// A watch notification frame: xid -1, zxid -1 (as ZooKeeper sends it), and the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationPacket {
    /// The zxid of the change that fired the event (the header's zxid; ZooKeeper 3.6+ sends it
    /// too, older servers -1). Lets a client resume watches from exactly the last event it saw.
    pub zxid: i64,
    pub event: WatcherEvent,
}

impl Encode for NotificationPacket {
    fn encode(&self, buf: &mut BytesMut) {
        ReplyHeader {
            xid: crate::xid::NOTIFICATION,
            zxid: self.zxid,
            err: 0,
        }
        .encode(buf);
        self.event.encode(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jute::arb::Arb;
    use crate::jute::to_bytes;
    use proptest::prelude::*;

    fn arb_code() -> impl Strategy<Value = ErrorCode> {
        proptest::sample::select(ErrorCode::ALL.to_vec())
    }

    fn arb_result() -> BoxedStrategy<MultiResult> {
        prop_oneof![
            (String::arb(), proptest::option::of(Stat::arb()))
                .prop_map(|(path, stat)| MultiResult::Create { path, stat }),
            Just(MultiResult::Delete),
            Stat::arb().prop_map(|stat| MultiResult::SetData { stat }),
            Just(MultiResult::Check),
            (Option::<Bytes>::arb(), Stat::arb())
                .prop_map(|(data, stat)| MultiResult::GetData { data, stat }),
            Vec::<String>::arb().prop_map(|children| MultiResult::GetChildren { children }),
            arb_code().prop_map(MultiResult::Error),
        ]
        .boxed()
    }

    /// Each response paired with an opcode whose reply it is.
    fn arb_response() -> BoxedStrategy<(OpCode, Response)> {
        prop_oneof![
            Just((OpCode::Delete, Response::Empty)),
            CreateResponse::arb().prop_map(|r| (OpCode::Create, Response::Create(r))),
            Create2Response::arb().prop_map(|r| (OpCode::Create2, Response::Create2(r))),
            Stat::arb().prop_map(|s| (OpCode::SetData, Response::Stat(s))),
            GetDataResponse::arb().prop_map(|r| (OpCode::GetData, Response::GetData(r))),
            GetAclResponse::arb().prop_map(|r| (OpCode::GetAcl, Response::GetAcl(r))),
            GetChildrenResponse::arb()
                .prop_map(|r| (OpCode::GetChildren, Response::GetChildren(r))),
            GetChildren2Response::arb()
                .prop_map(|r| (OpCode::GetChildren2, Response::GetChildren2(r))),
            SyncResponse::arb().prop_map(|r| (OpCode::Sync, Response::Sync(r))),
            proptest::collection::vec(arb_result(), 0..5)
                .prop_map(|r| (OpCode::Multi, Response::Multi(r))),
            GetEphemeralsResponse::arb()
                .prop_map(|r| (OpCode::GetEphemerals, Response::GetEphemerals(r))),
            GetAllChildrenNumberResponse::arb().prop_map(|r| (
                OpCode::GetAllChildrenNumber,
                Response::GetAllChildrenNumber(r)
            )),
            WhoAmIResponse::arb().prop_map(|r| (OpCode::WhoAmI, Response::WhoAmI(r))),
            ErrorResponse::arb().prop_map(|r| (OpCode::AddWatch, Response::Error(r))),
            SetSaslResponse::arb().prop_map(|r| (OpCode::Sasl, Response::Sasl(r))),
        ]
        .boxed()
    }

    proptest! {
        #[test]
        fn responses_round_trip((op, resp) in arb_response()) {
            let mut r = Reader::new(to_bytes(&resp));
            let back = Response::decode_body(op, &mut r).unwrap();
            prop_assert!(r.is_empty());
            prop_assert_eq!(back, resp);
        }

        #[test]
        fn arbitrary_reply_bytes_never_panic(
            op in proptest::sample::select(OpCode::ALL.to_vec()),
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let _ = Response::decode_body(op, &mut Reader::new(Bytes::from(bytes)));
        }
    }

    #[test]
    fn notification_layout() {
        let n = NotificationPacket {
            zxid: -1,
            event: WatcherEvent {
                event_type: 3,
                state: 3,
                path: "/a".into(),
            },
        };
        let b = to_bytes(&n);
        assert_eq!(&b[..4], &(-1i32).to_be_bytes());
        assert_eq!(b.len(), 16 + 4 + 4 + 4 + 2);
    }
}
