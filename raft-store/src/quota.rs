//! ZooKeeper's own quotas, as its clients set them (`setquota`, `listquota`, `delquota`): a
//! quota on path P is the node `/zookeeper/quota<P>/zookeeper_limits`, whose data is a
//! ZooKeeper `StatsTrack` string (`count=10,bytes=-1`, and since 3.7 the hard limits after it:
//! `count=-1,bytes=-1=;byteHardLimit=-1;countHardLimit=10`); beside it the server keeps
//! `zookeeper_stats` (`count=3,bytes=12`: the znodes of P's subtree, P included, and their data
//! bytes) up to date on every change below P. The nearest quota above a node is the one that
//! counts. Soft limits are only logged; hard limits are refused with `QuotaExceeded` — always
//! (ZooKeeper refuses them only with `zookeeper.enforceQuota=true`). The DataTree applies all
//! of this ([`crate::tree`]); this module reads and writes the strings and names the paths.

use std::collections::BTreeMap;

/// Where quotas live.
pub const QUOTA_ROOT: &str = "/zookeeper/quota";
/// The node holding a quota's limits.
pub const LIMIT_NODE: &str = "zookeeper_limits";
/// The node holding a quota's usage, kept by the server.
pub const STAT_NODE: &str = "zookeeper_stats";

/// The quota path P that `path` (`/zookeeper/quota<P>/<name>`) is the `name` node of, if it is
/// one: `("P", name)`.
pub fn quota_node(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix(QUOTA_ROOT)?;
    let (p, name) = rest.rsplit_once('/')?;
    (!p.is_empty() && (name == LIMIT_NODE || name == STAT_NODE)).then_some((p, name))
}

/// The stats node of the quota on `p`.
pub fn stat_path(p: &str) -> String {
    format!("{QUOTA_ROOT}{p}/{STAT_NODE}")
}

/// The limits node of the quota on `p`.
pub fn limit_path(p: &str) -> String {
    format!("{QUOTA_ROOT}{p}/{LIMIT_NODE}")
}

/// A `StatsTrack` string's values, as ZooKeeper reads them: pairs `key=value` separated by `,`
/// or `;`, a missing value (`bytes=` or the `bytes=5=` of the newer format) read as written
/// before its `=`; anything absent is -1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsTrack(BTreeMap<String, i64>);

impl StatsTrack {
    pub fn parse(data: &[u8]) -> StatsTrack {
        let text = String::from_utf8_lossy(data);
        let mut out = BTreeMap::new();
        for pair in text.split([',', ';']).filter(|p| !p.is_empty()) {
            let mut kv = pair.split('=');
            let (Some(k), Some(v)) = (kv.next(), kv.next()) else {
                continue;
            };
            let v = if v.is_empty() {
                Ok(-1)
            } else {
                v.trim().parse()
            };
            if let Ok(v) = v {
                out.insert(k.trim().to_string(), v);
            }
        }
        StatsTrack(out)
    }

    pub fn get(&self, key: &str) -> i64 {
        self.0.get(key).copied().unwrap_or(-1)
    }

    pub fn count(&self) -> i64 {
        self.get("count")
    }

    pub fn bytes(&self) -> i64 {
        self.get("bytes")
    }

    /// A usage string, as ZooKeeper writes `zookeeper_stats`.
    pub fn usage(count: i64, bytes: i64) -> Vec<u8> {
        format!("count={count},bytes={bytes}").into_bytes()
    }
}

/// Why a change below a quota is refused: the hard limit it would pass.
pub fn over_hard_limit(limits: &StatsTrack, stats: &StatsTrack, count: i64, bytes: i64) -> bool {
    let hard_count = limits.get("countHardLimit");
    let hard_bytes = limits.get("byteHardLimit");
    (count != 0 && hard_count > -1 && stats.count().saturating_add(count) > hard_count)
        || (bytes != 0 && hard_bytes > -1 && stats.bytes().saturating_add(bytes) > hard_bytes)
}

/// Whether the change passes a soft limit (ZooKeeper logs "Quota exceeded" and goes on).
pub fn over_soft_limit(limits: &StatsTrack, stats: &StatsTrack, count: i64, bytes: i64) -> bool {
    (count != 0 && limits.count() > -1 && stats.count().saturating_add(count) > limits.count())
        || (bytes != 0
            && limits.bytes() > -1
            && stats.bytes().saturating_add(bytes) > limits.bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_strings_read_as_zookeeper_reads_them() {
        let old = StatsTrack::parse(b"count=10,bytes=-1");
        assert_eq!(
            (old.count(), old.bytes(), old.get("countHardLimit")),
            (10, -1, -1)
        );
        let new = StatsTrack::parse(b"count=-1,bytes=-1=;byteHardLimit=-1;countHardLimit=3");
        assert_eq!((new.count(), new.get("countHardLimit")), (-1, 3));
        assert_eq!(StatsTrack::parse(b"").count(), -1);
        assert_eq!(StatsTrack::parse(b"count=,bytes=x").count(), -1);
        assert_eq!(StatsTrack::usage(3, 12), b"count=3,bytes=12");
    }

    #[test]
    fn hard_limits_refuse_and_soft_limits_only_warn() {
        let limits = StatsTrack::parse(b"count=2,bytes=-1=;byteHardLimit=10;countHardLimit=3");
        let stats = StatsTrack::parse(b"count=3,bytes=9");
        assert!(over_hard_limit(&limits, &stats, 1, 0));
        assert!(!over_hard_limit(&limits, &stats, 0, 1));
        assert!(over_hard_limit(&limits, &stats, 0, 2));
        assert!(!over_hard_limit(&limits, &stats, -1, -9));
        assert!(over_soft_limit(&limits, &stats, 1, 0));
    }

    #[test]
    fn quota_nodes_are_named_by_their_path() {
        assert_eq!(
            quota_node("/zookeeper/quota/a/b/zookeeper_limits"),
            Some(("/a/b", LIMIT_NODE))
        );
        assert_eq!(
            quota_node("/zookeeper/quota/a/zookeeper_stats"),
            Some(("/a", STAT_NODE))
        );
        assert_eq!(quota_node("/zookeeper/quota/zookeeper_limits"), None);
        assert_eq!(quota_node("/a/zookeeper_limits"), None);
        assert_eq!(stat_path("/a"), "/zookeeper/quota/a/zookeeper_stats");
        assert_eq!(limit_path("/a"), "/zookeeper/quota/a/zookeeper_limits");
    }
}
