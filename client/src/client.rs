//! [`Client`]: the handle applications use. Every operation validates its path, applies the
//! chroot, sends one request to the session task and awaits the reply. Handles are cheap to clone
//! and share one session; when the last one is dropped the session is closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::seq::SliceRandom;
use synod_proto::path::validate_path;
use synod_proto::records::*;
use synod_proto::{
    Acl, AddWatchMode, CreateMode, ErrorCode, MultiOp, MultiResult, Request, Response, Stat,
    WatcherType,
};
use tokio::sync::{mpsc, oneshot};

use crate::connect_string::ConnectString;
use crate::error::{Error, Result};
use crate::session::{
    self, lock, Command, Config, Reply, SessionState, SessionTask, Shared, WatchReq,
};
use crate::watch::{OneshotWatch, PersistentWatch, WatchRegistration};

/// ZooKeeper's configuration node ([`Client::get_config`]).
pub const CONFIG_NODE: &str = "/zookeeper/config";

/// Options for [`Client::connect`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The session timeout to ask for; the server clamps it to its bounds.
    pub session_timeout: Duration,
    /// How long [`Client::connect`] tries to establish a first session.
    pub connect_timeout: Duration,
    /// Largest reply frame accepted from a server.
    pub max_frame: usize,
    /// Resume an existing session (id, password) instead of creating one.
    pub session: Option<(i64, Vec<u8>)>,
    /// Try the servers in random order (as ZooKeeper's clients do) rather than as listed.
    pub shuffle_hosts: bool,
    /// Speak TLS to the servers' secure client port ([`crate::tls::TlsOptions::connector`]);
    /// `None`: plaintext.
    pub tls: Option<crate::tls::TlsConnector>,
    /// The ACL of every znode this client creates without naming one ([`Client::create`],
    /// [`Op::create`], and the recipes' nodes unless a recipe is given its participants).
    /// Default: the open ACL, as ZooKeeper's clients (kazoo's `default_acl`, Curator's
    /// `ACLProvider`) default to; a client shared by institutions should set
    /// [`Acl::creator_all`] or name its readers and writers.
    pub default_acl: Vec<Acl>,
    /// Accept a read-only session from a server cut off from its quorum (ZooKeeper's
    /// `canBeReadOnly`): possibly stale reads, writes refused with `NotReadOnly`, state
    /// [`SessionState::ConnectedReadOnly`]. Meanwhile the client looks for a read-write server
    /// (`isro`) and moves to it with a new session. Default false.
    pub can_be_read_only: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            session_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(15),
            max_frame: 4 * 1024 * 1024,
            session: None,
            shuffle_hosts: true,
            tls: None,
            default_acl: Acl::open_unsafe(),
            can_be_read_only: false,
        }
    }
}

impl ConnectOptions {
    pub fn session_timeout(mut self, t: Duration) -> Self {
        self.session_timeout = t;
        self
    }

    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Connect over TLS with this connector.
    pub fn tls(mut self, connector: crate::tls::TlsConnector) -> Self {
        self.tls = Some(connector);
        self
    }

    pub fn resume(mut self, session_id: i64, password: &[u8]) -> Self {
        self.session = Some((session_id, password.to_vec()));
        self
    }

    pub fn shuffle_hosts(mut self, shuffle: bool) -> Self {
        self.shuffle_hosts = shuffle;
        self
    }

    /// Accept read-only sessions (see [`ConnectOptions::can_be_read_only`]).
    pub fn can_be_read_only(mut self, yes: bool) -> Self {
        self.can_be_read_only = yes;
        self
    }

    /// The ACL of znodes created without one (see [`ConnectOptions::default_acl`]).
    pub fn default_acl(mut self, acl: Vec<Acl>) -> Self {
        self.default_acl = acl;
        self
    }
}

/// One operation of a [`Client::multi`] (writes) or [`Client::multi_read`] (reads).
#[derive(Debug, Clone)]
pub enum Op {
    Create {
        path: String,
        data: Bytes,
        /// `None`: the client's default ACL ([`ConnectOptions::default_acl`]).
        acl: Option<Vec<Acl>>,
        mode: CreateMode,
        ttl: Option<Duration>,
    },
    Delete {
        path: String,
        version: Option<i32>,
    },
    SetData {
        path: String,
        data: Bytes,
        version: Option<i32>,
    },
    Check {
        path: String,
        version: i32,
    },
    GetData {
        path: String,
    },
    GetChildren {
        path: String,
    },
}

impl Op {
    /// A create with the client's default ACL ([`ConnectOptions::default_acl`]).
    pub fn create(path: &str, data: impl Into<Bytes>, mode: CreateMode) -> Op {
        Op::Create {
            path: path.into(),
            data: data.into(),
            acl: None,
            mode,
            ttl: None,
        }
    }

    /// A create with `acl`, sent as given (an empty list is ZooKeeper's `InvalidACL`).
    pub fn create_with_acl(
        path: &str,
        data: impl Into<Bytes>,
        acl: &[Acl],
        mode: CreateMode,
    ) -> Op {
        Op::Create {
            path: path.into(),
            data: data.into(),
            acl: Some(acl.to_vec()),
            mode,
            ttl: None,
        }
    }
    pub fn delete(path: &str, version: Option<i32>) -> Op {
        Op::Delete {
            path: path.into(),
            version,
        }
    }
    pub fn set_data(path: &str, data: impl Into<Bytes>, version: Option<i32>) -> Op {
        Op::SetData {
            path: path.into(),
            data: data.into(),
            version,
        }
    }
    pub fn check(path: &str, version: i32) -> Op {
        Op::Check {
            path: path.into(),
            version,
        }
    }
    pub fn get_data(path: &str) -> Op {
        Op::GetData { path: path.into() }
    }
    pub fn get_children(path: &str) -> Op {
        Op::GetChildren { path: path.into() }
    }
}

/// The result of one op of a multi; see [`MultiResult`].
pub type OpResult = MultiResult;

/// A stream of session state changes, from [`Client::state_changes`].
#[derive(Debug)]
pub struct StateStream {
    rx: mpsc::UnboundedReceiver<SessionState>,
}

impl StateStream {
    /// The next state change; `None` once the client has ended.
    pub async fn next(&mut self) -> Option<SessionState> {
        self.rx.recv().await
    }
}

impl futures_core::Stream for StateStream {
    type Item = SessionState;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<SessionState>> {
        self.rx.poll_recv(cx)
    }
}

struct Inner {
    /// Requests to the session task; dropping the last sender closes the session.
    tx: mpsc::UnboundedSender<Command>,
    /// State the task publishes (session id, state, connected server).
    shared: Shared,
    /// Chroot prefix without trailing `/`.
    chroot: Option<String>,
    /// The ACL of znodes created without one ([`ConnectOptions::default_acl`]).
    default_acl: Vec<Acl>,
}

/// A ZooKeeper-protocol session. Cloning gives another handle to the same session.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("session_id", &format_args!("{:#x}", self.session_id()))
            .field("state", &self.state())
            .finish()
    }
}

fn version(v: Option<i32>) -> i32 {
    v.unwrap_or(-1)
}

fn unexpected(r: Response) -> Error {
    Error::Protocol(format!("unexpected reply body {r:?}"))
}

impl Client {
    /// Connects to one of the servers in `connect_string` (`h1:p1,h2:p2[/chroot]`) and establishes
    /// a session, waiting up to `options.connect_timeout`.
    pub async fn connect(connect_string: &str, options: ConnectOptions) -> Result<Client> {
        let cs = ConnectString::parse(connect_string)?;
        let mut hosts = cs.hosts;
        if options.shuffle_hosts {
            hosts.shuffle(&mut rand::rng());
        }
        let cfg = Config {
            hosts,
            chroot: cs.chroot.clone(),
            session_timeout: options.session_timeout,
            connect_timeout: options.connect_timeout,
            max_frame: options.max_frame,
            session: options.session.map(|(id, p)| (id, Bytes::from(p))),
            tls: options.tls,
            can_be_read_only: options.can_be_read_only,
        };
        let shared = session::new_shared(options.session_timeout);
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(SessionTask::new(cfg, shared.clone()).run(rx, ready_tx));
        ready_rx.await.map_err(|_| Error::Closed)??;
        Ok(Client {
            inner: Arc::new(Inner {
                tx,
                shared,
                chroot: cs.chroot,
                default_acl: options.default_acl,
            }),
        })
    }

    /// The session id (0 before the first session).
    pub fn session_id(&self) -> i64 {
        lock(&self.inner.shared).session_id
    }

    /// The session password, for resuming the session from another client.
    pub fn session_password(&self) -> Vec<u8> {
        lock(&self.inner.shared).passwd.to_vec()
    }

    /// The session timeout the server granted.
    pub fn session_timeout(&self) -> Duration {
        lock(&self.inner.shared).timeout
    }

    /// The current session state.
    pub fn state(&self) -> SessionState {
        lock(&self.inner.shared).state
    }

    /// The server this client is connected to, if any.
    pub fn connected_server(&self) -> Option<SocketAddr> {
        lock(&self.inner.shared).server
    }

    /// The highest zxid this session has seen.
    pub fn last_zxid(&self) -> i64 {
        lock(&self.inner.shared).last_zxid
    }

    /// Every session state change from now on.
    pub fn state_changes(&self) -> StateStream {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.inner.shared).subscribers.push(tx);
        StateStream { rx }
    }

    fn server_path(&self, path: &str, sequential: bool) -> Result<String> {
        validate_path(path, sequential).map_err(Error::InvalidPath)?;
        Ok(match &self.inner.chroot {
            None => path.to_string(),
            Some(c) if path == "/" => c.clone(),
            Some(c) => format!("{c}{path}"),
        })
    }

    fn client_path(&self, path: String) -> String {
        match session::strip_chroot(self.inner.chroot.as_deref(), &path) {
            p if p.len() == path.len() => path,
            p => p.to_string(),
        }
    }

    async fn call(&self, request: Request, watch: Option<WatchReq>) -> Result<Reply> {
        let (reply, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Call {
                request,
                watch,
                reply,
            })
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    async fn response(&self, request: Request) -> Result<Response> {
        Ok(self.call(request, None).await?.response)
    }

    /// Creates a znode with the client's default ACL ([`ConnectOptions::default_acl`]);
    /// returns its path (with the sequence suffix for sequential modes). TTL modes need
    /// [`Client::create_full`].
    pub async fn create(&self, path: &str, data: &[u8], mode: CreateMode) -> Result<String> {
        Ok(self
            .create_full(path, data, &self.inner.default_acl, mode, None)
            .await?
            .0)
    }

    /// The ACL of znodes created without one ([`ConnectOptions::default_acl`]).
    pub fn default_acl(&self) -> &[Acl] {
        &self.inner.default_acl
    }

    /// Creates a znode with every option; returns its path and Stat. `acl` is sent as given
    /// ([`Client::default_acl`] is the client's default). `ttl` is required for (and only
    /// allowed with) the TTL modes.
    pub async fn create_full(
        &self,
        path: &str,
        data: &[u8],
        acl: &[Acl],
        mode: CreateMode,
        ttl: Option<Duration>,
    ) -> Result<(String, Stat)> {
        self.create_inner(path, Some(data), acl, mode, ttl).await
    }

    /// Creates a znode whose data is null (not empty: ZooKeeper keeps the two apart, and
    /// [`Client::get_data_nullable`] tells them apart), with the client's default ACL.
    pub async fn create_null(&self, path: &str, mode: CreateMode) -> Result<String> {
        let acl = self.inner.default_acl.clone();
        Ok(self.create_inner(path, None, &acl, mode, None).await?.0)
    }

    async fn create_inner(
        &self,
        path: &str,
        data: Option<&[u8]>,
        acl: &[Acl],
        mode: CreateMode,
        ttl: Option<Duration>,
    ) -> Result<(String, Stat)> {
        let request = create_request(
            self.server_path(path, mode.is_sequential())?,
            data,
            acl,
            mode,
            ttl,
        )?;
        let request = match request {
            MultiOp::Create(r) => Request::Create2(r),
            MultiOp::CreateContainer(r) => Request::CreateContainer(r),
            MultiOp::CreateTtl(r) => Request::CreateTtl(r),
            _ => return Err(Error::BadArguments),
        };
        match self.response(request).await? {
            Response::Create2(r) => Ok((self.client_path(r.path), r.stat)),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes a znode; `version` `None` matches any version.
    pub async fn delete(&self, path: &str, version: Option<i32>) -> Result<()> {
        let path = self.server_path(path, false)?;
        self.response(Request::Delete(DeleteRequest {
            path,
            version: self::version(version),
        }))
        .await?;
        Ok(())
    }

    /// The znode's Stat, or `None` if it does not exist.
    pub async fn exists(&self, path: &str) -> Result<Option<Stat>> {
        let path = self.server_path(path, false)?;
        match self
            .response(Request::Exists(ExistsRequest { path, watch: false }))
            .await
        {
            Ok(Response::Stat(s)) => Ok(Some(s)),
            Ok(other) => Err(unexpected(other)),
            Err(Error::NoNode) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Like [`Client::exists`], and leaves a watch that fires when the node is created, changed
    /// or deleted.
    pub async fn exists_watch(&self, path: &str) -> Result<(Option<Stat>, OneshotWatch)> {
        let sp = self.server_path(path, false)?;
        let (tx, watch) = OneshotWatch::new();
        let reg = (sp.clone(), path.to_string(), WatchRegistration::Exists(tx));
        match self
            .call(
                Request::Exists(ExistsRequest {
                    path: sp,
                    watch: true,
                }),
                Some(reg),
            )
            .await
        {
            Ok(Reply {
                response: Response::Stat(s),
                ..
            }) => Ok((Some(s), watch)),
            Ok(r) => Err(unexpected(r.response)),
            Err(Error::NoNode) => Ok((None, watch)),
            Err(e) => Err(e),
        }
    }

    /// The znode's data and Stat (null data reads as empty: see
    /// [`Client::get_data_nullable`]).
    pub async fn get_data(&self, path: &str) -> Result<(Bytes, Stat)> {
        let (data, stat) = self.get_data_nullable(path).await?;
        Ok((data.unwrap_or_default(), stat))
    }

    /// The znode's data, `None` if it is null (created or set with null data), and its Stat.
    pub async fn get_data_nullable(&self, path: &str) -> Result<(Option<Bytes>, Stat)> {
        let path = self.server_path(path, false)?;
        match self
            .response(Request::GetData(GetDataRequest { path, watch: false }))
            .await?
        {
            Response::GetData(r) => Ok((r.data, r.stat)),
            other => Err(unexpected(other)),
        }
    }

    /// Like [`Client::get_data`], and leaves a watch that fires when the data changes or the
    /// node is deleted.
    pub async fn get_data_watch(&self, path: &str) -> Result<(Bytes, Stat, OneshotWatch)> {
        let sp = self.server_path(path, false)?;
        let (tx, watch) = OneshotWatch::new();
        let reg = (sp.clone(), path.to_string(), WatchRegistration::Data(tx));
        match self
            .call(
                Request::GetData(GetDataRequest {
                    path: sp,
                    watch: true,
                }),
                Some(reg),
            )
            .await?
            .response
        {
            Response::GetData(r) => Ok((r.data.unwrap_or_default(), r.stat, watch)),
            other => Err(unexpected(other)),
        }
    }

    /// The cluster's configuration, as ZooKeeper's `getConfig` returns it: the data of
    /// `/zookeeper/config` (one `server.N=host:peerPort:electionPort:role;clientAddr` line per
    /// member and `version=<hex>`) and its Stat. Never under the chroot.
    pub async fn get_config(&self) -> Result<(Bytes, Stat)> {
        let path = CONFIG_NODE.to_string();
        match self
            .response(Request::GetData(GetDataRequest { path, watch: false }))
            .await?
        {
            Response::GetData(r) => Ok((r.data.unwrap_or_default(), r.stat)),
            other => Err(unexpected(other)),
        }
    }

    /// Like [`Client::get_config`], and leaves a watch that fires when the configuration
    /// changes.
    pub async fn get_config_watch(&self) -> Result<(Bytes, Stat, OneshotWatch)> {
        let (tx, watch) = OneshotWatch::new();
        let reg = (
            CONFIG_NODE.to_string(),
            CONFIG_NODE.to_string(),
            WatchRegistration::Data(tx),
        );
        let request = Request::GetData(GetDataRequest {
            path: CONFIG_NODE.to_string(),
            watch: true,
        });
        match self.call(request, Some(reg)).await?.response {
            Response::GetData(r) => Ok((r.data.unwrap_or_default(), r.stat, watch)),
            other => Err(unexpected(other)),
        }
    }

    /// ZooKeeper's `reconfig` (`ZooKeeperAdmin.reconfigure`): add `joining` servers
    /// (comma-separated `server.N=host:peerPort:electionPort[:role];clientAddr` specs) and
    /// remove `leaving` ones (comma-separated ids), or replace the whole configuration with
    /// `new_members` (then the other two are ignored), if the configuration's version is
    /// `from_config` (`-1`: any). Needs the super identity and a server with reconfig
    /// enabled. Returns the new configuration and its Stat, as [`Client::get_config`].
    pub async fn reconfig(
        &self,
        joining: &str,
        leaving: &str,
        new_members: &str,
        from_config: i64,
    ) -> Result<(Bytes, Stat)> {
        // An empty list is sent as null, as ZooKeeperAdmin sends an absent one.
        let given = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let request = Request::Reconfig(ReconfigRequest {
            joining_servers: given(joining),
            leaving_servers: given(leaving),
            new_members: given(new_members),
            cur_config_id: from_config,
        });
        match self.response(request).await? {
            Response::GetData(r) => Ok((r.data.unwrap_or_default(), r.stat)),
            other => Err(unexpected(other)),
        }
    }

    /// Replaces the znode's data if its version matches (`None`: any); returns the new Stat.
    pub async fn set_data(&self, path: &str, data: &[u8], version: Option<i32>) -> Result<Stat> {
        self.set_data_inner(path, Some(data), version).await
    }

    /// Makes the znode's data null (see [`Client::create_null`]) if its version matches.
    pub async fn set_null(&self, path: &str, version: Option<i32>) -> Result<Stat> {
        self.set_data_inner(path, None, version).await
    }

    async fn set_data_inner(
        &self,
        path: &str,
        data: Option<&[u8]>,
        version: Option<i32>,
    ) -> Result<Stat> {
        let path = self.server_path(path, false)?;
        let req = SetDataRequest {
            path,
            data: data.map(Bytes::copy_from_slice),
            version: self::version(version),
        };
        match self.response(Request::SetData(req)).await? {
            Response::Stat(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// The znode's ACL and Stat.
    pub async fn get_acl(&self, path: &str) -> Result<(Vec<Acl>, Stat)> {
        let path = self.server_path(path, false)?;
        match self
            .response(Request::GetAcl(GetAclRequest { path }))
            .await?
        {
            Response::GetAcl(r) => Ok((r.acl, r.stat)),
            other => Err(unexpected(other)),
        }
    }

    /// Replaces the znode's ACL if its ACL version matches (`None`: any).
    pub async fn set_acl(&self, path: &str, acl: &[Acl], version: Option<i32>) -> Result<Stat> {
        let path = self.server_path(path, false)?;
        let req = SetAclRequest {
            path,
            acl: acl.to_vec(),
            version: self::version(version),
        };
        match self.response(Request::SetAcl(req)).await? {
            Response::Stat(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// The names of the znode's children (unordered, as the server lists them).
    pub async fn get_children(&self, path: &str) -> Result<Vec<String>> {
        let path = self.server_path(path, false)?;
        match self
            .response(Request::GetChildren(GetChildrenRequest {
                path,
                watch: false,
            }))
            .await?
        {
            Response::GetChildren(r) => Ok(r.children),
            other => Err(unexpected(other)),
        }
    }

    /// The children's names and the znode's Stat.
    pub async fn get_children2(&self, path: &str) -> Result<(Vec<String>, Stat)> {
        let path = self.server_path(path, false)?;
        match self
            .response(Request::GetChildren2(GetChildren2Request {
                path,
                watch: false,
            }))
            .await?
        {
            Response::GetChildren2(r) => Ok((r.children, r.stat)),
            other => Err(unexpected(other)),
        }
    }

    /// Like [`Client::get_children2`], and leaves a watch that fires when a child is added or
    /// removed, or the node is deleted.
    pub async fn get_children_watch(
        &self,
        path: &str,
    ) -> Result<(Vec<String>, Stat, OneshotWatch)> {
        let sp = self.server_path(path, false)?;
        let (tx, watch) = OneshotWatch::new();
        let reg = (sp.clone(), path.to_string(), WatchRegistration::Child(tx));
        let req = Request::GetChildren2(GetChildren2Request {
            path: sp,
            watch: true,
        });
        match self.call(req, Some(reg)).await?.response {
            Response::GetChildren2(r) => Ok((r.children, r.stat, watch)),
            other => Err(unexpected(other)),
        }
    }

    /// The number of all descendants of the znode.
    pub async fn get_all_children_number(&self, path: &str) -> Result<i32> {
        let path = self.server_path(path, false)?;
        match self
            .response(Request::GetAllChildrenNumber(GetAllChildrenNumberRequest {
                path,
            }))
            .await?
        {
            Response::GetAllChildrenNumber(r) => Ok(r.total_number),
            other => Err(unexpected(other)),
        }
    }

    /// The paths of this session's ephemeral znodes under `prefix` (`/` for all).
    pub async fn get_ephemerals(&self, prefix: &str) -> Result<Vec<String>> {
        let prefix_path = self.server_path(prefix, false)?;
        match self
            .response(Request::GetEphemerals(GetEphemeralsRequest { prefix_path }))
            .await?
        {
            Response::GetEphemerals(r) => Ok(r
                .ephemerals
                .into_iter()
                .map(|p| self.client_path(p))
                .collect()),
            other => Err(unexpected(other)),
        }
    }

    /// Waits until the connected server has caught up with the leader as of this call, so that
    /// a following read sees every write acknowledged before it.
    pub async fn sync(&self, path: &str) -> Result<()> {
        let path = self.server_path(path, false)?;
        self.response(Request::Sync(SyncRequest { path })).await?;
        Ok(())
    }

    /// Succeeds if the znode's version matches, else fails with `BadVersion` (or `NoNode`).
    pub async fn check(&self, path: &str, version: i32) -> Result<()> {
        match self.multi(vec![Op::check(path, version)]).await {
            Ok(_) => Ok(()),
            Err(Error::Multi { code, .. }) => Err(Error::from_code(code)),
            Err(e) => Err(e),
        }
    }

    fn multi_op(&self, op: Op) -> Result<MultiOp> {
        Ok(match op {
            Op::Create {
                path,
                data,
                acl,
                mode,
                ttl,
            } => {
                let sp = self.server_path(&path, mode.is_sequential())?;
                let acl = acl.as_deref().unwrap_or(&self.inner.default_acl);
                match create_request(sp, Some(&data), acl, mode, ttl)? {
                    MultiOp::Create(r) if mode.is_container() => MultiOp::CreateContainer(r),
                    other => other,
                }
            }
            Op::Delete { path, version } => MultiOp::Delete(DeleteRequest {
                path: self.server_path(&path, false)?,
                version: self::version(version),
            }),
            Op::SetData {
                path,
                data,
                version,
            } => MultiOp::SetData(SetDataRequest {
                path: self.server_path(&path, false)?,
                data: Some(data),
                version: self::version(version),
            }),
            Op::Check { path, version } => MultiOp::Check(CheckVersionRequest {
                path: self.server_path(&path, false)?,
                version,
            }),
            Op::GetData { path } => MultiOp::GetData(GetDataRequest {
                path: self.server_path(&path, false)?,
                watch: false,
            }),
            Op::GetChildren { path } => MultiOp::GetChildren(GetChildrenRequest {
                path: self.server_path(&path, false)?,
                watch: false,
            }),
        })
    }

    fn fix_results(&self, results: Vec<MultiResult>) -> Vec<MultiResult> {
        results
            .into_iter()
            .map(|r| match r {
                MultiResult::Create { path, stat } => MultiResult::Create {
                    path: self.client_path(path),
                    stat,
                },
                other => other,
            })
            .collect()
    }

    /// Applies every write op atomically, or none. On failure returns [`Error::Multi`] with the
    /// failing op's index and code and every op's result.
    pub async fn multi(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        let ops = ops
            .into_iter()
            .map(|op| self.multi_op(op))
            .collect::<Result<Vec<_>>>()?;
        if ops.iter().any(MultiOp::is_read) {
            return Err(Error::BadArguments);
        }
        let results = match self.response(Request::Multi(ops)).await? {
            Response::Multi(r) => self.fix_results(r),
            other => return Err(unexpected(other)),
        };
        let failed = results.iter().enumerate().find_map(|(i, r)| match r {
            MultiResult::Error(c)
                if *c != ErrorCode::Ok && *c != ErrorCode::RuntimeInconsistency =>
            {
                Some((i, *c))
            }
            _ => None,
        });
        match failed {
            Some((index, code)) => Err(Error::Multi {
                index,
                code,
                results,
            }),
            None => Ok(results),
        }
    }

    /// Reads several znodes at one point in time; each op's result (or error) is reported.
    pub async fn multi_read(&self, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        let ops = ops
            .into_iter()
            .map(|op| self.multi_op(op))
            .collect::<Result<Vec<_>>>()?;
        if !ops.iter().all(MultiOp::is_read) {
            return Err(Error::BadArguments);
        }
        match self.response(Request::MultiRead(ops)).await? {
            Response::Multi(r) => Ok(self.fix_results(r)),
            other => Err(unexpected(other)),
        }
    }

    /// Adds credentials to the session (e.g. `digest`, `user:password`); they are re-sent on
    /// every reconnect. A rejected credential ends the session with `AuthFailed`.
    pub async fn add_auth(&self, scheme: &str, auth: &[u8]) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Auth {
            scheme: scheme.into(),
            auth: Bytes::copy_from_slice(auth),
            reply,
        };
        self.inner.tx.send(cmd).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// The identities the server has authenticated this session as.
    pub async fn whoami(&self) -> Result<Vec<ClientInfo>> {
        match self.response(Request::WhoAmI).await? {
            Response::WhoAmI(r) => Ok(r.client_info),
            other => Err(unexpected(other)),
        }
    }

    /// Adds a persistent watch (or, with `PersistentRecursive`, one on the whole subtree) and
    /// returns the stream of its events. It survives reconnects until removed or the session ends.
    pub async fn add_watch(&self, path: &str, mode: AddWatchMode) -> Result<PersistentWatch> {
        let sp = self.server_path(path, false)?;
        let (tx, stream) = PersistentWatch::new();
        let recursive = mode == AddWatchMode::PersistentRecursive;
        let reg = (
            sp.clone(),
            path.to_string(),
            WatchRegistration::Persistent { recursive, tx },
        );
        self.call(
            Request::AddWatch(AddWatchRequest {
                path: sp,
                mode: mode.as_i32(),
            }),
            Some(reg),
        )
        .await?;
        Ok(stream)
    }

    /// Removes this session's watches of `kind` on `path`, at the server and here (each local
    /// watcher receives a `*WatchRemoved` event). `NoWatcher` if there were none.
    pub async fn remove_watches(&self, path: &str, kind: WatcherType) -> Result<()> {
        let sp = self.server_path(path, false)?;
        let reg = (
            sp.clone(),
            path.to_string(),
            WatchRegistration::Remove(kind),
        );
        let req = RemoveWatchesRequest {
            path: sp,
            watcher_type: kind.as_i32(),
        };
        self.call(Request::RemoveWatches(req), Some(reg)).await?;
        Ok(())
    }

    /// Closes the session: its ephemeral znodes are deleted and its watches end. Other handles
    /// of this client fail with `Closed` from then on.
    pub async fn close(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        if self.inner.tx.send(Command::Close { reply }).is_err() {
            return Ok(());
        }
        rx.await.unwrap_or(Ok(()))
    }
}

/// Builds the create request for `mode`, checking that a TTL comes with TTL modes only.
fn create_request(
    path: String,
    data: Option<&[u8]>,
    acl: &[Acl],
    mode: CreateMode,
    ttl: Option<Duration>,
) -> Result<MultiOp> {
    let data = data.map(Bytes::copy_from_slice);
    let acl = acl.to_vec();
    let flags = mode.flags();
    Ok(match (mode.is_ttl(), ttl) {
        (true, Some(ttl)) => MultiOp::CreateTtl(CreateTtlRequest {
            path,
            data,
            acl,
            flags,
            ttl: ttl.as_millis() as i64,
        }),
        (false, None) if mode.is_container() => MultiOp::CreateContainer(CreateRequest {
            path,
            data,
            acl,
            flags,
        }),
        (false, None) => MultiOp::Create(CreateRequest {
            path,
            data,
            acl,
            flags,
        }),
        _ => return Err(Error::BadArguments),
    })
}
