//! ZooKeeper's dynamic-configuration text, as `/zookeeper/config` holds it and `reconfig`
//! takes it: `server.N=host:quorumPort:electionPort[:role][;[clientHost:]clientPort]` per
//! member. synod has one peer port per node: it writes it as the quorum port and 0 as the
//! election port (ZooKeeper's parsers refuse an election port equal to the quorum port), and
//! reads a member's peer address from the host and the quorum port; a spec's election port is
//! checked as ZooKeeper checks it, then ignored.

use std::collections::BTreeMap;

use synod_raft_store::NodeId;

use crate::error::ReconfigError;

/// A member as ZooKeeper's configuration names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its peer address (`host:port`): Raft's [`openraft::BasicNode::addr`].
    pub peer_addr: String,
    /// A voter (ZooKeeper's participant) or a learner (ZooKeeper's observer).
    pub role: Role,
    /// Where its clients connect (`host:port`), if known.
    pub client_addr: Option<String>,
}

/// ZooKeeper's learner type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Votes (a Raft voter).
    Participant,
    /// Follows the log without a vote (a Raft learner).
    Observer,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Participant => "participant",
            Role::Observer => "observer",
        }
    }
}

/// A configuration: members by id.
pub type Members = BTreeMap<NodeId, Member>;

fn bad(what: impl Into<String>) -> ReconfigError {
    ReconfigError::BadArguments(what.into())
}

/// A port number, 1..=65535.
fn port(text: &str, spec: &str) -> Result<u16, ReconfigError> {
    match text.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(bad(format!("{spec:?}: {text:?} is not a port"))),
    }
}

/// Splits `host:port:port[:role]` at its colons, keeping a bracketed IPv6 host whole.
fn address_parts(text: &str) -> Vec<&str> {
    if let Some(rest) = text.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let host = &text[..end + 2];
            let mut parts = vec![host];
            parts.extend(text[end + 2..].split(':').skip(1));
            return parts;
        }
    }
    text.split(':').collect()
}

/// Parses one `server.N=...` spec of a `reconfig` (its joining or new-members list).
pub fn parse_server(spec: &str) -> Result<(NodeId, Member), ReconfigError> {
    let spec = spec.trim();
    let (key, value) = spec.split_once('=').ok_or_else(|| {
        bad(format!(
            "{spec:?} is not server.N=host:port:port[:role][;client]"
        ))
    })?;
    // `server.N` or just `N`, as ZooKeeper takes the text after the last dot.
    let id = key
        .trim()
        .rsplit('.')
        .next()
        .and_then(|n| n.parse::<NodeId>().ok())
        .filter(|id| *id > 0)
        .ok_or_else(|| bad(format!("{spec:?}: {key:?} is not server.N with N > 0")))?;
    let (server, client) = match value.split_once(';') {
        Some((s, c)) => (s.trim(), Some(c.trim())),
        None => (value.trim(), None),
    };
    let parts = address_parts(server);
    if !(3..=4).contains(&parts.len()) || parts[0].is_empty() {
        return Err(bad(format!(
            "{spec:?}: the address must be host:quorumPort:electionPort[:role]"
        )));
    }
    let quorum = port(parts[1], spec)?;
    let election = match parts[2].trim() {
        "0" => 0,
        p => port(p, spec)?,
    };
    if election == quorum {
        return Err(bad(format!(
            "{spec:?}: the quorum and election ports must differ (synod uses the quorum port \
             as its peer port; give 0 as the election port)"
        )));
    }
    let role = match parts
        .get(3)
        .map(|r| r.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("participant") => Role::Participant,
        Some("observer") => Role::Observer,
        Some(other) => {
            return Err(bad(format!(
                "{spec:?}: role {other:?} is neither participant nor observer"
            )))
        }
    };
    let client_addr = match client.filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => match c.rsplit_once(':') {
            Some((host, p)) if !host.is_empty() => Some(format!("{host}:{}", port(p, spec)?)),
            Some((_, p)) => Some(format!("0.0.0.0:{}", port(p, spec)?)),
            None => Some(format!("0.0.0.0:{}", port(c, spec)?)),
        },
    };
    Ok((
        id,
        Member {
            peer_addr: format!("{}:{quorum}", parts[0]),
            role,
            client_addr,
        },
    ))
}

/// Parses a comma-separated list of specs (a `reconfig`'s joining servers or new members);
/// the same id twice is an error.
pub fn parse_servers(list: &str) -> Result<Members, ReconfigError> {
    let mut out = Members::new();
    for spec in list.split(',').filter(|s| !s.trim().is_empty()) {
        let (id, member) = parse_server(spec)?;
        if out.insert(id, member).is_some() {
            return Err(bad(format!("server.{id} is given twice")));
        }
    }
    Ok(out)
}

/// Parses a comma-separated list of server ids (a `reconfig`'s leaving servers).
pub fn parse_ids(list: &str) -> Result<Vec<NodeId>, ReconfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<NodeId>()
                .map_err(|_| bad(format!("{s:?} is not a server id")))
        })
        .collect()
}

/// The member lines of `/zookeeper/config` (without the `version=` line the tree adds), in
/// id order, each ending in a newline.
pub fn render(members: &Members) -> String {
    let mut out = String::new();
    for (id, m) in members {
        let (host, port) = m
            .peer_addr
            .rsplit_once(':')
            .unwrap_or((m.peer_addr.as_str(), "0"));
        out.push_str(&format!("server.{id}={host}:{port}:0:{}", m.role.as_str()));
        if let Some(c) = &m.client_addr {
            out.push(';');
            out.push_str(c);
        }
        out.push('\n');
    }
    out
}

/// The members that `/zookeeper/config`'s text names (its `version=` line and any line that
/// is no server spec are skipped), and its version (0 when there is none).
pub fn parse_config(text: &str) -> (Members, i64) {
    let mut members = Members::new();
    let mut version = 0;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("version=") {
            version = i64::from_str_radix(v.trim(), 16).unwrap_or(0);
        } else if let Ok((id, m)) = parse_server(line) {
            members.insert(id, m);
        }
    }
    (members, version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_as_zookeeper_writes_them() {
        let (id, m) =
            parse_server("server.4=10.0.0.4:2888:3888:participant;10.0.0.4:2181").unwrap();
        assert_eq!(id, 4);
        assert_eq!(m.peer_addr, "10.0.0.4:2888");
        assert_eq!(m.role, Role::Participant);
        assert_eq!(m.client_addr.as_deref(), Some("10.0.0.4:2181"));
        let (_, m) = parse_server(" 5=zk5.example:7001:0:observer;2181 ").unwrap();
        assert_eq!(
            (m.role, m.client_addr.as_deref()),
            (Role::Observer, Some("0.0.0.0:2181"))
        );
        let (_, m) = parse_server("server.6=[::1]:7001:7002").unwrap();
        assert_eq!(
            (m.peer_addr.as_str(), m.role),
            ("[::1]:7001", Role::Participant)
        );
        assert_eq!(m.client_addr, None);
        for bad in [
            "server.4",
            "server.0=h:1:2",
            "server.x=h:1:2",
            "server.4=h:1",
            "server.4=h:1:2:leader",
            "server.4=h:0:2",
            "server.4=h:7:7",
            "server.4=h:1:2;h:99999",
            "server.4=:1:2",
        ] {
            assert!(parse_server(bad).is_err(), "{bad} parsed");
        }
        assert!(parse_servers("server.1=a:1:0,server.1=b:1:0").is_err());
        assert_eq!(parse_ids(" 1, 3 ,").unwrap(), vec![1, 3]);
        assert!(parse_ids("1,x").is_err());
    }

    #[test]
    fn render_and_parse_round_trip() {
        let members = parse_servers(
            "server.2=127.0.0.1:7002:0:observer,server.1=127.0.0.1:7001:7002:participant;127.0.0.1:2181",
        )
        .unwrap();
        let text = render(&members);
        assert_eq!(
            text,
            "server.1=127.0.0.1:7001:0:participant;127.0.0.1:2181\n\
             server.2=127.0.0.1:7002:0:observer\n"
        );
        let (back, version) = parse_config(&format!("{text}version=1a0000"));
        assert_eq!(back, members);
        assert_eq!(version, 0x1a0000);
    }
}
