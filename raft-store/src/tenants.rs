//! The tenant table: the institutions that share a cluster, the identities that belong to each,
//! their quotas and what they use. Replicated (declared and removed by [`crate::Command::Tenant`]
//! entries, part of the snapshot), so every replica resolves `tenant:<name>` ACL entries and
//! enforces quotas alike. docs/tenants.md is the user's view.
//!
//! **Resolution, never stamping.** A proposer stamps a caller's raw identities (`ip`, `x509`,
//! `digest`, `org`) into its write; [`Tenants::resolve`] adds `tenant:<name>` for every tenant one
//! of them belongs to, *as of the entry being applied* (or, for a read, as of the replica's
//! applied state). So a tenant's membership changes at a log position, alike on every replica.
//! A `tenant:` identity a caller carries itself is dropped: nobody can claim one.
//!
//! An empty table costs nothing: [`Tenants::resolve`] hands the identities back borrowed, and a
//! cluster with no tenant behaves exactly as ZooKeeper does.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use synod_proto::Id;

use crate::error::StoreError;
use crate::tree::Name;

/// The ACL scheme (and resolved identity scheme) that names a tenant.
pub const TENANT_SCHEME: &str = "tenant";
/// The identity scheme of a certificate's organisation (subject O): stamped by the proposer,
/// never valid in an ACL (ACLs name institutions by `tenant:`).
pub const ORG_SCHEME: &str = "org";
/// Where tenants' homes live: `/tenants/<name>`.
pub const TENANTS_ROOT: &str = "/tenants";
/// The most tenants a cluster may declare, and the most identities one tenant may list: each
/// resolution walks the table, so it stays small.
pub const MAX_TENANTS: usize = 256;
/// See [`MAX_TENANTS`].
pub const MAX_MEMBERS: usize = 64;

/// The most each resource a tenant may use; `None` is unlimited. Enforced in apply with
/// ZooKeeper's `QuotaExceeded`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// znodes the tenant's identities created (and that still exist).
    pub znodes: Option<u64>,
    /// Bytes of data in those znodes.
    pub bytes: Option<u64>,
    /// Ephemeral znodes among them.
    pub ephemerals: Option<u64>,
    /// Sessions opened by its identities (and still open).
    #[serde(default)]
    pub sessions: Option<u64>,
    /// Watches its connections hold on one node (watches are node-local: each node counts its
    /// own, and refuses a registration past this with `QuotaExceeded`).
    #[serde(default)]
    pub watches: Option<u64>,
}

/// What a tenant uses now: derived from the tree (each znode's owner tenant), so it is never
/// stored and never drifts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub znodes: u64,
    pub bytes: u64,
    pub ephemerals: u64,
    #[serde(default)]
    pub sessions: u64,
}

impl Usage {
    /// Adds (`add`) or removes one znode of `bytes` bytes.
    fn count(&mut self, bytes: u64, ephemeral: bool, add: bool) {
        let apply = |v: &mut u64, d: u64| {
            *v = if add {
                v.saturating_add(d)
            } else {
                v.saturating_sub(d)
            }
        };
        apply(&mut self.znodes, 1);
        apply(&mut self.bytes, bytes);
        if ephemeral {
            apply(&mut self.ephemerals, 1);
        }
    }

    /// Whether this usage stays within `quota`.
    pub fn within(&self, quota: &Quota) -> bool {
        let within = |used: u64, limit: Option<u64>| limit.is_none_or(|l| used <= l);
        within(self.znodes, quota.znodes)
            && within(self.bytes, quota.bytes)
            && within(self.ephemerals, quota.ephemerals)
            && within(self.sessions, quota.sessions)
    }
}

/// One institution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// The identities that belong to it, as `(scheme, id)`: `org:<O>` (every certificate of the
    /// organisation), `x509:<CN>`, `digest:<user>:<hash>` (a full digest id: a user name alone
    /// would let anyone claim it with any password). Sorted, without duplicates.
    pub members: Vec<(String, String)>,
    /// Its limits.
    pub quota: Quota,
}

impl Tenant {
    /// Whether `id` is one of its members.
    fn has(&self, id: &Id) -> bool {
        self.members
            .iter()
            .any(|(s, i)| *s == id.scheme && *i == id.id)
    }
}

/// Whether `name` can name a tenant: a valid znode name of at most 64 bytes, of letters,
/// digits, `-`, `_` and `.`, not `.` or `..`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Checks a declaration against the table it would join: a valid name, at most
/// [`MAX_MEMBERS`] identities of the schemes a tenant may list, none of them another tenant's,
/// and room in the table. The error says which rule, for the operator.
pub fn validate(tenants: &Tenants, name: &str, tenant: &Tenant) -> Result<(), StoreError> {
    let refuse = |why: String| Err(StoreError::Tenant(format!("tenant {name:?}: {why}")));
    if !valid_name(name) {
        return refuse(
            "a name is 1 to 64 letters, digits, '-', '_' or '.' (and not '.' or '..')".into(),
        );
    }
    if tenant.members.len() > MAX_MEMBERS {
        return refuse(format!("more than {MAX_MEMBERS} identities"));
    }
    for (scheme, id) in &tenant.members {
        let ok = match scheme.as_str() {
            ORG_SCHEME | "x509" => !id.is_empty(),
            "digest" => id.split(':').count() == 2 && id.split(':').all(|p| !p.is_empty()),
            _ => false,
        };
        if !ok {
            return refuse(format!(
                "{scheme}:{id} is not an identity a tenant may list (org:<O>, x509:<CN>, \
                 digest:<user>:<hash>)"
            ));
        }
        let member = Id {
            scheme: scheme.clone(),
            id: id.clone(),
        };
        if let Some((other, _)) = tenants
            .table
            .iter()
            .find(|(n, t)| &***n != name && t.has(&member))
        {
            return refuse(format!("{scheme}:{id} already belongs to tenant {other:?}"));
        }
    }
    if !tenants.table.contains_key(name) && tenants.table.len() >= MAX_TENANTS {
        return refuse(format!("the cluster already has {MAX_TENANTS} tenants"));
    }
    Ok(())
}

/// The table and the usage of every tenant name that owns znodes. Persistent maps: the tree's
/// O(1) clone (snapshots, a failing multi) covers it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tenants {
    /// Declared tenants by name.
    table: imbl::OrdMap<Name, Arc<Tenant>>,
    /// Usage by owner tenant name: kept for names that own znodes even while undeclared (a
    /// removed tenant's nodes stay), so a re-declared tenant finds its usage.
    usage: imbl::OrdMap<Name, Usage>,
}

impl Tenants {
    /// Whether no tenant is declared: the cluster behaves as ZooKeeper does.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Tenant> {
        self.table.get(name).map(|t| &**t)
    }

    /// Declared tenants in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&Name, &Tenant)> {
        self.table.iter().map(|(n, t)| (n, &**t))
    }

    /// What `name` uses now (zero for a name that owns nothing).
    pub fn usage(&self, name: &str) -> Usage {
        self.usage.get(name).copied().unwrap_or_default()
    }

    /// Declares (or replaces) a tenant. Validate first ([`validate`]).
    pub(crate) fn put(&mut self, name: &str, tenant: Tenant) {
        self.table.insert(name.into(), Arc::new(tenant));
    }

    /// Forgets a tenant; its znodes keep their owner (and usage) until deleted.
    pub(crate) fn remove(&mut self, name: &str) -> bool {
        self.table.remove(name).is_some()
    }

    /// `raw` plus `tenant:<name>` for every declared tenant one of `raw` belongs to, in name
    /// order; any `tenant:` identity in `raw` is dropped (nobody may claim one). Borrowed and
    /// unchanged when there is nothing to add or drop.
    pub fn resolve<'a>(&self, raw: &'a [Id]) -> Cow<'a, [Id]> {
        let claimed = raw.iter().any(|id| id.scheme == TENANT_SCHEME);
        if self.table.is_empty() && !claimed {
            return Cow::Borrowed(raw);
        }
        let found: Vec<&Name> = self
            .table
            .iter()
            .filter(|(_, t)| raw.iter().any(|id| t.has(id)))
            .map(|(n, _)| n)
            .collect();
        if found.is_empty() && !claimed {
            return Cow::Borrowed(raw);
        }
        let mut out: Vec<Id> = raw
            .iter()
            .filter(|id| id.scheme != TENANT_SCHEME)
            .cloned()
            .collect();
        out.extend(found.into_iter().map(|n| Id {
            scheme: TENANT_SCHEME.into(),
            id: n.to_string(),
        }));
        Cow::Owned(out)
    }

    /// The tenant a caller's new znodes are charged to: the first (in name order) of the
    /// tenants its identities resolved to ([`Tenants::resolve`]); `None` outside every tenant.
    pub fn owner_of(resolved: &[Id]) -> Option<Name> {
        Self::owner_name(resolved).map(Name::from)
    }

    /// [`Tenants::owner_of`], sharing the allocation of the name this table already holds (every
    /// znode a tenant owns names it: one allocation per tenant, not per znode).
    pub(crate) fn owner_shared(&self, resolved: &[Id]) -> Option<Name> {
        Self::owner_name(resolved).map(|name| self.shared_name(name))
    }

    /// `name` as this table's own copy of it (its usage's key, or its declaration's), or a new
    /// one if it holds none.
    pub(crate) fn shared_name(&self, name: &str) -> Name {
        let held = match self.usage.get_key_value(name) {
            Some((k, _)) => Some(k),
            None => self.table.get_key_value(name).map(|(k, _)| k),
        };
        held.map_or_else(|| name.into(), Name::clone)
    }

    /// [`Tenants::owner_of`], borrowed from `resolved`.
    pub fn owner_name(resolved: &[Id]) -> Option<&str> {
        resolved
            .iter()
            .find(|id| id.scheme == TENANT_SCHEME)
            .map(|id| id.id.as_str())
    }

    /// Charges (or, with `add` false, credits) one znode of `bytes` bytes to `owner`; with
    /// `check`, refuses with `false` (changing nothing) if that takes a declared tenant over
    /// its quota. Crediting always succeeds.
    pub(crate) fn charge(
        &mut self,
        owner: &Name,
        bytes: u64,
        ephemeral: bool,
        add: bool,
        check: bool,
    ) -> bool {
        let mut u = self.usage(owner);
        u.count(bytes, ephemeral, add);
        if add && check {
            if let Some(t) = self.table.get(owner) {
                // Only what this charge changes: a session quota lowered below the sessions
                // open must not stop creates.
                let q = &t.quota;
                let over = |used: u64, limit: Option<u64>| limit.is_some_and(|l| used > l);
                if over(u.znodes, q.znodes)
                    || over(u.bytes, q.bytes)
                    || (ephemeral && over(u.ephemerals, q.ephemerals))
                {
                    return false;
                }
            }
        }
        self.set_usage(owner, u);
        true
    }

    /// Counts (`add`) or forgets one session of `owner`; with `check`, refuses with `false`
    /// (changing nothing) if that takes a declared tenant over its session quota.
    pub(crate) fn charge_session(&mut self, owner: &Name, add: bool, check: bool) -> bool {
        let mut u = self.usage(owner);
        u.sessions = if add {
            u.sessions.saturating_add(1)
        } else {
            u.sessions.saturating_sub(1)
        };
        if add && check {
            let limit = self.table.get(owner).and_then(|t| t.quota.sessions);
            if limit.is_some_and(|l| u.sessions > l) {
                return false;
            }
        }
        self.set_usage(owner, u);
        true
    }

    fn set_usage(&mut self, owner: &Name, u: Usage) {
        if u == Usage::default() {
            self.usage.remove(owner);
        } else {
            self.usage.insert(owner.clone(), u);
        }
    }

    /// Replaces `old` bytes of `owner`'s data by `new` bytes, unchecked (the server's own
    /// bookkeeping in a tenant's node).
    pub(crate) fn adjust_bytes(&mut self, owner: &Name, old: u64, new: u64) {
        let mut u = self.usage(owner);
        u.bytes = u.bytes.saturating_sub(old).saturating_add(new);
        self.set_usage(owner, u);
    }

    /// Replaces `old` bytes of `owner`'s data by `new` bytes, refusing with `false` (changing
    /// nothing) if that takes a declared tenant over its byte quota.
    pub(crate) fn recharge_bytes(&mut self, owner: &Name, old: u64, new: u64) -> bool {
        let mut u = self.usage(owner);
        u.bytes = u.bytes.saturating_sub(old).saturating_add(new);
        if new > old {
            if let Some(q) = self.table.get(owner).and_then(|t| t.quota.bytes) {
                if u.bytes > q {
                    return false;
                }
            }
        }
        self.set_usage(owner, u);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str, i: &str) -> Id {
        Id {
            scheme: s.into(),
            id: i.into(),
        }
    }

    fn tenant(members: &[(&str, &str)]) -> Tenant {
        Tenant {
            members: members
                .iter()
                .map(|(s, i)| (s.to_string(), i.to_string()))
                .collect(),
            quota: Quota::default(),
        }
    }

    #[test]
    fn an_empty_table_resolves_nothing_and_borrows() {
        let t = Tenants::default();
        let raw = [id("ip", "127.0.0.1"), id("x509", "hospital")];
        assert!(matches!(t.resolve(&raw), Cow::Borrowed(_)));
    }

    #[test]
    fn identities_resolve_to_their_tenants_and_claims_are_dropped() {
        let mut t = Tenants::default();
        t.put("hospital", tenant(&[("org", "St Mary")]));
        t.put("lab", tenant(&[("digest", "lab:h"), ("x509", "lab-bot")]));
        let raw = [id("org", "St Mary"), id("tenant", "lab")];
        let r = t.resolve(&raw);
        assert_eq!(&*r, &[id("org", "St Mary"), id("tenant", "hospital")]);
        let raw = [id("digest", "lab:h")];
        let r = t.resolve(&raw);
        assert_eq!(&*r, &[id("digest", "lab:h"), id("tenant", "lab")]);
        assert_eq!(Tenants::owner_of(&r).as_deref(), Some("lab"));
        // A digest user with another password is somebody else.
        let raw = [id("digest", "lab:other")];
        let r = t.resolve(&raw);
        assert_eq!(&*r, &[id("digest", "lab:other")]);
        // Claiming a tenant outright gets nothing, even in an empty table.
        let empty = Tenants::default();
        assert_eq!(&*empty.resolve(&[id("tenant", "lab")]), &[] as &[Id]);
    }

    #[test]
    fn declarations_are_validated() {
        let mut t = Tenants::default();
        t.put("hospital", tenant(&[("org", "St Mary")]));
        assert!(validate(&t, "lab", &tenant(&[("org", "Lab")])).is_ok());
        assert!(validate(&t, "hospital", &tenant(&[("org", "St Mary")])).is_ok());
        for (name, members) in [
            ("bad/name", vec![]),
            ("..", vec![]),
            ("", vec![]),
            ("lab", vec![("org", "St Mary")]),
            ("lab", vec![("digest", "lab")]),
            ("lab", vec![("ip", "10.0.0.1")]),
            ("lab", vec![("tenant", "hospital")]),
        ] {
            assert!(
                validate(&t, name, &tenant(&members)).is_err(),
                "{name} {members:?} accepted"
            );
        }
    }

    #[test]
    fn charges_stop_exactly_at_the_quota() {
        let mut t = Tenants::default();
        let mut lab = tenant(&[("org", "Lab")]);
        lab.quota = Quota {
            znodes: Some(2),
            bytes: Some(10),
            ephemerals: Some(1),
            sessions: Some(1),
            watches: None,
        };
        t.put("lab", lab);
        let owner: Name = "lab".into();
        assert!(t.charge(&owner, 4, true, true, true));
        assert!(!t.charge(&owner, 1, true, true, true), "second ephemeral");
        assert!(!t.charge(&owner, 7, false, true, true), "eleven bytes");
        assert!(t.charge(&owner, 6, false, true, true));
        assert!(!t.charge(&owner, 0, false, true, true), "third znode");
        assert_eq!(
            t.usage("lab"),
            Usage {
                znodes: 2,
                bytes: 10,
                ephemerals: 1,
                sessions: 0,
            }
        );
        assert!(!t.recharge_bytes(&owner, 6, 7));
        assert!(t.recharge_bytes(&owner, 6, 1));
        assert!(t.charge(&owner, 4, true, false, true));
        assert_eq!(t.usage("lab").bytes, 1);
        assert!(t.charge(&owner, 1, false, false, true));
        assert_eq!(t.usage("lab"), Usage::default());
        assert!(t.charge_session(&owner, true, true));
        assert!(!t.charge_session(&owner, true, true), "a second session");
        assert!(t.charge_session(&owner, false, true));
        assert_eq!(t.usage("lab"), Usage::default());
    }
}
