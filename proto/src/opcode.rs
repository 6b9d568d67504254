//! Request opcodes (`ZooDefs.OpCode`).

macro_rules! opcodes {
    ($( $(#[$m:meta])* $name:ident = $val:expr => $label:literal ),* $(,)?) => {
        /// The `type` field of a request header (and of a multi header).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum OpCode { $( $(#[$m])* $name, )* }

        impl OpCode {
            pub const ALL: &'static [OpCode] = &[$(OpCode::$name),*];

            pub fn from_i32(v: i32) -> Option<Self> {
                match v { $( $val => Some(OpCode::$name), )* _ => None }
            }

            pub fn as_i32(self) -> i32 {
                match self { $( OpCode::$name => $val, )* }
            }

            /// The operation's name as ZooKeeper's API spells it (`getData`, `setWatches2`...):
            /// what logs and metric labels show.
            pub fn name(self) -> &'static str {
                match self { $( OpCode::$name => $label, )* }
            }
        }
    };
}

opcodes! {
    Notification = 0 => "notification",
    Create = 1 => "create",
    Delete = 2 => "delete",
    Exists = 3 => "exists",
    GetData = 4 => "getData",
    SetData = 5 => "setData",
    GetAcl = 6 => "getAcl",
    SetAcl = 7 => "setAcl",
    GetChildren = 8 => "getChildren",
    Sync = 9 => "sync",
    Ping = 11 => "ping",
    GetChildren2 = 12 => "getChildren2",
    Check = 13 => "check",
    Multi = 14 => "multi",
    Create2 = 15 => "create2",
    Reconfig = 16 => "reconfig",
    CheckWatches = 17 => "checkWatches",
    RemoveWatches = 18 => "removeWatches",
    CreateContainer = 19 => "createContainer",
    /// Internal to ZooKeeper (container reaping); never sent by clients.
    DeleteContainer = 20 => "deleteContainer",
    CreateTtl = 21 => "createTtl",
    MultiRead = 22 => "multiRead",
    Auth = 100 => "auth",
    SetWatches = 101 => "setWatches",
    Sasl = 102 => "sasl",
    GetEphemerals = 103 => "getEphemerals",
    GetAllChildrenNumber = 104 => "getAllChildrenNumber",
    SetWatches2 = 105 => "setWatches2",
    AddWatch = 106 => "addWatch",
    WhoAmI = 107 => "whoAmI",
    CreateSession = -10 => "createSession",
    CloseSession = -11 => "closeSession",
    /// The type of a failed op's entry in a multi response.
    Error = -1 => "error",
}

impl OpCode {
    /// ZooKeeper's four-letter abbreviation of the operation, as `cons` shows the last one of a
    /// connection (`lop=`); `OTHR` for those it has none for.
    pub fn short_name(self) -> &'static str {
        match self {
            OpCode::Ping => "PING",
            OpCode::CreateSession => "SESS",
            OpCode::CloseSession => "CLOS",
            OpCode::Create | OpCode::Create2 | OpCode::CreateContainer | OpCode::CreateTtl => {
                "CREA"
            }
            OpCode::Delete | OpCode::DeleteContainer => "DELE",
            OpCode::Exists => "EXIS",
            OpCode::GetData => "GETD",
            OpCode::SetData => "SETD",
            OpCode::GetAcl => "GETA",
            OpCode::SetAcl => "SETA",
            OpCode::GetChildren | OpCode::GetChildren2 => "GETC",
            OpCode::Sync => "SYNC",
            OpCode::Check => "CHEC",
            OpCode::Multi => "MULT",
            OpCode::Reconfig => "RECO",
            OpCode::CheckWatches => "CHKW",
            OpCode::RemoveWatches => "REMW",
            OpCode::MultiRead => "MLTR",
            OpCode::Auth => "AUTH",
            OpCode::SetWatches | OpCode::SetWatches2 => "SETW",
            OpCode::Sasl => "SASL",
            OpCode::GetEphemerals => "GETE",
            OpCode::GetAllChildrenNumber => "GETACN",
            OpCode::AddWatch => "ADDW",
            OpCode::WhoAmI => "HOMI",
            OpCode::Notification | OpCode::Error => "OTHR",
        }
    }

    /// Whether this op changes the tree (and so goes through consensus).
    pub fn is_write(self) -> bool {
        matches!(
            self,
            OpCode::Create
                | OpCode::Create2
                | OpCode::CreateContainer
                | OpCode::CreateTtl
                | OpCode::Delete
                | OpCode::DeleteContainer
                | OpCode::SetData
                | OpCode::SetAcl
                | OpCode::Check
                | OpCode::Multi
                | OpCode::Reconfig
                | OpCode::CreateSession
                | OpCode::CloseSession
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_round_trip() {
        for &op in OpCode::ALL {
            assert_eq!(OpCode::from_i32(op.as_i32()), Some(op));
        }
        assert_eq!(OpCode::from_i32(10), None);
        assert_eq!(OpCode::GetChildren2.as_i32(), 12);
    }
}
