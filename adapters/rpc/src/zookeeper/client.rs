//! The adapter's own ZooKeeper session (through the `zookeeper-client` crate) and the calls
//! it makes, each bounded by the call timeout, with ZooKeeper's errors mapped to retryable
//! / permanent [`AdapterError`]s:
//!
//! | what happened | class |
//! |---|---|
//! | no server reachable (`NoHosts`), connection loss, timeout, session expired, throttled | retryable (an expired or closed session is replaced on the next call) |
//! | a transport failure the client reports as text (an I/O error, "no response from connection in …ms" on a server too slow to answer) | retryable |
//! | `NoAuth` (ACL refuses the digest user), `AuthFailed` | permanent |
//! | the interface node does not exist | permanent (reported by the adapter) |
//! | anything else | permanent, with ZooKeeper's text |
//!
//! The session is opened lazily on the first call (`new()` never touches the network) with
//! `fail_eagerly`, so an unreachable ensemble fails fast instead of waiting a whole session
//! timeout.

use std::time::Duration;

use sluice_adapter::AdapterError;
use tokio::sync::Mutex;
use zookeeper_client as zk;

use crate::common::{human, SecretSource};
use crate::zookeeper::dubbo::Paths;

/// One consistent read of everything `observe` needs (one `multiRead` round trip).
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// Children of `configurators` (none when the node is missing).
    pub configurators: Vec<String>,
    /// Children of `providers` (none when the node is missing).
    pub providers: Vec<String>,
    /// `cversion` of `providers`: bumps whenever a provider node comes or goes.
    pub providers_cversion: Option<i32>,
    /// Stat of Sluice's override node, when it exists.
    pub override_stat: Option<zk::Stat>,
}

/// A lazily opened ZooKeeper session.
pub(crate) struct ZkConn {
    connect: String,
    session_timeout: Duration,
    timeout: Duration,
    digest: Option<(String, SecretSource)>,
    client: Mutex<Option<zk::Client>>,
}

impl std::fmt::Debug for ZkConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkConn").field("connect", &self.connect).finish()
    }
}

impl ZkConn {
    pub fn new(
        connect: String,
        session_timeout: Duration,
        timeout: Duration,
        digest: Option<(String, SecretSource)>,
    ) -> Self {
        ZkConn {
            connect,
            session_timeout,
            timeout,
            digest,
            client: Mutex::new(None),
        }
    }

    /// `ZooKeeper at host:port`, for messages.
    pub fn describe(&self) -> String {
        format!("ZooKeeper at {}", self.connect)
    }

    /// The session's client, (re)connecting when there is none or it expired.
    pub async fn client(&self) -> Result<zk::Client, AdapterError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.state().is_terminated() {
                return Ok(c.clone());
            }
        }
        let mut connector = zk::Client::connector()
            .with_session_timeout(self.session_timeout)
            .with_fail_eagerly();
        if let Some((user, secret)) = &self.digest {
            let password = secret
                .read()
                .map_err(|e| AdapterError::permanent(format!("{}: {e}", self.describe())))?;
            connector = connector.with_auth("digest", format!("{user}:{password}").as_bytes());
        }
        let client = match tokio::time::timeout(self.timeout, connector.connect(&self.connect)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(self.map(e, "connect", "")),
            Err(_) => return Err(self.timed_out("connect")),
        };
        *slot = Some(client.clone());
        Ok(client)
    }

    fn timed_out(&self, what: &str) -> AdapterError {
        AdapterError::retryable(format!(
            "{} did not answer `{what}` within {}",
            self.describe(),
            human(self.timeout)
        ))
    }

    /// Maps a ZooKeeper error (see the module table).
    pub fn map(&self, e: zk::Error, what: &str, path: &str) -> AdapterError {
        use zk::Error as E;
        let at = self.describe();
        let what = format!("{what} {path}");
        let what = what.trim_end();
        match e {
            E::NoHosts | E::Timeout | E::ConnectionLoss | E::Throttled | E::SessionMoved => {
                AdapterError::retryable(format!("{at} is unreachable (`{what}`): {e}"))
            }
            // The client's transport failures (I/O errors, a connection that stopped
            // answering) carry no variant of their own.
            E::Custom(_) => AdapterError::retryable(format!("{at} is unreachable (`{what}`): {e}")),
            E::SessionExpired | E::ClientClosed => AdapterError::retryable(format!(
                "{at}: the adapter's session ended (`{what}`: {e}); a new session is opened on the next call"
            )),
            E::NoAuth | E::AuthFailed => AdapterError::permanent(format!(
                "{at} refused `{what}`: {e} (check `digestUser`, its password and the nodes' ACLs)"
            )),
            other => AdapterError::permanent(format!("{at} refused `{what}`: {other}")),
        }
    }

    async fn run<T, F>(&self, what: &str, path: &str, call: impl FnOnce(zk::Client) -> F) -> Result<T, AdapterError>
    where
        F: std::future::Future<Output = Result<T, zk::Error>>,
    {
        let client = self.client().await?;
        match tokio::time::timeout(self.timeout, call(client)).await {
            Ok(r) => r.map_err(|e| self.map(e, what, path)),
            Err(_) => Err(self.timed_out(&format!("{what} {path}"))),
        }
    }

    /// Like [`Self::run`], but hands ZooKeeper's own error back for the caller to inspect.
    async fn try_run<T, F>(
        &self,
        what: &str,
        path: &str,
        call: impl FnOnce(zk::Client) -> F,
    ) -> Result<Result<T, zk::Error>, AdapterError>
    where
        F: std::future::Future<Output = Result<T, zk::Error>>,
    {
        let client = self.client().await?;
        match tokio::time::timeout(self.timeout, call(client)).await {
            Ok(Ok(v)) => Ok(Ok(v)),
            Ok(Err(e @ (zk::Error::NoNode | zk::Error::NodeExists))) => Ok(Err(e)),
            Ok(Err(e)) => Err(self.map(e, what, path)),
            Err(_) => Err(self.timed_out(&format!("{what} {path}"))),
        }
    }

    /// Reads the interface's state in one round trip; `None` when the interface node does
    /// not exist.
    pub async fn snapshot(&self, paths: &Paths) -> Result<Option<Snapshot>, AdapterError> {
        let results = self
            .run("multi-read", &paths.interface, |c| async move {
                let mut reader = c.new_multi_reader();
                reader.add_get_data(&paths.interface)?;
                reader.add_get_children(&paths.configurators)?;
                reader.add_get_children(&paths.providers)?;
                reader.add_get_data(&paths.providers)?;
                reader.add_get_data(&paths.override_node)?;
                reader.commit().await
            })
            .await?;
        let mut it = results.into_iter();
        let mut next = || {
            it.next()
                .unwrap_or(zk::MultiReadResult::Error { err: zk::Error::NoNode })
        };
        if let zk::MultiReadResult::Error { err } = next() {
            return match err {
                zk::Error::NoNode => Ok(None),
                e => Err(self.map(e, "get", &paths.interface)),
            };
        }
        let children = |r: zk::MultiReadResult| match r {
            zk::MultiReadResult::Children { children } => children,
            _ => Vec::new(),
        };
        let stat = |r: zk::MultiReadResult| match r {
            zk::MultiReadResult::Data { stat, .. } => Some(stat),
            _ => None,
        };
        Ok(Some(Snapshot {
            configurators: children(next()),
            providers: children(next()),
            providers_cversion: stat(next()).map(|s| s.cversion),
            override_stat: stat(next()),
        }))
    }

    /// Whether `path` exists.
    pub async fn exists(&self, path: &str) -> Result<bool, AdapterError> {
        self.run("exists", path, |c| async move { c.check_stat(path).await })
            .await
            .map(|s| s.is_some())
    }

    /// Creates a persistent, world-accessible (as Dubbo's own nodes are) empty node;
    /// `Ok(false)` when it already exists, `Err(NoNode)` inside when the parent is missing.
    pub async fn create(&self, path: &str) -> Result<Result<bool, zk::Error>, AdapterError> {
        let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        let created = self
            .try_run("create", path, |c| async move { c.create(path, &[], &options).await })
            .await?;
        Ok(match created {
            Ok(_) => Ok(true),
            Err(zk::Error::NodeExists) => Ok(false),
            Err(e) => Err(e),
        })
    }

    /// Creates `path` and its missing parents (persistent, world-accessible).
    pub async fn mkdir(&self, path: &str) -> Result<(), AdapterError> {
        let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        self.run("mkdir", path, |c| async move { c.mkdir(path, &options).await })
            .await
    }

    /// Deletes `path`; `Ok(false)` when it did not exist.
    pub async fn delete(&self, path: &str) -> Result<bool, AdapterError> {
        let deleted = self
            .try_run("delete", path, |c| async move { c.delete(path, None).await })
            .await?;
        Ok(deleted.is_ok())
    }
}
