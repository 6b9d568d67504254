//! ACL checks and fix-up, as ZooKeeper's `PrepRequestProcessor.checkACL` / `fixupACL` do them.
//! The caller's identities are stamped into each write entry by the proposing server (they are
//! connection state), so these checks are deterministic on every replica.

use std::ops::Deref;

use synod_proto::{Acl, Id};

/// An ACL as nodes and events hold it: one thin pointer to one shared allocation (every node
/// with the open ACL shares one). Thin, so that a node's metadata fits its allocation into
/// jemalloc's 192-byte class with 100 bytes of data ([`crate::znode`]) and an event of the watch
/// history is 8 bytes smaller.
#[derive(Clone)]
pub struct SharedAcl(triomphe::ThinArc<(), Acl>);

impl SharedAcl {
    /// Whether `a` and `b` are the same allocation (not merely equal lists).
    pub fn ptr_eq(a: &SharedAcl, b: &SharedAcl) -> bool {
        a.0.ptr() == b.0.ptr()
    }
}

impl Deref for SharedAcl {
    type Target = [Acl];

    fn deref(&self) -> &[Acl] {
        &self.0.slice
    }
}

impl From<Vec<Acl>> for SharedAcl {
    fn from(acl: Vec<Acl>) -> SharedAcl {
        SharedAcl(triomphe::ThinArc::from_header_and_iter((), acl.into_iter()))
    }
}

impl PartialEq for SharedAcl {
    fn eq(&self, other: &SharedAcl) -> bool {
        **self == **other
    }
}

impl Eq for SharedAcl {}

impl std::fmt::Debug for SharedAcl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Whether `auth` (the caller's identities) grants `perm` on a node with `acl`.
/// An empty ACL grants everything, as in ZooKeeper; `super` identities pass every check.
pub fn check(acl: &[Acl], perm: i32, auth: &[Id]) -> bool {
    if acl.is_empty() || auth.iter().any(|id| id.scheme == "super") {
        return true;
    }
    acl.iter().filter(|a| a.perms & perm != 0).any(|a| {
        (a.id.scheme == "world" && a.id.id == "anyone")
            || auth
                .iter()
                .any(|id| id.scheme == a.id.scheme && matches(&a.id.scheme, &id.id, &a.id.id))
    })
}

/// `a` as shown to a caller without ADMIN on its node: a `digest` id keeps its user name and
/// loses its password hash (`alice:x`), as ZooKeeper masks it.
pub fn masked(a: &Acl) -> Acl {
    if a.id.scheme != "digest" {
        return a.clone();
    }
    let user = a.id.id.split(':').next().unwrap_or_default();
    Acl {
        perms: a.perms,
        id: Id {
            scheme: "digest".into(),
            id: format!("{user}:x"),
        },
    }
}

fn matches(scheme: &str, have: &str, want: &str) -> bool {
    match scheme {
        "ip" => ip_matches(have, want),
        _ => have == want,
    }
}

fn parse_ip(s: &str) -> Option<Vec<u8>> {
    s.parse::<std::net::IpAddr>().ok().map(|ip| match ip {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    })
}

/// `want` is `addr` or `addr/bits`, as ZooKeeper's IPAuthenticationProvider accepts.
fn ip_matches(have: &str, want: &str) -> bool {
    let (addr, bits) = match want.split_once('/') {
        Some((a, b)) => (a, b.parse::<usize>().ok()),
        None => (want, None),
    };
    let (Some(h), Some(w)) = (parse_ip(have), parse_ip(addr)) else {
        return false;
    };
    if h.len() != w.len() {
        return false;
    }
    let bits = bits.unwrap_or(w.len() * 8).min(w.len() * 8);
    (0..bits).all(|i| (h[i / 8] >> (7 - i % 8)) & 1 == (w[i / 8] >> (7 - i % 8)) & 1)
}

fn valid_id(id: &Id) -> bool {
    match id.scheme.as_str() {
        "world" => id.id == "anyone",
        "digest" => id.id.split(':').count() == 2,
        "ip" => {
            let (addr, bits) = match id.id.split_once('/') {
                Some((a, b)) => (a, b.parse::<usize>().ok()),
                None => (id.id.as_str(), Some(0)),
            };
            parse_ip(addr).is_some() && bits.is_some()
        }
        "super" | "sasl" | "x509" => true,
        // Whether the tenant is declared is the tree's to say (`DataTree::fixup`).
        crate::tenants::TENANT_SCHEME => crate::tenants::valid_name(&id.id),
        _ => false,
    }
}

/// Expands `auth` entries to the caller's authenticated identities and validates the rest;
/// `None` means ZooKeeper's `InvalidACL` (empty list, unknown scheme, bad id, or `auth` with no
/// authenticated identity). `ip` identities are not "authenticated" for this purpose, and a
/// certificate's `org` is not the creator (it names every certificate of the institution: a
/// node for the whole institution says `tenant:`).
pub fn fixup(acl: &[Acl], auth: &[Id]) -> Option<Vec<Acl>> {
    if acl.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(acl.len());
    for a in acl {
        if a.id.scheme == "auth" {
            let mut any = false;
            for id in auth.iter().filter(|id| {
                !matches!(
                    id.scheme.as_str(),
                    "ip" | "world" | crate::tenants::ORG_SCHEME | crate::tenants::TENANT_SCHEME
                )
            }) {
                any = true;
                let e = Acl {
                    perms: a.perms,
                    id: id.clone(),
                };
                if !out.contains(&e) {
                    out.push(e);
                }
            }
            if !any {
                return None;
            }
        } else if valid_id(&a.id) {
            if !out.contains(a) {
                out.push(a.clone());
            }
        } else {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_proto::mode::perms;

    fn id(s: &str, i: &str) -> Id {
        Id {
            scheme: s.into(),
            id: i.into(),
        }
    }

    #[test]
    fn world_digest_and_ip_checks() {
        let open = Acl::open_unsafe();
        assert!(check(&open, perms::WRITE, &[]));
        let ro = Acl::read_unsafe();
        assert!(check(&ro, perms::READ, &[]));
        assert!(!check(&ro, perms::WRITE, &[]));
        let d = vec![Acl::new(perms::ALL, "digest", "alice:hash")];
        assert!(!check(&d, perms::READ, &[id("ip", "127.0.0.1")]));
        assert!(check(&d, perms::READ, &[id("digest", "alice:hash")]));
        let ip = vec![Acl::new(perms::READ, "ip", "10.1.0.0/16")];
        assert!(check(&ip, perms::READ, &[id("ip", "10.1.200.3")]));
        assert!(!check(&ip, perms::READ, &[id("ip", "10.2.0.1")]));
        assert!(check(&[], perms::ADMIN, &[]));
    }

    #[test]
    fn masking_hides_only_digest_hashes() {
        let d = Acl::new(perms::READ, "digest", "alice:aYXlLOpEooaV1cRAvUL1fp9Qt7E=");
        assert_eq!(masked(&d), Acl::new(perms::READ, "digest", "alice:x"));
        let x = Acl::new(perms::ALL, "x509", "CN=lab");
        assert_eq!(masked(&x), x);
    }

    #[test]
    fn fixup_expands_auth_and_rejects_bad_ids() {
        let auth = [id("ip", "127.0.0.1"), id("digest", "bob:h")];
        assert_eq!(
            fixup(&Acl::creator_all(), &auth),
            Some(vec![Acl::new(perms::ALL, "digest", "bob:h")])
        );
        assert_eq!(fixup(&Acl::creator_all(), &auth[..1]), None);
        assert_eq!(fixup(&[], &auth), None);
        assert_eq!(fixup(&[Acl::new(1, "world", "someone")], &auth), None);
        assert_eq!(fixup(&[Acl::new(1, "nope", "x")], &auth), None);
        assert_eq!(fixup(&[Acl::new(1, "ip", "not-an-ip")], &auth), None);
        assert!(fixup(&[Acl::new(1, "ip", "10.0.0.0/8")], &auth).is_some());
        // An organisation is never an ACL's id, nor what `auth` expands to.
        assert_eq!(fixup(&[Acl::new(1, "org", "St Mary")], &auth), None);
        let cert = [id("x509", "lab"), id("org", "Lab"), id("tenant", "lab")];
        assert_eq!(
            fixup(&Acl::creator_all(), &cert),
            Some(vec![Acl::new(perms::ALL, "x509", "lab")])
        );
        assert!(fixup(&[Acl::new(1, "tenant", "lab")], &auth).is_some());
        assert_eq!(fixup(&[Acl::new(1, "tenant", "a/b")], &auth), None);
    }
}
