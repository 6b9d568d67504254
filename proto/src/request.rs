//! Client requests: the body that follows a [`RequestHeader`], chosen by its opcode. The server
//! decodes them with [`RequestPacket`]'s `Decode`; the client encodes them.

use bytes::BytesMut;

use crate::error::ProtoError;
use crate::jute::{Decode, Encode, Reader};
use crate::opcode::OpCode;
use crate::records::*;

/// One operation inside a `multi` (writes) or `multiRead` (reads) request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiOp {
    Create(CreateRequest),
    Create2(CreateRequest),
    CreateContainer(CreateRequest),
    CreateTtl(CreateTtlRequest),
    Delete(DeleteRequest),
    SetData(SetDataRequest),
    Check(CheckVersionRequest),
    GetChildren(GetChildrenRequest),
    GetData(GetDataRequest),
}

impl MultiOp {
    pub fn opcode(&self) -> OpCode {
        match self {
            MultiOp::Create(_) => OpCode::Create,
            MultiOp::Create2(_) => OpCode::Create2,
            MultiOp::CreateContainer(_) => OpCode::CreateContainer,
            MultiOp::CreateTtl(_) => OpCode::CreateTtl,
            MultiOp::Delete(_) => OpCode::Delete,
            MultiOp::SetData(_) => OpCode::SetData,
            MultiOp::Check(_) => OpCode::Check,
            MultiOp::GetChildren(_) => OpCode::GetChildren,
            MultiOp::GetData(_) => OpCode::GetData,
        }
    }

    /// The path the op addresses.
    pub fn path(&self) -> &str {
        match self {
            MultiOp::Create(r) | MultiOp::Create2(r) | MultiOp::CreateContainer(r) => &r.path,
            MultiOp::CreateTtl(r) => &r.path,
            MultiOp::Delete(r) => &r.path,
            MultiOp::SetData(r) => &r.path,
            MultiOp::Check(r) => &r.path,
            MultiOp::GetChildren(r) => &r.path,
            MultiOp::GetData(r) => &r.path,
        }
    }

    /// Whether the op belongs in a `multiRead` (true) or a `multi` (false).
    pub fn is_read(&self) -> bool {
        matches!(self, MultiOp::GetChildren(_) | MultiOp::GetData(_))
    }

    fn encode_body(&self, buf: &mut BytesMut) {
        match self {
            MultiOp::Create(r) | MultiOp::Create2(r) | MultiOp::CreateContainer(r) => r.encode(buf),
            MultiOp::CreateTtl(r) => r.encode(buf),
            MultiOp::Delete(r) => r.encode(buf),
            MultiOp::SetData(r) => r.encode(buf),
            MultiOp::Check(r) => r.encode(buf),
            MultiOp::GetChildren(r) => r.encode(buf),
            MultiOp::GetData(r) => r.encode(buf),
        }
    }

    fn decode_body(op: i32, read: bool, r: &mut Reader) -> Result<Self, ProtoError> {
        let bad = || ProtoError::InvalidValue {
            what: "multi op type",
            value: op.into(),
        };
        let op = OpCode::from_i32(op).ok_or_else(bad)?;
        Ok(match (read, op) {
            (false, OpCode::Create) => MultiOp::Create(Decode::decode(r)?),
            (false, OpCode::Create2) => MultiOp::Create2(Decode::decode(r)?),
            (false, OpCode::CreateContainer) => MultiOp::CreateContainer(Decode::decode(r)?),
            (false, OpCode::CreateTtl) => MultiOp::CreateTtl(Decode::decode(r)?),
            (false, OpCode::Delete) => MultiOp::Delete(Decode::decode(r)?),
            (false, OpCode::SetData) => MultiOp::SetData(Decode::decode(r)?),
            (false, OpCode::Check) => MultiOp::Check(Decode::decode(r)?),
            (true, OpCode::GetChildren) => MultiOp::GetChildren(Decode::decode(r)?),
            (true, OpCode::GetData) => MultiOp::GetData(Decode::decode(r)?),
            _ => return Err(bad()),
        })
    }
}

fn encode_multi(ops: &[MultiOp], buf: &mut BytesMut) {
    for op in ops {
        MultiHeader {
            op: op.opcode().as_i32(),
            done: false,
            err: -1,
        }
        .encode(buf);
        op.encode_body(buf);
    }
    MultiHeader {
        op: -1,
        done: true,
        err: -1,
    }
    .encode(buf);
}

fn decode_multi(read: bool, r: &mut Reader) -> Result<Vec<MultiOp>, ProtoError> {
    let mut ops = Vec::new();
    loop {
        let h = MultiHeader::decode(r)?;
        if h.done {
            return Ok(ops);
        }
        ops.push(MultiOp::decode_body(h.op, read, r)?);
    }
}

/// A request body, one variant per opcode a client may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Create(CreateRequest),
    Create2(CreateRequest),
    CreateContainer(CreateRequest),
    CreateTtl(CreateTtlRequest),
    Delete(DeleteRequest),
    Exists(ExistsRequest),
    GetData(GetDataRequest),
    SetData(SetDataRequest),
    GetAcl(GetAclRequest),
    SetAcl(SetAclRequest),
    GetChildren(GetChildrenRequest),
    GetChildren2(GetChildren2Request),
    Sync(SyncRequest),
    Ping,
    Check(CheckVersionRequest),
    Multi(Vec<MultiOp>),
    MultiRead(Vec<MultiOp>),
    Reconfig(ReconfigRequest),
    CheckWatches(CheckWatchesRequest),
    RemoveWatches(RemoveWatchesRequest),
    Auth(AuthPacket),
    SetWatches(SetWatches),
    SetWatches2(SetWatches2),
    Sasl(GetSaslRequest),
    GetEphemerals(GetEphemeralsRequest),
    GetAllChildrenNumber(GetAllChildrenNumberRequest),
    AddWatch(AddWatchRequest),
    WhoAmI,
    CloseSession,
}

impl Request {
    pub fn opcode(&self) -> OpCode {
        match self {
            Request::Create(_) => OpCode::Create,
            Request::Create2(_) => OpCode::Create2,
            Request::CreateContainer(_) => OpCode::CreateContainer,
            Request::CreateTtl(_) => OpCode::CreateTtl,
            Request::Delete(_) => OpCode::Delete,
            Request::Exists(_) => OpCode::Exists,
            Request::GetData(_) => OpCode::GetData,
            Request::SetData(_) => OpCode::SetData,
            Request::GetAcl(_) => OpCode::GetAcl,
            Request::SetAcl(_) => OpCode::SetAcl,
            Request::GetChildren(_) => OpCode::GetChildren,
            Request::GetChildren2(_) => OpCode::GetChildren2,
            Request::Sync(_) => OpCode::Sync,
            Request::Ping => OpCode::Ping,
            Request::Check(_) => OpCode::Check,
            Request::Multi(_) => OpCode::Multi,
            Request::MultiRead(_) => OpCode::MultiRead,
            Request::Reconfig(_) => OpCode::Reconfig,
            Request::CheckWatches(_) => OpCode::CheckWatches,
            Request::RemoveWatches(_) => OpCode::RemoveWatches,
            Request::Auth(_) => OpCode::Auth,
            Request::SetWatches(_) => OpCode::SetWatches,
            Request::SetWatches2(_) => OpCode::SetWatches2,
            Request::Sasl(_) => OpCode::Sasl,
            Request::GetEphemerals(_) => OpCode::GetEphemerals,
            Request::GetAllChildrenNumber(_) => OpCode::GetAllChildrenNumber,
            Request::AddWatch(_) => OpCode::AddWatch,
            Request::WhoAmI => OpCode::WhoAmI,
            Request::CloseSession => OpCode::CloseSession,
        }
    }

    /// Writes the body (without the header).
    pub fn encode_body(&self, buf: &mut BytesMut) {
        match self {
            Request::Create(r) | Request::Create2(r) | Request::CreateContainer(r) => r.encode(buf),
            Request::CreateTtl(r) => r.encode(buf),
            Request::Delete(r) => r.encode(buf),
            Request::Exists(r) => r.encode(buf),
            Request::GetData(r) => r.encode(buf),
            Request::SetData(r) => r.encode(buf),
            Request::GetAcl(r) => r.encode(buf),
            Request::SetAcl(r) => r.encode(buf),
            Request::GetChildren(r) => r.encode(buf),
            Request::GetChildren2(r) => r.encode(buf),
            Request::Sync(r) => r.encode(buf),
            Request::Check(r) => r.encode(buf),
            Request::Multi(ops) | Request::MultiRead(ops) => encode_multi(ops, buf),
            Request::Reconfig(r) => r.encode(buf),
            Request::CheckWatches(r) => r.encode(buf),
            Request::RemoveWatches(r) => r.encode(buf),
            Request::Auth(r) => r.encode(buf),
            Request::SetWatches(r) => r.encode(buf),
            Request::SetWatches2(r) => r.encode(buf),
            Request::Sasl(r) => r.encode(buf),
            Request::GetEphemerals(r) => r.encode(buf),
            Request::GetAllChildrenNumber(r) => r.encode(buf),
            Request::AddWatch(r) => r.encode(buf),
            Request::Ping | Request::WhoAmI | Request::CloseSession => {}
        }
    }

    /// Reads the body of a request whose header carried `op`.
    pub fn decode_body(op: OpCode, r: &mut Reader) -> Result<Self, ProtoError> {
        let d = r;
        Ok(match op {
            OpCode::Create => Request::Create(Decode::decode(d)?),
            OpCode::Create2 => Request::Create2(Decode::decode(d)?),
            OpCode::CreateContainer => Request::CreateContainer(Decode::decode(d)?),
            OpCode::CreateTtl => Request::CreateTtl(Decode::decode(d)?),
            OpCode::Delete => Request::Delete(Decode::decode(d)?),
            OpCode::Exists => Request::Exists(Decode::decode(d)?),
            OpCode::GetData => Request::GetData(Decode::decode(d)?),
            OpCode::SetData => Request::SetData(Decode::decode(d)?),
            OpCode::GetAcl => Request::GetAcl(Decode::decode(d)?),
            OpCode::SetAcl => Request::SetAcl(Decode::decode(d)?),
            OpCode::GetChildren => Request::GetChildren(Decode::decode(d)?),
            OpCode::GetChildren2 => Request::GetChildren2(Decode::decode(d)?),
            OpCode::Sync => Request::Sync(Decode::decode(d)?),
            OpCode::Ping => Request::Ping,
            OpCode::Check => Request::Check(Decode::decode(d)?),
            OpCode::Multi => Request::Multi(decode_multi(false, d)?),
            OpCode::MultiRead => Request::MultiRead(decode_multi(true, d)?),
            OpCode::Reconfig => Request::Reconfig(Decode::decode(d)?),
            OpCode::CheckWatches => Request::CheckWatches(Decode::decode(d)?),
            OpCode::RemoveWatches => Request::RemoveWatches(Decode::decode(d)?),
            OpCode::Auth => Request::Auth(Decode::decode(d)?),
            OpCode::SetWatches => Request::SetWatches(Decode::decode(d)?),
            OpCode::SetWatches2 => Request::SetWatches2(Decode::decode(d)?),
            OpCode::Sasl => Request::Sasl(Decode::decode(d)?),
            OpCode::GetEphemerals => Request::GetEphemerals(Decode::decode(d)?),
            OpCode::GetAllChildrenNumber => Request::GetAllChildrenNumber(Decode::decode(d)?),
            OpCode::AddWatch => Request::AddWatch(Decode::decode(d)?),
            OpCode::WhoAmI => Request::WhoAmI,
            OpCode::CloseSession => Request::CloseSession,
            OpCode::Notification
            | OpCode::DeleteContainer
            | OpCode::CreateSession
            | OpCode::Error => return Err(ProtoError::UnknownOpcode(op.as_i32())),
        })
    }
}

/// A whole request frame after the handshake: header and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPacket {
    pub xid: i32,
    pub request: Request,
}

impl Encode for RequestPacket {
    fn encode(&self, buf: &mut BytesMut) {
        RequestHeader {
            xid: self.xid,
            op: self.request.opcode().as_i32(),
        }
        .encode(buf);
        self.request.encode_body(buf);
    }
}

impl Decode for RequestPacket {
    fn decode(r: &mut Reader) -> Result<Self, ProtoError> {
        let h = RequestHeader::decode(r)?;
        let op = OpCode::from_i32(h.op).ok_or(ProtoError::UnknownOpcode(h.op))?;
        Ok(RequestPacket {
            xid: h.xid,
            request: Request::decode_body(op, r)?,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::jute::arb::Arb;
    use crate::jute::{from_bytes, to_bytes};
    use proptest::prelude::*;

    pub(crate) fn arb_multi_op(read: bool) -> BoxedStrategy<MultiOp> {
        if read {
            prop_oneof![
                GetChildrenRequest::arb().prop_map(MultiOp::GetChildren),
                GetDataRequest::arb().prop_map(MultiOp::GetData),
            ]
            .boxed()
        } else {
            prop_oneof![
                CreateRequest::arb().prop_map(MultiOp::Create),
                CreateRequest::arb().prop_map(MultiOp::Create2),
                CreateRequest::arb().prop_map(MultiOp::CreateContainer),
                CreateTtlRequest::arb().prop_map(MultiOp::CreateTtl),
                DeleteRequest::arb().prop_map(MultiOp::Delete),
                SetDataRequest::arb().prop_map(MultiOp::SetData),
                CheckVersionRequest::arb().prop_map(MultiOp::Check),
            ]
            .boxed()
        }
    }

    fn arb_request() -> BoxedStrategy<Request> {
        prop_oneof![
            CreateRequest::arb().prop_map(Request::Create),
            CreateRequest::arb().prop_map(Request::Create2),
            CreateRequest::arb().prop_map(Request::CreateContainer),
            CreateTtlRequest::arb().prop_map(Request::CreateTtl),
            DeleteRequest::arb().prop_map(Request::Delete),
            ExistsRequest::arb().prop_map(Request::Exists),
            GetDataRequest::arb().prop_map(Request::GetData),
            SetDataRequest::arb().prop_map(Request::SetData),
            GetAclRequest::arb().prop_map(Request::GetAcl),
            SetAclRequest::arb().prop_map(Request::SetAcl),
            GetChildrenRequest::arb().prop_map(Request::GetChildren),
            GetChildren2Request::arb().prop_map(Request::GetChildren2),
            SyncRequest::arb().prop_map(Request::Sync),
            Just(Request::Ping),
            CheckVersionRequest::arb().prop_map(Request::Check),
            proptest::collection::vec(arb_multi_op(false), 0..5).prop_map(Request::Multi),
            proptest::collection::vec(arb_multi_op(true), 0..5).prop_map(Request::MultiRead),
            ReconfigRequest::arb().prop_map(Request::Reconfig),
            CheckWatchesRequest::arb().prop_map(Request::CheckWatches),
            RemoveWatchesRequest::arb().prop_map(Request::RemoveWatches),
            AuthPacket::arb().prop_map(Request::Auth),
            SetWatches::arb().prop_map(Request::SetWatches),
            SetWatches2::arb().prop_map(Request::SetWatches2),
            GetSaslRequest::arb().prop_map(Request::Sasl),
            GetEphemeralsRequest::arb().prop_map(Request::GetEphemerals),
            GetAllChildrenNumberRequest::arb().prop_map(Request::GetAllChildrenNumber),
            AddWatchRequest::arb().prop_map(Request::AddWatch),
            Just(Request::WhoAmI),
            Just(Request::CloseSession),
        ]
        .boxed()
    }

    proptest! {
        #[test]
        fn request_packets_round_trip(xid in any::<i32>(), request in arb_request()) {
            let p = RequestPacket { xid, request };
            let back: RequestPacket = from_bytes(to_bytes(&p)).unwrap();
            prop_assert_eq!(back, p);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = from_bytes::<RequestPacket>(bytes::Bytes::from(bytes.clone()));
            let _ = from_bytes::<ConnectRequest>(bytes::Bytes::from(bytes));
        }
    }

    #[test]
    fn a_write_op_in_multi_read_is_rejected() {
        let p = RequestPacket {
            xid: 1,
            request: Request::Multi(vec![MultiOp::Delete(DeleteRequest {
                path: "/a".into(),
                version: -1,
            })]),
        };
        let mut b = BytesMut::new();
        p.encode(&mut b);
        b[7] = OpCode::MultiRead.as_i32() as u8; // header type: multi → multiRead
        assert!(from_bytes::<RequestPacket>(b.freeze()).is_err());
    }

    #[test]
    fn unknown_opcode_is_an_error() {
        let b = to_bytes(&RequestHeader { xid: 1, op: 77 });
        assert!(matches!(
            from_bytes::<RequestPacket>(b),
            Err(ProtoError::UnknownOpcode(77))
        ));
    }
}
