//! Parsing of ZooKeeper connect strings: `host:port[,host:port...][/chroot]`.

use crate::error::{Error, Result};

/// The default client port.
pub const DEFAULT_PORT: u16 = 2181;

/// A parsed connect string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectString {
    /// `host:port` pairs, in the order given (the client shuffles them).
    pub hosts: Vec<(String, u16)>,
    /// The chroot every path is relative to, without a trailing `/`; `None` for the root.
    pub chroot: Option<String>,
}

impl ConnectString {
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidConnectString(format!("{s:?}: {why}"));
        let (hosts_part, chroot) = match s.find('/') {
            Some(i) => (&s[..i], Some(&s[i..])),
            None => (s, None),
        };
        let chroot = match chroot {
            None | Some("/") => None,
            Some(c) => {
                synod_proto::path::validate_path(c, false).map_err(|e| bad(&e.to_string()))?;
                Some(c.to_string())
            }
        };
        let mut hosts = Vec::new();
        for h in hosts_part
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
        {
            let (host, port) = if let Some(rest) = h.strip_prefix('[') {
                // [v6]:port
                let end = rest.find(']').ok_or_else(|| bad("unclosed ["))?;
                let port = rest[end + 1..].strip_prefix(':');
                (rest[..end].to_string(), port)
            } else {
                match h.rsplit_once(':') {
                    Some((host, port)) => (host.to_string(), Some(port)),
                    None => (h.to_string(), None),
                }
            };
            let port = match port {
                None => DEFAULT_PORT,
                Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            };
            if host.is_empty() {
                return Err(bad("empty host"));
            }
            hosts.push((host, port));
        }
        if hosts.is_empty() {
            return Err(bad("no hosts"));
        }
        Ok(ConnectString { hosts, chroot })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_and_chroot() {
        let c = ConnectString::parse("a:1, b ,[::1]:3/app/x").unwrap();
        assert_eq!(
            c.hosts,
            vec![("a".into(), 1), ("b".into(), 2181), ("::1".into(), 3)]
        );
        assert_eq!(c.chroot.as_deref(), Some("/app/x"));
        assert_eq!(ConnectString::parse("a:1/").unwrap().chroot, None);
        assert!(ConnectString::parse("").is_err());
        assert!(ConnectString::parse("a:x").is_err());
        assert!(ConnectString::parse("a:1/b/").is_err());
    }
}
