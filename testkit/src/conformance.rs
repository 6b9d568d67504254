//! The conformance suite: client-visible ZooKeeper behaviour, checked through the synod client
//! against any [`Ensemble`]. The same cases run against a real Apache ZooKeeper 3.8 ensemble
//! (testkit/tests/conformance.rs, the oracle) and against a synod cluster
//! (server/tests/conformance.rs); every difference is a bug.
//!
//! A case that must kill a server is reported as ignored (with the reason on stderr) against an
//! ensemble that cannot kill one (an external server list).
//!
//! Every case works in its own subtree `/conformance/<case>-<n>`, so cases never see each other.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ensemble::Ensemble;
use futures_util::FutureExt;
use libtest_mimic::{Arguments, Failed, Trial};
use synod_client::{
    perms, Acl, AddWatchMode, Client, ConnectOptions, CreateMode, Error, ErrorCode, EventType,
    KeeperState, MultiResult, Op, SessionState, WatcherType,
};

type CaseResult = Result<(), String>;
type CaseFn = fn(Ctx) -> Pin<Box<dyn Future<Output = CaseResult> + Send>>;

/// What every case gets: the servers and a private root path.
#[derive(Clone)]
struct Ctx {
    ens: Arc<dyn Ensemble>,
    servers: String,
    root: String,
}

macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}", file!(), line!(), format!($($fmt)+)));
        }
    };
}

macro_rules! check_eq {
    ($a:expr, $b:expr) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            return Err(format!(
                "{}:{}: {} = {:?}, expected {:?}",
                file!(),
                line!(),
                stringify!($a),
                a,
                b
            ));
        }
    }};
}

/// `?` for client results inside cases, naming the failing expression.
macro_rules! ok {
    ($e:expr) => {
        $e.map_err(|e| format!("{}:{}: {} failed: {e:?}", file!(), line!(), stringify!($e)))?
    };
}

/// Asserts that an expression fails with the given error variant.
macro_rules! fails {
    ($e:expr, $pat:pat) => {
        match $e {
            Err($pat) => {}
            other => {
                return Err(format!(
                    "{}:{}: {} = {other:?}, expected {}",
                    file!(),
                    line!(),
                    stringify!($e),
                    stringify!($pat)
                ))
            }
        }
    };
}

impl Ctx {
    async fn client(&self) -> Result<Client, String> {
        self.client_with(ConnectOptions::default()).await
    }

    async fn client_with(&self, opts: ConnectOptions) -> Result<Client, String> {
        self.client_at(&self.servers, opts).await
    }

    /// A client of the leader, if the ensemble names one (else of any server, as
    /// [`Ctx::client`]): its writes are answered once the leader itself has applied them.
    async fn leader_client(&self) -> Result<Client, String> {
        match self.ens.leader() {
            Some(idx) => {
                let addrs = self.ens.addrs();
                let addr = addrs
                    .get(idx)
                    .ok_or_else(|| format!("the leader {idx} has no address in {addrs:?}"))?;
                self.client_at(&addr.to_string(), ConnectOptions::default())
                    .await
            }
            None => self.client().await,
        }
    }

    /// A client with no authenticated identity. Over TLS it presents no certificate: a
    /// certificate's `x509` identity counts for `auth`/creator ACLs, as in ZooKeeper, so a
    /// case about unauthenticated clients needs one without (the TLS ensemble then runs with
    /// `--client-auth optional`).
    async fn anonymous_client(&self) -> Result<Client, String> {
        let opts = ConnectOptions {
            tls: self.ens.anonymous_tls(),
            ..ConnectOptions::default()
        };
        self.client_at(&self.servers, opts).await
    }

    /// A client of `servers` (a connect string), speaking TLS if the ensemble needs it.
    async fn client_at(&self, servers: &str, mut opts: ConnectOptions) -> Result<Client, String> {
        if opts.tls.is_none() {
            opts.tls = self.ens.tls();
        }
        Client::connect(servers, opts)
            .await
            .map_err(|e| format!("connect to {servers}: {e}"))
    }

    fn p(&self, rel: &str) -> String {
        format!("{}/{}", self.root, rel)
    }
}

/// Polls `f` until it returns true or `timeout` passes.
async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Awaits a future with a bound, as a case failure when it does not finish.
async fn within<T>(d: Duration, what: &str, f: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(d, f)
        .await
        .map_err(|_| format!("timed out after {d:?} waiting for {what}"))
}

const T: Duration = Duration::from_secs(10);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Basic operations and Stat fields
// ---------------------------------------------------------------------------------------------

async fn create_get_and_stat_fields(ctx: Ctx) -> CaseResult {
    let zk = ctx.client().await?;
    let before = now_ms();
    let (path, stat) = ok!(zk
        .create_full(
            &ctx.p("a"),
            b"hello",
            &Acl::open_unsafe(),
            CreateMode::Persistent,
            None
        )
        .await);
    check_eq!(path, ctx.p("a"));
    let (data, got) = ok!(zk.get_data(&ctx.p("a")).await);
    check_eq!(&data[..], b"hello");
    check_eq!(got, stat);
    check!(
        stat.czxid > 0 && stat.czxid == stat.mzxid && stat.pzxid == stat.czxid,
        "zxids of a new node: {stat:?}"
    );
    check_eq!((stat.version, stat.cversion, stat.aversion), (0, 0, 0));
    check_eq!(
        (stat.ephemeral_owner, stat.data_length, stat.num_children),
        (0, 5, 0)
    );
    check!(stat.ctime == stat.mtime, "ctime != mtime on create");
    check!(
        (stat.ctime - before).abs() < 60_000,
        "ctime {} far from now {before}",
        stat.ctime
    );
    let plain = ok!(zk.create(&ctx.p("b"), b"", CreateMode::Persistent).await);
    check_eq!(plain, ctx.p("b"));
    check_eq!(
        ok!(zk.exists(&ctx.p("b")).await).map(|s| s.data_length),
        Some(0)
    );
    check_eq!(ok!(zk.exists(&ctx.p("missing")).await), None);
    Ok(())
}

async fn set_data_and_versions(ctx: Ctx) -> CaseResult {
    let zk = ctx.client().await?;
    let p = ctx.p("v");
    ok!(zk.create(&p, b"1", CreateMode::Persistent).await);
    let s0 = ok!(zk.exists(&p).await).ok_or("node vanished")?;
    let s1 = ok!(zk.set_data(&p, b"22", Some(0)).await);
    check_eq!(s1.version, 1);
    check_eq!(s1.czxid, s0.czxid);
    check!(
        s1.mzxid > s0.mzxid,
        "mzxid must grow: {} -> {}",
        s0.mzxid,
        s1.mzxid
    );
    check_eq!(s1.data_length, 2);
    check_eq!(s1.pzxid, s0.pzxid);
    check!(s1.mtime >= s0.mtime, "mtime went back");
    fails!(zk.set_data(&p, b"x", Some(0)).await, Error::BadVersion);
    let s2 = ok!(zk.set_data(&p, b"333", None).await);
    check_eq!(s2.version, 2);
    fails!(zk.set_data(&ctx.p("nope"), b"x", None).await, Error::NoNode);
    fails!(zk.delete(&p, Some(1)).await, Error::BadVersion);
    ok!(zk.delete(&p, Some(2)).await);
    fails!(zk.delete(&p, None).await, Error::NoNode);
    Ok(())
}

/// Null data (jute length -1) is not empty data: it reads back null, through getData and
/// multiRead alike, until set to something (even empty), and can be set null again.
async fn null_data_is_not_empty(ctx: Ctx) -> CaseResult {
    let zk = ctx.client().await?;
    let (null, empty) = (ctx.p("null"), ctx.p("empty"));
    ok!(zk.create_null(&null, CreateMode::Persistent).await);
    ok!(zk.create(&empty, b"", CreateMode::Persistent).await);
    let (data, stat) = ok!(zk.get_data_nullable(&null).await);
    check_eq!((data, stat.data_length), (None, 0));
    let (data, stat) = ok!(zk.get_data_nullable(&empty).await);
    check_eq!((data.as_deref(), stat.data_length), (Some(&b""[..]), 0));
    let r = ok!(zk
        .multi_read(vec![Op::get_data(&null), Op::get_data(&empty)])
        .await);
    let datas: Vec<Option<Vec<u8>>> = r
        .iter()
        .map(|r| match r {
            MultiResult::GetData { data, .. } => data.as_ref().map(|d| d.to_vec()),
            _ => Some(b"not a getData result".to_vec()),
        })
        .collect();
    check_eq!(datas, vec![None, Some(Vec::new())]);
    let s = ok!(zk.set_data(&null, b"", None).await);
    check_eq!(s.version, 1);
    let (data, _) = ok!(zk.get_data_nullable(&null).await);
    check_eq!(data.as_deref(), Some(&b""[..]));
    let s = ok!(zk.set_null(&empty, None).await);
    check_eq!((s.version, s.data_length), (1, 0));
    let (data, _) = ok!(zk.get_data_nullable(&empty).await);
    check_eq!(data, None);
    Ok(())
}

async fn create_errors(ctx: Ctx) -> CaseResult {
    // Unauthenticated: the creator ACL below must find no identity to grant to.
    let zk = ctx.anonymous_client().await?;
    ok!(zk.create(&ctx.p("x"), b"", CreateMode::Persistent).await);
    fails!(
        zk.create(&ctx.p("x"), b"", CreateMode::Persistent).await,
        Error::NodeExists
    );
    fails!(
        zk.create(&ctx.p("no/parent"), b"", CreateMode::Persistent)
            .await,
        Error::NoNode
    );
    ok!(zk.create(&ctx.p("eph"), b"", CreateMode::Ephemeral).await);
    fails!(
        zk.create(&ctx.p("eph/child"), b"", CreateMode::Persistent)
            .await,
        Error::NoChildrenForEphemerals
    );
    fails!(
        zk.create_full(&ctx.p("empty-acl"), b"", &[], CreateMode::Persistent, None)
            .await,
        Error::InvalidAcl
    );
    fails!(
        zk.create_full(
            &ctx.p("creator"),
            b"",
            &Acl::creator_all(),
            CreateMode::Persistent,
            None
        )
        .await,
        Error::InvalidAcl
    );
    fails!(
        zk.create("relative", b"", CreateMode::Persistent).await,
        Error::InvalidPath(_)
    );
    fails!(
        zk.create(&ctx.p("trailing/"), b"", CreateMode::Persistent)
            .await,
        Error::InvalidPath(_)
    );
    check_eq!(
        zk.create("bad", b"", CreateMode::Persistent)
            .await
            .err()
            .and_then(|e| e.code()),
        Some(ErrorCode::BadArguments)
    );
    fails!(zk.delete(&ctx.root, None).await, Error::NotEmpty);
    Ok(())
}

async fn sequential_naming(ctx: Ctx) -> CaseResult {
    let zk = ctx.client().await?;
    let parent = ctx.p("seq");
    ok!(zk.create(&parent, b"", CreateMode::Persistent).await);
    let mut names = Vec::new();
    for _ in 0..3 {
        names.push(ok!(zk
            .create(
                &format!("{parent}/n-"),
                b"",
                CreateMode::PersistentSequential
            )
            .await));
    }
    check_eq!(
        names,
        vec![
            format!("{parent}/n-0000000000"),
            format!("{parent}/n-0000000001"),
            format!("{parent}/n-0000000002")
        ]
    );
    ok!(zk
        .create(&format!("{parent}/plain"), b"", CreateMode::Persistent)
        .await);
    let eph = ok!(zk
        .create(
            &format!("{parent}/e-"),
            b"",
            CreateMode::EphemeralSequential
        )
        .await);
    check_eq!(eph, format!("{parent}/e-0000000004"));
    ok!(zk.delete(&format!("{parent}/plain"), None).await);
    // The counter is the parent's cversion, which deletes bump too.
    // (ZooKeeper's leader may name it from a parent record that predates the delete's cversion
    // bump, so only the order is checked here; synod counts deterministically.)
    let after = ok!(zk
        .create(
            &format!("{parent}/n-"),
            b"",
            CreateMode::PersistentSequential
        )
        .await);
    let seq = |p: &str| p[p.len() - 10..].parse::<u32>().unwrap_or(0);
    check!(
        after.len() == format!("{parent}/n-").len() + 10 && seq(&after) > 4,
        "sequence after delete: {after}"
    );
    // A sequential name may end in '/': the counter is the whole last component.
    let bare = ok!(zk
        .create(&format!("{parent}/"), b"", CreateMode::PersistentSequential)
        .await);
    check!(
        bare.len() == parent.len() + 11 && seq(&bare) > seq(&after),
        "bare sequential name: {bare}"
    );
    let st = ok!(zk.exists(&parent).await).ok_or("parent gone")?;
    check_eq!((st.cversion, st.num_children), (8, 6));
    Ok(())
}

async fn children_and_parent_stat(ctx: Ctx) -> CaseResult {
    let zk = ctx.client().await?;
    let parent = ctx.p("kids");
    let (_, p0) = ok!(zk
        .create_full(
            &parent,
            b"",
            &Acl::open_unsafe(),
            CreateMode::Persistent,
            None
        )
        .await);
    let (_, c1) = ok!(zk
        .create_full(
            &format!("{parent}/a"),
            b"",
            &Acl::open_unsafe(),
            CreateMode::Persistent,
            None
        )
        .await);
    ok!(zk
        .create(&format!("{parent}/b"), b"", CreateMode::Persistent)
        .await);
    let mut kids = ok!(zk.get_children(&parent).await);
    kids.sort();
    check_eq!(kids, vec!["a".to_string(), "b".to_string()]);
    let (kids2, st) = ok!(zk.get_children2(&parent).await);
    check_eq!(kids2.len(), 2);
    check_eq!((st.num_children, st.cversion, st.version), (2, 2, 0));
    check!(
        st.pzxid > c1.czxid,
        "pzxid {} must be the last child create",
        st.pzxid
    );
    check_eq!(st.mzxid, p0.mzxid);
    ok!(zk.delete(&format!("{parent}/a"), None).await);
    let st2 = ok!(zk.exists(&parent).await).ok_or("gone")?;
    check_eq!((st2.num_children, st2.cversion), (1, 3));
    check!(st2.pzxid > st.pzxid, "delete must move pzxid");
    fails!(zk.get_children(&ctx.p("missing")).await, Error::NoNode);
    check_eq!(ok!(zk.get_all_children_number(&ctx.root).await), 2);
    fails!(
        zk.get_all_children_number(&ctx.p("missing")).await,
        Error::NoNode
    );
    Ok(())
}

async fn acls_and_digest_auth(ctx: Ctx) -> CaseResult {
    // Unauthenticated until `addauth`: the creator ACL must hold the digest identity alone.
    let zk = ctx.anonymous_client().await?;
    let p = ctx.p("ro");
    ok!(zk
        .create_full(&p, b"x", &Acl::read_unsafe(), CreateMode::Persistent, None)
        .await);
    let (acl, st) = ok!(zk.get_acl(&p).await);
    check_eq!(acl, Acl::read_unsafe());
    check_eq!(st.aversion, 0);
    fails!(zk.set_data(&p, b"y", None).await, Error::NoAuth);
    fails!(
        zk.set_acl(&p, &Acl::open_unsafe(), None).await,
        Error::NoAuth
    );
    // Digest auth: the creator's id is `user:base64(sha1(user:password))`.
    ok!(zk.add_auth("digest", b"alice:secret").await);
    let sec = ctx.p("secret");
    ok!(zk
        .create_full(
            &sec,
            b"s",
            &Acl::creator_all(),
            CreateMode::Persistent,
            None
        )
        .await);
    let (acl, _) = ok!(zk.get_acl(&sec).await);
    check_eq!(acl.len(), 1);
    check_eq!(
        (acl[0].perms, acl[0].id.scheme.as_str()),
        (perms::ALL, "digest")
    );
    check_eq!(acl[0].id.id.as_str(), "alice:aYXlLOpEooaV1cRAvUL1fp9Qt7E=");
    let other = ctx.anonymous_client().await?;
    fails!(other.get_data(&sec).await, Error::NoAuth);
    ok!(other.add_auth("digest", b"alice:secret").await);
    check_eq!(&ok!(other.get_data(&sec).await).0[..], b"s");
    // setACL bumps aversion and checks it.
    let st = ok!(zk.set_acl(&sec, &Acl::open_unsafe(), Some(0)).await);
    check_eq!(st.aversion, 1);
    fails!(
        zk.set_acl(&sec, &Acl::open_unsafe(), Some(0)).await,
        Error::BadVersion
    );
    fails!(zk.get_acl(&ctx.p("none")).await, Error::NoNode);
    Ok(())
}

/// The client's default ACL ([`ConnectOptions::default_acl`]) is what `create` and a multi's
/// create send when they name none: here the creator's identity alone.
async fn default_acl_applies_to_creates(ctx: Ctx) -> CaseResult {
    let opts = ConnectOptions {
        tls: ctx.ens.anonymous_tls(),
        ..ConnectOptions::default()
    }
    .default_acl(Acl::creator_all());
    let zk = ctx.client_at(&ctx.servers, opts).await?;
    ok!(zk.add_auth("digest", b"alice:secret").await);
    let alice = vec![Acl::new(
        perms::ALL,
        "digest",
        "alice:aYXlLOpEooaV1cRAvUL1fp9Qt7E=",
    )];
    let p = ctx.p("private");
    ok!(zk.create(&p, b"x", CreateMode::Persistent).await);
    check_eq!(ok!(zk.get_acl(&p).await).0, alice);
    let q = ctx.p("in-multi");
    ok!(zk
        .multi(vec![Op::create(&q, &b""[..], CreateMode::Persistent)])
        .await);
    check_eq!(ok!(zk.get_acl(&q).await).0, alice);
    let other = ctx.anonymous_client().await?;
    fails!(other.get_data(&p).await, Error::NoAuth);
    Ok(())
}

/// ZooKeeper's quotas as zkCli's `setquota` writes them: `zookeeper_limits` under
/// `/zookeeper/quota<path>`, then `zookeeper_stats`, which the server fills with the subtree's
/// usage (the quota's own node included) and keeps up to date on every change below it, without
/// a version change. A hard count or byte limit refuses the change that would pass it with
/// QuotaExceeded (ZooKeeper with `zookeeper.enforceQuota=true`, synod always), also inside a
/// multi, which then changes nothing; a soft limit does not.
async fn zookeeper_quotas(ctx: Ctx) -> CaseResult {
    // Through the leader: ZooKeeper checks a quota as the leader prepares a change, against the
    // leader's tree, and a follower may acknowledge a create before the leader has applied it
    // (the CI of stop 45 saw the oracle take a fifth znode that way). A client of the leader is
    // answered only once the leader applied its change.
    let zk = ctx.leader_client().await?;
    let q = ctx.p("q");
    ok!(zk.create(&q, b"12345", CreateMode::Persistent).await);
    ok!(zk
        .create(&format!("{q}/a"), b"", CreateMode::Persistent)
        .await);
    // setquota -N 4 -B 20: hard limits (and no soft ones), as zkCli writes them.
    let quota = format!("/zookeeper/quota{q}");
    let mut at = String::from("/zookeeper/quota");
    for part in q.trim_start_matches('/').split('/') {
        at = format!("{at}/{part}");
        match zk.create(&at, b"", CreateMode::Persistent).await {
            Ok(_) | Err(Error::NodeExists) => {}
            Err(e) => return Err(format!("create {at}: {e:?}")),
        }
    }
    let limits = b"count=-1,bytes=-1=;byteHardLimit=20;countHardLimit=4";
    ok!(zk
        .create(
            &format!("{quota}/zookeeper_limits"),
            limits,
            CreateMode::Persistent
        )
        .await);
    ok!(zk
        .create(
            &format!("{quota}/zookeeper_stats"),
            b"count=0,bytes=0",
            CreateMode::Persistent
        )
        .await);
    let stats = || async { zk.get_data(&format!("{quota}/zookeeper_stats")).await };
    let (data, stat) = ok!(stats().await);
    check_eq!(String::from_utf8_lossy(&data), "count=2,bytes=5");
    check_eq!(stat.version, 0);
    ok!(zk
        .create(&format!("{q}/b"), b"123", CreateMode::Persistent)
        .await);
    ok!(zk.set_data(&format!("{q}/a"), b"1234", None).await);
    let (data, stat) = ok!(stats().await);
    check_eq!(String::from_utf8_lossy(&data), "count=3,bytes=12");
    check_eq!(stat.version, 0);
    // Four znodes is the hard limit: a fifth is refused, and so is a 21st byte.
    ok!(zk
        .create(&format!("{q}/c"), b"", CreateMode::Persistent)
        .await);
    fails!(
        zk.create(&format!("{q}/d"), b"", CreateMode::Persistent)
            .await,
        Error::QuotaExceeded
    );
    fails!(
        zk.set_data(&format!("{q}/b"), b"123456789012", None).await,
        Error::QuotaExceeded
    );
    ok!(zk.set_data(&format!("{q}/b"), b"12345678901", None).await);
    // A multi that deletes one and creates two crosses the limit at its last op.
    let r = zk
        .multi(vec![
            Op::delete(&format!("{q}/c"), None),
            Op::create(&format!("{q}/e"), &b""[..], CreateMode::Persistent),
            Op::create(&format!("{q}/f"), &b""[..], CreateMode::Persistent),
        ])
        .await;
    match r {
        Err(Error::Multi { code, .. }) => check_eq!(code, ErrorCode::QuotaExceeded),
        other => return Err(format!("the multi crossing the quota: {other:?}")),
    }
    check!(
        ok!(zk.exists(&format!("{q}/c")).await).is_some(),
        "the multi deleted {q}/c"
    );
    let (data, _) = ok!(stats().await);
    check_eq!(String::from_utf8_lossy(&data), "count=4,bytes=20");
    // Deletes count down; without the limits node nothing is counted or refused.
    ok!(zk.delete(&format!("{q}/c"), None).await);
    let (data, _) = ok!(stats().await);
    check_eq!(String::from_utf8_lossy(&data), "count=3,bytes=20");
    ok!(zk.delete(&format!("{quota}/zookeeper_limits"), None).await);
    ok!(zk
        .create(&format!("{q}/d"), b"", CreateMode::Persistent)
        .await);
    ok!(zk
        .create(&format!("{q}/e"), b"", CreateMode::Persistent)
        .await);
    let (data, _) = ok!(stats().await);
    check_eq!(String::from_utf8_lossy(&data), "count=3,bytes=20");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// multi
// ---------------------------------------------------------------------------------------------

async fn multi_success(ctx: Ctx) -> CaseResult {
    let zk = ctx.client().await?;
    ok!(zk.create(&ctx.p("m"), b"0", CreateMode::Persistent).await);
    let results = ok!(zk
        .multi(vec![
            Op::create(&ctx.p("m1"), &b"a"[..], CreateMode::Persistent),
            Op::create(&ctx.p("s-"), &b""[..], CreateMode::PersistentSequential),
            Op::set_data(&ctx.p("m"), &b"1"[..], Some(0)),
            Op::check(&ctx.p("m"), 1),
            Op::delete(&ctx.p("m1"), Some(0)),
        ])
        .await);
    check_eq!(results.len(), 5);
    check_eq!(
        results[0],
        MultiResult::Create {
            path: ctx.p("m1"),
            stat: None
        }
    );
    check_eq!(
        results[1],
        MultiResult::Create {
            path: ctx.p("s-0000000002"),
            stat: None
        }
    );
    let MultiResult::SetData { stat } = &results[2] else {
        return Err(format!("setData result {:?}", results[2]));
    };
    check_eq!(stat.version, 1);
    check_eq!(results[3], MultiResult::Check);
    check_eq!(results[4], MultiResult::Delete);
    check_eq!(ok!(zk.exists(&ctx.p("m1")).await), None);
    // All ops of one multi share one zxid.
    let s = ok!(zk.exists(&ctx.p("s-0000000002")).await).ok_or("sequential node missing")?;
    check_eq!(s.czxid, stat.mzxid);
    check_eq!(ok!(zk.multi(vec![]).await), vec![]);
    ok!(zk.check(&ctx.p("m"), 1).await);
    fails!(zk.check(&ctx.p("m"), 7).await, Error::BadVersion);
    fails!(zk.check(&ctx.p("none"), 0).await, Error::NoNode);
    Ok(())
}

async fn multi_failure_is_all_or_nothing(ctx: Ctx) -> CaseResult {
    let zk = ctx.client().await?;
    ok!(zk
        .create(&ctx.p("exists"), b"", CreateMode::Persistent)
        .await);
    let r = zk
        .multi(vec![
            Op::create(&ctx.p("new"), &b""[..], CreateMode::Persistent),
            Op::create(&ctx.p("exists"), &b""[..], CreateMode::Persistent),
            Op::set_data(&ctx.p("exists"), &b"x"[..], None),
        ])
        .await;
    let Err(Error::Multi {
        index,
        code,
        results,
    }) = r
    else {
        return Err(format!("expected a failed multi, got {r:?}"));
    };
    check_eq!((index, code), (1, ErrorCode::NodeExists));
    check_eq!(
        results,
        vec![
            MultiResult::Error(ErrorCode::Ok),
            MultiResult::Error(ErrorCode::NodeExists),
            MultiResult::Error(ErrorCode::RuntimeInconsistency)
        ]
    );
    check_eq!(ok!(zk.exists(&ctx.p("new")).await), None);
    check_eq!(
        ok!(zk.exists(&ctx.p("exists")).await).map(|s| s.version),
        Some(0)
    );
    let r = zk
        .multi(vec![
            Op::check(&ctx.p("exists"), 3),
            Op::delete(&ctx.p("exists"), None),
        ])
        .await;
    check!(
        matches!(
            r,
            Err(Error::Multi {
                index: 0,
                code: ErrorCode::BadVersion,
                ..
            })
        ),
        "check failure: {r:?}"
    );
    check!(
        ok!(zk.exists(&ctx.p("exists")).await).is_some(),
        "delete applied despite failed check"
    );
    Ok(())
}

async fn multi_read_results(ctx: Ctx) -> CaseResult {
    let zk = ctx.client().await?;
    ok!(zk
        .create(&ctx.p("d"), b"data", CreateMode::Persistent)
        .await);
    ok!(zk.create(&ctx.p("d/c"), b"", CreateMode::Persistent).await);
    let r = ok!(zk
        .multi_read(vec![
            Op::get_data(&ctx.p("d")),
            Op::get_children(&ctx.p("d")),
            Op::get_data(&ctx.p("none"))
        ])
        .await);
    check_eq!(r.len(), 3);
    let MultiResult::GetData { data, stat } = &r[0] else {
        return Err(format!("{:?}", r[0]));
    };
    check_eq!(
        (data.as_deref(), stat.num_children),
        (Some(&b"data"[..]), 1)
    );
    check_eq!(
        r[1],
        MultiResult::GetChildren {
            children: vec!["c".into()]
        }
    );
    check_eq!(r[2], MultiResult::Error(ErrorCode::NoNode));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Ephemeral, container and TTL nodes
// ---------------------------------------------------------------------------------------------

async fn ephemerals_end_with_their_session(ctx: Ctx) -> CaseResult {
    let zk = ctx.client().await?;
    let (_, st) = ok!(zk
        .create_full(
            &ctx.p("e1"),
            b"",
            &Acl::open_unsafe(),
            CreateMode::Ephemeral,
            None
        )
        .await);
    check_eq!(st.ephemeral_owner, zk.session_id());
    ok!(zk.create(&ctx.p("dir"), b"", CreateMode::Persistent).await);
    ok!(zk
        .create(&ctx.p("dir/e2"), b"", CreateMode::Ephemeral)
        .await);
    let mut eph = ok!(zk.get_ephemerals(&ctx.root).await);
    eph.sort();
    check_eq!(eph, vec![ctx.p("dir/e2"), ctx.p("e1")]);
    let other = ctx.client().await?;
    check_eq!(ok!(other.get_ephemerals("/").await), Vec::<String>::new());
    let (_, _, gone) = ok!(other.get_data_watch(&ctx.p("e1")).await);
    ok!(zk.close().await);
    check_eq!(zk.state(), SessionState::Closed);
    fails!(zk.get_data(&ctx.p("e1")).await, Error::Closed);
    let ev = within(T, "NodeDeleted of an ephemeral", gone).await?;
    check_eq!(
        (ev.event_type, ev.path),
        (EventType::NodeDeleted, ctx.p("e1"))
    );
    check_eq!(ok!(other.exists(&ctx.p("dir/e2")).await), None);
    Ok(())
}

async fn container_nodes_are_reaped(ctx: Ctx) -> CaseResult {
    let zk = ctx.client().await?;
    ok!(zk.create(&ctx.p("c"), b"", CreateMode::Container).await);
    ok!(zk
        .create(&ctx.p("never-used"), b"", CreateMode::Container)
        .await);
    ok!(zk.create(&ctx.p("c/x"), b"", CreateMode::Persistent).await);
    ok!(zk.delete(&ctx.p("c/x"), None).await);
    let p = ctx.p("c");
    check!(
        eventually(Duration::from_secs(20), || async {
            matches!(zk.exists(&p).await, Ok(None))
        })
        .await,
        "empty container not reaped"
    );
    check!(
        ok!(zk.exists(&ctx.p("never-used")).await).is_some(),
        "a container that never had children was reaped"
    );
    Ok(())
}

async fn ttl_nodes_expire(ctx: Ctx) -> CaseResult {
    let zk = ctx.client().await?;
    let ttl = Some(Duration::from_millis(500));
    let (p, st) = ok!(zk
        .create_full(
            &ctx.p("t"),
            b"",
            &Acl::open_unsafe(),
            CreateMode::PersistentWithTtl,
            ttl
        )
        .await);
    let now = ok!(zk.exists(&p).await).ok_or("TTL node missing")?;
    check_eq!(now, st);
    check_eq!(st.ephemeral_owner, 0); // the TTL is not visible in the Stat
    let (sp, _) = ok!(zk
        .create_full(
            &ctx.p("ts-"),
            b"",
            &Acl::open_unsafe(),
            CreateMode::PersistentSequentialWithTtl,
            ttl
        )
        .await);
    check_eq!(sp, ctx.p("ts-0000000001"));
    fails!(
        zk.create_full(
            &ctx.p("bad"),
            b"",
            &Acl::open_unsafe(),
            CreateMode::Persistent,
            ttl
        )
        .await,
        Error::BadArguments
    );
    check!(
        eventually(Duration::from_secs(20), || async {
            matches!(zk.exists(&p).await, Ok(None))
        })
        .await,
        "TTL node not reaped"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Watches
// ---------------------------------------------------------------------------------------------

async fn data_watch_fires_before_the_read_that_shows_the_change(ctx: Ctx) -> CaseResult {
    let a = ctx.client().await?;
    let b = ctx.client().await?;
    let p = ctx.p("w");
    ok!(a.create(&p, b"0", CreateMode::Persistent).await);
    let (_, _, mut watch) = ok!(a.get_data_watch(&p).await);
    check!((&mut watch).now_or_never().is_none(), "watch fired early");
    ok!(b.set_data(&p, b"1", None).await);
    // As soon as a read on A reflects the change, the event must already have been delivered.
    let deadline = Instant::now() + T;
    loop {
        let (data, _) = ok!(a.get_data(&p).await);
        if &data[..] == b"1" {
            let ev = (&mut watch)
                .now_or_never()
                .ok_or("read showed the change before the watch event")?;
            check_eq!(
                (ev.event_type, ev.state, ev.path.as_str()),
                (
                    EventType::NodeDataChanged,
                    KeeperState::SyncConnected,
                    p.as_str()
                )
            );
            break;
        }
        check!(Instant::now() < deadline, "change never became visible");
    }
    // One-shot: a second change does not fire the same watch again, a new one does.
    let (_, _, w2) = ok!(a.get_data_watch(&p).await);
    ok!(b.delete(&p, None).await);
    let ev = within(T, "NodeDeleted", w2).await?;
    check_eq!(ev.event_type, EventType::NodeDeleted);
    fails!(a.get_data_watch(&p).await, Error::NoNode);
    Ok(())
}

async fn exists_watch_sees_creation(ctx: Ctx) -> CaseResult {
    let a = ctx.client().await?;
    let p = ctx.p("later");
    let (st, w) = ok!(a.exists_watch(&p).await);
    check_eq!(st, None);
    let b = ctx.client().await?;
    ok!(b.create(&p, b"", CreateMode::Persistent).await);
    let ev = within(T, "NodeCreated", w).await?;
    check_eq!(
        (ev.event_type, ev.path),
        (EventType::NodeCreated, p.clone())
    );
    let (st, w) = ok!(a.exists_watch(&p).await);
    check!(st.is_some(), "exists after create");
    ok!(b.set_data(&p, b"x", None).await);
    check_eq!(
        within(T, "NodeDataChanged via exists", w).await?.event_type,
        EventType::NodeDataChanged
    );
    Ok(())
}

async fn child_watch_fires_once(ctx: Ctx) -> CaseResult {
    let a = ctx.client().await?;
    let parent = ctx.p("cw");
    ok!(a.create(&parent, b"", CreateMode::Persistent).await);
    let (kids, _, w) = ok!(a.get_children_watch(&parent).await);
    check!(kids.is_empty(), "fresh node has children");
    let b = ctx.client().await?;
    ok!(b
        .set_data(&parent, b"data changes do not fire child watches", None)
        .await);
    ok!(b
        .create(&format!("{parent}/k"), b"", CreateMode::Persistent)
        .await);
    let ev = within(T, "NodeChildrenChanged", w).await?;
    check_eq!(
        (ev.event_type, ev.path),
        (EventType::NodeChildrenChanged, parent.clone())
    );
    let (kids, _, w) = ok!(a.get_children_watch(&parent).await);
    check_eq!(kids, vec!["k".to_string()]);
    ok!(b.delete(&format!("{parent}/k"), None).await);
    check_eq!(
        within(T, "NodeChildrenChanged on delete", w)
            .await?
            .event_type,
        EventType::NodeChildrenChanged
    );
    Ok(())
}

async fn persistent_watch_stream(ctx: Ctx) -> CaseResult {
    let a = ctx.client().await?;
    let b = ctx.client().await?;
    let p = ctx.p("pw");
    ok!(a.create(&p, b"", CreateMode::Persistent).await);
    let mut s = ok!(a.add_watch(&p, AddWatchMode::Persistent).await);
    ok!(b.set_data(&p, b"1", None).await);
    ok!(b.set_data(&p, b"2", None).await);
    ok!(b
        .create(&format!("{p}/c"), b"", CreateMode::Persistent)
        .await);
    ok!(b.set_data(&format!("{p}/c"), b"not watched", None).await);
    ok!(b.delete(&format!("{p}/c"), None).await);
    ok!(b.delete(&p, None).await);
    ok!(b.create(&p, b"", CreateMode::Persistent).await);
    let mut got = Vec::new();
    for _ in 0..6 {
        let ev = within(T, "persistent watch event", s.next())
            .await?
            .ok_or("stream ended early")?;
        got.push((ev.event_type, ev.path));
    }
    use EventType as E;
    check_eq!(
        got,
        vec![
            (E::NodeDataChanged, p.clone()),
            (E::NodeDataChanged, p.clone()),
            (E::NodeChildrenChanged, p.clone()),
            (E::NodeChildrenChanged, p.clone()),
            (E::NodeDeleted, p.clone()),
            (E::NodeCreated, p.clone())
        ]
    );
    // ZooKeeper 3.8 answers removeWatches of type Persistent with MarshallingError; Any removes
    // persistent watches too.
    ok!(a.remove_watches(&p, WatcherType::Any).await);
    let ev = within(T, "removal event", s.next())
        .await?
        .ok_or("no removal event")?;
    check_eq!(ev.event_type, E::PersistentWatchRemoved);
    check!(
        within(T, "end of stream", s.next()).await?.is_none(),
        "stream continues after removal"
    );
    fails!(
        a.remove_watches(&p, WatcherType::Any).await,
        Error::NoWatcher
    );
    Ok(())
}

async fn recursive_watch_sees_the_subtree_in_zxid_order(ctx: Ctx) -> CaseResult {
    let a = ctx.client().await?;
    let b = ctx.client().await?;
    let r = ctx.p("tree");
    ok!(a.create(&r, b"", CreateMode::Persistent).await);
    let mut s = ok!(a.add_watch(&r, AddWatchMode::PersistentRecursive).await);
    let x = format!("{r}/x");
    let y = format!("{r}/x/y");
    ok!(b.create(&x, b"", CreateMode::Persistent).await);
    ok!(b.create(&y, b"", CreateMode::Persistent).await);
    ok!(b.set_data(&y, b"1", None).await);
    ok!(b.set_data(&r, b"1", None).await);
    ok!(b.delete(&y, None).await);
    ok!(b
        .multi(vec![
            Op::set_data(&x, &b"m"[..], None),
            Op::create(&y, &b""[..], CreateMode::Persistent)
        ])
        .await);
    use EventType as E;
    let want = vec![
        (E::NodeCreated, x.clone()),
        (E::NodeCreated, y.clone()),
        (E::NodeDataChanged, y.clone()),
        (E::NodeDataChanged, r.clone()),
        (E::NodeDeleted, y.clone()),
        (E::NodeDataChanged, x.clone()),
        (E::NodeCreated, y.clone()),
    ];
    let mut got = Vec::new();
    for _ in 0..want.len() {
        let ev = within(T, "recursive watch event", s.next())
            .await?
            .ok_or("stream ended")?;
        got.push((ev.event_type, ev.path));
    }
    check_eq!(got, want);
    check!(
        s.next().now_or_never().is_none(),
        "unexpected extra event (child events are not sent to recursive watches)"
    );
    Ok(())
}

async fn remove_one_shot_watches(ctx: Ctx) -> CaseResult {
    let a = ctx.client().await?;
    let p = ctx.p("rw");
    ok!(a.create(&p, b"", CreateMode::Persistent).await);
    let (_, _, dw) = ok!(a.get_data_watch(&p).await);
    let (_, _, cw) = ok!(a.get_children_watch(&p).await);
    ok!(a.remove_watches(&p, WatcherType::Data).await);
    let ev = within(T, "data watch removal", dw).await?;
    check_eq!(
        (ev.event_type, ev.path.as_str()),
        (EventType::DataWatchRemoved, p.as_str())
    );
    fails!(
        a.remove_watches(&p, WatcherType::Data).await,
        Error::NoWatcher
    );
    ok!(a.remove_watches(&p, WatcherType::Any).await);
    check_eq!(
        within(T, "child watch removal", cw).await?.event_type,
        EventType::ChildWatchRemoved
    );
    fails!(
        a.remove_watches(&ctx.p("none"), WatcherType::Any).await,
        Error::NoWatcher
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------------

async fn chroot_is_applied_and_stripped(ctx: Ctx) -> CaseResult {
    let admin = ctx.client().await?;
    let jail = ctx.p("jail");
    ok!(admin.create(&jail, b"", CreateMode::Persistent).await);
    let zk = ctx
        .client_at(
            &format!("{}{}", ctx.servers, jail),
            ConnectOptions::default(),
        )
        .await?;
    check_eq!(
        ok!(zk.create("/x", b"", CreateMode::PersistentSequential).await),
        "/x0000000000".to_string()
    );
    // Another session's read: ZooKeeper serves it from its server's local state, so it syncs
    // first (a fresh-clone CI run saw ZooKeeper's follower answer before it had the create).
    ok!(admin.sync(&jail).await);
    check!(
        ok!(admin.exists(&format!("{jail}/x0000000000")).await).is_some(),
        "chroot not applied"
    );
    let (st, w) = ok!(zk.exists_watch("/y").await);
    check_eq!(st, None);
    ok!(admin
        .create(&format!("{jail}/y"), b"", CreateMode::Persistent)
        .await);
    let ev = within(T, "chrooted event", w).await?;
    check_eq!(ev.path, "/y".to_string());
    check_eq!(ok!(zk.get_children("/").await).len(), 2);
    Ok(())
}

async fn sync_whoami_and_idle_session_stays_alive(ctx: Ctx) -> CaseResult {
    let zk = ctx
        .client_with(ConnectOptions::default().session_timeout(Duration::from_millis(2000)))
        .await?;
    check!(
        zk.session_timeout() <= Duration::from_millis(2000),
        "negotiated timeout {:?}",
        zk.session_timeout()
    );
    let mut states = zk.state_changes();
    ok!(zk.sync(&ctx.root).await);
    fails!(zk.sync("bad").await, Error::InvalidPath(_));
    let id = zk.session_id();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    check!(
        states.next().now_or_never().is_none(),
        "idle session changed state: pings missing"
    );
    check_eq!((zk.state(), zk.session_id()), (SessionState::Connected, id));
    ok!(zk.get_children(&ctx.root).await);
    // whoAmI is 3.9+: a 3.8 server may not know it; either answer is conformant, a hang is not.
    match within(T, "whoami", zk.whoami()).await? {
        Ok(ids) => check!(ids.iter().any(|c| c.auth_scheme == "ip"), "whoami: {ids:?}"),
        Err(e) => check!(
            matches!(e, Error::Unimplemented | Error::ConnectionLoss),
            "whoami error {e:?}"
        ),
    }
    Ok(())
}

async fn session_expiry(ctx: Ctx) -> CaseResult {
    let a = ctx.client().await?;
    let mut states = a.state_changes();
    ok!(a.create(&ctx.p("eph"), b"", CreateMode::Ephemeral).await);
    let w = ctx.p("watched");
    ok!(a.create(&w, b"", CreateMode::Persistent).await);
    let (_, _, watch) = ok!(a.get_data_watch(&w).await);
    // Take the session over from another client and close it there: the session ends at the
    // server, and A learns on its next contact that it has expired.
    let thief = ctx
        .client_with(ConnectOptions::default().resume(a.session_id(), &a.session_password()))
        .await?;
    check_eq!(thief.session_id(), a.session_id());
    ok!(thief.close().await);
    let expired = within(Duration::from_secs(30), "Expired state", async {
        while let Some(s) = states.next().await {
            if s == SessionState::Expired {
                return true;
            }
        }
        false
    })
    .await?;
    check!(expired, "state stream ended without Expired");
    check_eq!(a.state(), SessionState::Expired);
    fails!(a.get_data(&w).await, Error::SessionExpired);
    let ev = within(T, "watch end", watch).await?;
    check_eq!(
        (ev.event_type, ev.state),
        (EventType::None, KeeperState::Expired)
    );
    let c = ctx.client().await?;
    check_eq!(ok!(c.exists(&ctx.p("eph")).await), None);
    Ok(())
}

async fn reconnect_after_the_connected_server_is_killed(ctx: Ctx) -> CaseResult {
    // Ignored by `run` for an ensemble that cannot kill a server.
    check!(
        ctx.ens.can_kill(),
        "{} servers cannot be killed from here",
        ctx.ens.name()
    );
    let a = ctx
        .client_with(ConnectOptions::default().session_timeout(Duration::from_secs(8)))
        .await?;
    let id = a.session_id();
    let mut states = a.state_changes();
    let addr = a.connected_server().ok_or("not connected")?;
    let idx = ctx
        .ens
        .addrs()
        .iter()
        .position(|x| *x == addr)
        .ok_or("connected to an unknown server")?;
    ok!(a.create(&ctx.p("eph"), b"", CreateMode::Ephemeral).await);
    let p = ctx.p("watched");
    ok!(a.create(&p, b"0", CreateMode::Persistent).await);
    let (_, _, watch) = ok!(a.get_data_watch(&p).await);
    let mut tree = ok!(a
        .add_watch(&ctx.root, AddWatchMode::PersistentRecursive)
        .await);

    struct Restart<'a>(&'a dyn Ensemble, usize);
    impl Drop for Restart<'_> {
        fn drop(&mut self) {
            if let Err(e) = self.0.restart(self.1) {
                eprintln!("restarting node {}: {e}", self.1);
            }
        }
    }
    ctx.ens
        .kill(idx)
        .map_err(|e| format!("kill node {idx}: {e}"))?;
    let _restart = Restart(&*ctx.ens, idx);
    // While A is cut off, another client (on the surviving servers) changes what A watches.
    let others: Vec<String> = ctx
        .ens
        .addrs()
        .iter()
        .filter(|x| **x != addr)
        .map(|x| x.to_string())
        .collect();
    let survivors = others.join(",");
    let mut b = ctx.client_at(&survivors, ConnectOptions::default()).await?;
    // B may have connected before the survivors elected a leader (ZooKeeper with local
    // sessions admits it at once) and lose that connection to the election: retried then
    // (the write is idempotent). A local session lives on its server alone, so the election can
    // also end it: B opens a new one then. (B is only the helper here; a session that must
    // outlive its server is A's, checked below, and local sessions are an oracle's option,
    // never synod's: it opens every session through Raft.)
    let mut tries = 0;
    loop {
        match b.set_data(&p, b"changed while disconnected", None).await {
            Ok(_) => break,
            Err(Error::ConnectionLoss) if tries < 40 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(Error::SessionExpired) if ctx.ens.local_sessions() && tries < 40 => {
                tries += 1;
                b = ctx.client_at(&survivors, ConnectOptions::default()).await?;
            }
            Err(e) => return Err(format!("set_data through the survivors: {e:?}")),
        }
    }
    let states_seen = within(Duration::from_secs(20), "reconnect", async {
        let mut seen = Vec::new();
        while let Some(s) = states.next().await {
            seen.push(s);
            if s == SessionState::Connected || s.is_terminal() {
                break;
            }
        }
        seen
    })
    .await?;
    check_eq!(
        states_seen,
        vec![SessionState::Disconnected, SessionState::Connected]
    );
    check_eq!(a.session_id(), id);
    check!(
        a.connected_server() != Some(addr),
        "reconnected to the dead server"
    );
    let ev = within(T, "missed data event after reconnect", watch).await?;
    check_eq!(
        (ev.event_type, ev.path.as_str()),
        (EventType::NodeDataChanged, p.as_str())
    );
    let ev = within(T, "missed recursive event", tree.next())
        .await?
        .ok_or("recursive stream ended")?;
    check_eq!(
        (ev.event_type, ev.path.as_str()),
        (EventType::NodeDataChanged, p.as_str())
    );
    check!(
        ok!(b.exists(&ctx.p("eph")).await).is_some(),
        "ephemeral lost across reconnect"
    );
    ok!(b.set_data(&p, b"again", None).await);
    let ev = within(T, "recursive event after reconnect", tree.next())
        .await?
        .ok_or("stream ended")?;
    check_eq!(ev.event_type, EventType::NodeDataChanged);
    check_eq!(&ok!(a.get_data(&p).await).0[..], b"again");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Dynamic reconfiguration: /zookeeper/config and reconfig
// ---------------------------------------------------------------------------------------------

/// One `server.N=...` line of `/zookeeper/config`.
struct ConfigLine {
    id: u64,
    /// The whole line, as a joining spec gives it back.
    line: String,
    /// Its client address (after the `;`).
    client: Option<SocketAddr>,
}

/// `/zookeeper/config`'s text: its server lines and the version (hex) of its last line.
fn config_lines(data: &[u8]) -> Result<(Vec<ConfigLine>, i64), String> {
    let text = std::str::from_utf8(data).map_err(|e| format!("config is not UTF-8: {e}"))?;
    let mut lines: Vec<&str> = text.split('\n').collect();
    let last = lines.pop().unwrap_or_default();
    let version = last
        .strip_prefix("version=")
        .and_then(|v| i64::from_str_radix(v, 16).ok())
        .ok_or_else(|| format!("config {text:?} does not end with version=<hex>"))?;
    let servers = lines
        .iter()
        .map(|l| {
            let (key, value) = l
                .split_once('=')
                .ok_or_else(|| format!("config line {l:?} is not server.N=..."))?;
            let id = key
                .strip_prefix("server.")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| format!("config line {l:?} is not server.N=..."))?;
            let client = value.split_once(';').and_then(|(_, c)| c.parse().ok());
            Ok(ConfigLine {
                id,
                line: l.to_string(),
                client,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok((servers, version))
}

/// A client with the super identity ([`crate::ensemble::SUPER_PASSWORD`]).
async fn super_client(ctx: &Ctx) -> Result<Client, String> {
    let zk = ctx.client().await?;
    let auth = format!("super:{}", crate::ensemble::SUPER_PASSWORD);
    ok!(zk.add_auth("digest", auth.as_bytes()).await);
    Ok(zk)
}

async fn config_node_lists_the_members(ctx: Ctx) -> CaseResult {
    let zk = ctx.client().await?;
    let (data, stat) = ok!(zk.get_config().await);
    let (servers, version) = config_lines(&data)?;
    let addrs = ctx.ens.addrs();
    check_eq!(servers.len(), addrs.len());
    for s in &servers {
        check!(
            s.line.contains(":participant;"),
            "{} is no participant with a client address",
            s.line
        );
        check!(
            s.client.is_some_and(|c| addrs.contains(&c)),
            "{} names no client address of the ensemble {addrs:?}",
            s.line
        );
    }
    // The version is the zxid of the change that wrote it; the data version stays -1.
    check_eq!(version, stat.mzxid);
    check_eq!(stat.version, -1);
    check_eq!(stat.czxid, 0);
    // getConfig never goes under the chroot.
    let chrooted = ctx
        .client_at(
            &format!("{}{}", ctx.servers, ctx.root),
            ConnectOptions::default(),
        )
        .await?;
    check_eq!(ok!(chrooted.get_config().await).0, data);
    // Only `super` writes it, and nobody deletes the special nodes.
    fails!(
        zk.set_data(synod_client::CONFIG_NODE, b"server.1=x", None)
            .await,
        Error::NoAuth
    );
    fails!(
        zk.delete(synod_client::CONFIG_NODE, None).await,
        Error::BadArguments
    );
    fails!(zk.delete("/zookeeper", None).await, Error::BadArguments);
    check_eq!(ok!(zk.get_config().await).0, data);
    Ok(())
}

async fn reconfig_refusals(ctx: Ctx) -> CaseResult {
    let plain = ctx.client().await?;
    let (data, _) = ok!(plain.get_config().await);
    let (servers, version) = config_lines(&data)?;
    let first = servers
        .first()
        .ok_or("no server in the config")?
        .id
        .to_string();
    fails!(plain.reconfig("", &first, "", -1).await, Error::NoAuth);
    let zk = super_client(&ctx).await?;
    fails!(
        zk.reconfig("", &first, "", version + 1).await,
        Error::BadVersion
    );
    fails!(
        zk.reconfig("server.9=127.0.0.1", "", "", -1).await,
        Error::BadArguments
    );
    let all: Vec<String> = servers.iter().map(|s| s.id.to_string()).collect();
    fails!(
        zk.reconfig("", &all.join(","), "", -1).await,
        Error::BadArguments
    );
    // Four participants that do not run: no quorum of the new configuration is connected.
    let ports = crate::ensemble::free_ports(12).map_err(|e| e.to_string())?;
    let joining: Vec<String> = (0..4)
        .map(|i| {
            format!(
                "server.{}=127.0.0.1:{}:{}:participant;127.0.0.1:{}",
                11 + i,
                ports[3 * i],
                ports[3 * i + 1],
                ports[3 * i + 2]
            )
        })
        .collect();
    fails!(
        zk.reconfig(&joining.join(","), "", "", -1).await,
        Error::NewConfigNoQuorum
    );
    check_eq!(ok!(zk.get_config().await).0, data);
    Ok(())
}

async fn reconfig_removes_and_adds_back_a_server(ctx: Ctx) -> CaseResult {
    let zk = super_client(&ctx).await?;
    let connected = zk.connected_server().ok_or("not connected")?;
    let (data, _, watch) = ok!(zk.get_config_watch().await);
    let (servers, version) = config_lines(&data)?;
    let addrs = ctx.ens.addrs();
    // A follower this client is not connected to.
    let leader = ctx.ens.leader();
    let idx = (0..addrs.len())
        .find(|i| Some(*i) != leader && addrs[*i] != connected)
        .ok_or("no follower to remove")?;
    let gone = servers
        .iter()
        .find(|s| s.client == Some(addrs[idx]))
        .ok_or_else(|| format!("no config line for {}", addrs[idx]))?;
    let (new_data, stat) = ok!(zk.reconfig("", &gone.id.to_string(), "", version).await);
    let ev = within(T, "the config watch", watch).await?;
    check_eq!(
        (ev.event_type, ev.path.as_str()),
        (EventType::NodeDataChanged, synod_client::CONFIG_NODE)
    );
    let (after, new_version) = config_lines(&new_data)?;
    check_eq!(after.len(), servers.len() - 1);
    check!(
        after.iter().all(|s| s.id != gone.id),
        "server.{} is still in {new_data:?}",
        gone.id
    );
    check_eq!(new_version, stat.mzxid);
    check!(new_version > version, "the version did not grow");
    check_eq!(ok!(zk.get_config().await).0, new_data);

    // Back, as the configuration showed it.
    let (back, _) = ok!(zk.reconfig(&gone.line, "", "", -1).await);
    let (again, _) = config_lines(&back)?;
    check_eq!(again.len(), servers.len());
    check!(
        again.iter().any(|s| s.line == gone.line),
        "{} is not back as it was: {back:?}",
        gone.line
    );
    // It serves again: a write made now is read through it.
    let p = ctx.p("after");
    ok!(zk.create(&p, b"back", CreateMode::Persistent).await);
    let there = addrs[idx].to_string();
    let served = eventually(Duration::from_secs(60), || async {
        match ctx.client_at(&there, ConnectOptions::default()).await {
            Ok(c) => c.get_data(&p).await.is_ok_and(|(d, _)| &d[..] == b"back"),
            Err(_) => false,
        }
    })
    .await;
    check!(served, "{there} does not serve after it was added back");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Read-only mode
// ---------------------------------------------------------------------------------------------

async fn read_only_mode_serves_reads_when_cut_off(ctx: Ctx) -> CaseResult {
    // Ignored by `run` for an ensemble that cannot pause a server.
    check!(
        ctx.ens.can_kill(),
        "{} servers cannot be paused from here",
        ctx.ens.name()
    );
    let zk = ctx.client().await?;
    let p = ctx.p("config");
    ok!(zk.create(&p, b"last known", CreateMode::Persistent).await);
    ok!(zk.sync(&p).await);
    let addrs = ctx.ens.addrs();
    let leader = ctx.ens.leader().ok_or("no leader")?;
    // A follower is cut off: every other server is frozen.
    let alone = (0..addrs.len())
        .find(|i| *i != leader)
        .ok_or("no follower")?;
    // It must have applied the node before it is cut off.
    let there = addrs[alone].to_string();
    let caught_up = eventually(T, || async {
        match ctx.client_at(&there, ConnectOptions::default()).await {
            Ok(c) => c.exists(&p).await.is_ok_and(|s| s.is_some()),
            Err(_) => false,
        }
    })
    .await;
    check!(caught_up, "{there} did not apply {p}");
    drop(zk);
    // A client of a replicated session there, which did not allow read-only.
    let plain = ctx.client_at(&there, ConnectOptions::default()).await?;
    let mut plain_states = plain.state_changes();

    struct Resume<'a>(&'a dyn Ensemble, Vec<usize>);
    impl Drop for Resume<'_> {
        fn drop(&mut self) {
            for i in &self.1 {
                if let Err(e) = self.0.resume(*i) {
                    eprintln!("resuming node {i}: {e}");
                }
            }
        }
    }
    let others: Vec<usize> = (0..addrs.len()).filter(|i| *i != alone).collect();
    let mut frozen = Resume(&*ctx.ens, Vec::new());
    for i in &others {
        ctx.ens
            .pause(*i)
            .map_err(|e| format!("pause node {i}: {e}"))?;
        frozen.1.push(*i);
    }
    let ro_opts = || {
        ConnectOptions::default()
            .can_be_read_only(true)
            .connect_timeout(Duration::from_secs(3))
    };
    // Once it notices (ZooKeeper and synod wait 2 s without a leader), it serves a client
    // that allows read-only.
    let deadline = Instant::now() + Duration::from_secs(60);
    let ro = loop {
        if let Ok(c) = ctx.client_at(&there, ro_opts()).await {
            if c.state() == SessionState::ConnectedReadOnly {
                break c;
            }
        }
        check!(
            Instant::now() < deadline,
            "{there} never served a read-only session"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ro_session = ro.session_id();
    // The cut-off server closed that client's connection (it serves no replicated session
    // meanwhile): the client knows it is disconnected.
    let dropped = within(T, "the plain client's disconnection", plain_states.next()).await?;
    check_eq!(dropped, Some(SessionState::Disconnected));
    check_eq!(plain.state(), SessionState::Disconnected);
    check_eq!(&ok!(ro.get_data(&p).await).0[..], b"last known");
    check!(
        ok!(ro.get_children(&ctx.root).await).contains(&"config".to_string()),
        "the read-only server lists no children"
    );
    fails!(ro.set_data(&p, b"new", None).await, Error::NotReadOnly);
    fails!(
        ro.create(&ctx.p("new"), b"", CreateMode::Persistent).await,
        Error::NotReadOnly
    );
    fails!(ro.sync(&p).await, Error::NotReadOnly);
    // A client that did not allow read-only gets no session there.
    let plain = ctx
        .client_at(
            &there,
            ConnectOptions::default().connect_timeout(Duration::from_secs(3)),
        )
        .await;
    check!(
        plain.is_err(),
        "a client that did not allow read-only got a session on a cut-off server"
    );

    // The quorum comes back: the client moves to a read-write session of its own.
    let mut states = ro.state_changes();
    drop(frozen);
    let back = within(Duration::from_secs(60), "a read-write session", async {
        while let Some(s) = states.next().await {
            if s == SessionState::Connected || s.is_terminal() {
                return s;
            }
        }
        SessionState::Closed
    })
    .await?;
    check_eq!(back, SessionState::Connected);
    check!(
        ro.session_id() != ro_session,
        "the read-only session id was kept"
    );
    ok!(ro.set_data(&p, b"new", None).await);
    check_eq!(&ok!(ro.get_data(&p).await).0[..], b"new");
    Ok(())
}

// ---------------------------------------------------------------------------------------------

/// Every case: its name, its body, and whether it must kill a server.
fn cases() -> Vec<(&'static str, CaseFn, bool)> {
    macro_rules! case {
        ($f:ident) => {
            case!($f, false)
        };
        ($f:ident, kills) => {
            case!($f, true)
        };
        ($f:ident, $kills:expr) => {
            (stringify!($f), (|c| Box::pin($f(c))) as CaseFn, $kills)
        };
    }
    vec![
        case!(create_get_and_stat_fields),
        case!(set_data_and_versions),
        case!(null_data_is_not_empty),
        case!(create_errors),
        case!(sequential_naming),
        case!(children_and_parent_stat),
        case!(acls_and_digest_auth),
        case!(default_acl_applies_to_creates),
        case!(zookeeper_quotas),
        case!(multi_success),
        case!(multi_failure_is_all_or_nothing),
        case!(multi_read_results),
        case!(ephemerals_end_with_their_session),
        case!(container_nodes_are_reaped),
        case!(ttl_nodes_expire),
        case!(data_watch_fires_before_the_read_that_shows_the_change),
        case!(exists_watch_sees_creation),
        case!(child_watch_fires_once),
        case!(persistent_watch_stream),
        case!(recursive_watch_sees_the_subtree_in_zxid_order),
        case!(remove_one_shot_watches),
        case!(chroot_is_applied_and_stripped),
        case!(sync_whoami_and_idle_session_stays_alive),
        case!(session_expiry),
        case!(reconnect_after_the_connected_server_is_killed, kills),
        case!(config_node_lists_the_members),
        case!(reconfig_refusals),
        case!(reconfig_removes_and_adds_back_a_server),
        case!(read_only_mode_serves_reads_when_cut_off, kills),
    ]
}

/// Runs every case against `ens` with libtest's command line and output.
pub fn run(ens: Arc<dyn Ensemble>) -> std::process::ExitCode {
    let mut args = Arguments::from_args();
    // Cases share one ensemble and one of them kills a server: run them one at a time.
    args.test_threads = Some(1);
    eprintln!(
        "conformance suite against {} at {}",
        ens.name(),
        ens.connect_string()
    );
    let servers = ens.connect_string();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => Arc::new(rt),
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let run_id = now_ms();
    let trials = cases()
        .into_iter()
        .enumerate()
        .map(|(i, (name, f, kills))| {
            let ignored = kills && !ens.can_kill();
            if ignored {
                eprintln!(
                    "{name}: ignored, it kills a server and {} servers cannot be killed from here",
                    ens.name()
                );
            }
            let ctx = Ctx {
                ens: ens.clone(),
                servers: servers.clone(),
                root: format!("/conformance/{name}-{run_id}-{i}"),
            };
            let rt = rt.clone();
            Trial::test(name, move || {
                rt.block_on(async move {
                    let admin = ctx.client().await?;
                    match admin
                        .create("/conformance", b"", CreateMode::Persistent)
                        .await
                    {
                        Ok(_) | Err(Error::NodeExists) => {}
                        Err(e) => return Err(format!("create /conformance: {e}")),
                    }
                    ok!(admin.create(&ctx.root, b"", CreateMode::Persistent).await);
                    drop(admin);
                    within(Duration::from_secs(120), "the case", f(ctx)).await?
                })
                .map_err(Failed::from)
            })
            .with_ignored_flag(ignored)
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    drop(rt);
    drop(ens);
    conclusion.exit_code()
}
