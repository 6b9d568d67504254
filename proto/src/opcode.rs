//! Request opcodes (`ZooDefs.OpCode`).

macro_rules! opcodes {
    ($( $(#[$m:meta])* $name:ident = $val:expr ),* $(,)?) => {
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
        }
    };
}

opcodes! {
    Notification = 0,
    Create = 1,
    Delete = 2,
    Exists = 3,
    GetData = 4,
    SetData = 5,
    GetAcl = 6,
    SetAcl = 7,
    GetChildren = 8,
    Sync = 9,
    Ping = 11,
    GetChildren2 = 12,
    Check = 13,
    Multi = 14,
    Create2 = 15,
    Reconfig = 16,
    CheckWatches = 17,
    RemoveWatches = 18,
    CreateContainer = 19,
    /// Internal to ZooKeeper (container reaping); never sent by clients.
    DeleteContainer = 20,
    CreateTtl = 21,
    MultiRead = 22,
    Auth = 100,
    SetWatches = 101,
    Sasl = 102,
    GetEphemerals = 103,
    GetAllChildrenNumber = 104,
    SetWatches2 = 105,
    AddWatch = 106,
    WhoAmI = 107,
    CreateSession = -10,
    CloseSession = -11,
    /// The type of a failed op's entry in a multi response.
    Error = -1,
}

impl OpCode {
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
