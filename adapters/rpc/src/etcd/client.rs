//! The etcd v3 calls the adapter makes (through the `etcd-client` crate), each bounded by
//! the call timeout, with etcd's errors mapped to retryable / permanent
//! [`AdapterError`]s:
//!
//! | what happened | class |
//! |---|---|
//! | connection refused / reset, gRPC `Unavailable`, `DeadlineExceeded`, no answer in time | retryable |
//! | `key not found` (a key deleted between the read and a lease-keeping put) | retryable |
//! | gRPC `Unauthenticated` / `PermissionDenied`, `authentication failed`, `user name is empty` | permanent (credentials or roles) |
//! | any other gRPC status (`InvalidArgument`, `FailedPrecondition`, ...) | permanent, with etcd's text |
//!
//! The connection is made lazily on the first call (so `new()` never touches the
//! network) and reused; it is dropped after an authentication error so a rotated password
//! file is read again on the next call.

use std::time::Duration;

use etcd_client::{
    Client, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use sluice_adapter::AdapterError;
use tokio::sync::Mutex;
use tonic::Code;

use crate::common::{human, SecretSource};

/// One key-value as read from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// The key (UTF-8, lossy).
    pub key: String,
    /// The raw value.
    pub value: Vec<u8>,
    /// Lease id (0: none).
    pub lease: i64,
    /// Revision that created the key.
    pub create_revision: i64,
    /// Revision of the last write (for a delete event: the delete's revision).
    pub mod_revision: i64,
}

impl From<&etcd_client::KeyValue> for Kv {
    fn from(kv: &etcd_client::KeyValue) -> Self {
        Kv {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value: kv.value().to_vec(),
            lease: kv.lease(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        }
    }
}

/// A lazily connected, shared etcd client.
pub(crate) struct EtcdConn {
    endpoints: Vec<String>,
    timeout: Duration,
    credentials: Option<(String, SecretSource)>,
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for EtcdConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConn").field("endpoints", &self.endpoints).finish()
    }
}

impl EtcdConn {
    pub fn new(endpoints: Vec<String>, timeout: Duration, credentials: Option<(String, SecretSource)>) -> Self {
        EtcdConn {
            endpoints,
            timeout,
            credentials,
            client: Mutex::new(None),
        }
    }

    /// `etcd at http://a,http://b`, for messages.
    pub fn describe(&self) -> String {
        format!("etcd at {}", self.endpoints.join(","))
    }

    /// The shared client, connecting (and authenticating) first if needed.
    pub async fn client(&self) -> Result<Client, AdapterError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.timeout)
            .with_timeout(self.timeout)
            .with_keep_alive(Duration::from_secs(10), self.timeout);
        if let Some((user, secret)) = &self.credentials {
            let password = secret
                .read()
                .map_err(|e| AdapterError::permanent(format!("{}: {e}", self.describe())))?;
            options = options.with_user(user.clone(), password);
        }
        let connect = Client::connect(self.endpoints.clone(), Some(options));
        let client = match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(self.error("connect", e)),
            Err(_) => return Err(self.timed_out("connect")),
        };
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Maps an etcd error; drops the cached client after an authentication failure.
    pub fn error(&self, what: &str, e: etcd_client::Error) -> AdapterError {
        let err = classify(&self.describe(), what, e);
        if err.message.contains("authentication") {
            if let Ok(mut slot) = self.client.try_lock() {
                *slot = None;
            }
        }
        err
    }

    fn timed_out(&self, what: &str) -> AdapterError {
        AdapterError::retryable(format!(
            "{} did not answer `{what}` within {}",
            self.describe(),
            human(self.timeout)
        ))
    }

    async fn run<T, F>(&self, what: &str, call: impl FnOnce(Client) -> F) -> Result<T, AdapterError>
    where
        F: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let client = self.client().await?;
        match tokio::time::timeout(self.timeout, call(client)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.error(what, e)),
            Err(_) => Err(self.timed_out(what)),
        }
    }

    /// Reads `key` (or every key under it with `prefix`); returns the key-values and the
    /// store revision the read saw.
    pub async fn get(&self, key: &str, prefix: bool) -> Result<(Vec<Kv>, i64), AdapterError> {
        let options = prefix.then(|| GetOptions::new().with_prefix());
        let resp = self
            .run(&format!("get {key}"), |mut c| async move { c.get(key, options).await })
            .await?;
        Ok((resp.kvs().iter().map(Kv::from).collect(), revision(resp.header())))
    }

    /// Deletes `key`, returning what it held and the revision of the delete.
    pub async fn delete_key(&self, key: &str) -> Result<(Vec<Kv>, i64), AdapterError> {
        let options = Some(DeleteOptions::new().with_prev_key());
        let resp = self
            .run(
                &format!("delete {key}"),
                |mut c| async move { c.delete(key, options).await },
            )
            .await?;
        Ok((resp.prev_kvs().iter().map(Kv::from).collect(), revision(resp.header())))
    }

    /// Deletes several keys in one transaction (one revision); returns that revision.
    pub async fn delete_keys(&self, keys: &[String]) -> Result<i64, AdapterError> {
        let ops: Vec<TxnOp> = keys.iter().map(|k| TxnOp::delete(k.as_str(), None)).collect();
        let resp = self
            .run(
                "delete (txn)",
                |mut c| async move { c.txn(Txn::new().and_then(ops)).await },
            )
            .await?;
        Ok(revision(resp.header()))
    }

    /// Puts `key` = `value`: under `lease` (0: none), or keeping the key's current lease
    /// with `keep_lease`. Returns the revision.
    pub async fn put(&self, key: &str, value: &[u8], lease: i64, keep_lease: bool) -> Result<i64, AdapterError> {
        let mut options = PutOptions::new();
        if keep_lease {
            options = options.with_ignore_lease();
        } else if lease != 0 {
            options = options.with_lease(lease);
        }
        let value = value.to_vec();
        let resp = self
            .run(&format!("put {key}"), |mut c| async move {
                c.put(key, value, Some(options)).await
            })
            .await?;
        Ok(revision(resp.header()))
    }

    /// Remaining TTL of a lease in seconds; `None` when it no longer exists.
    pub async fn lease_ttl(&self, id: i64) -> Result<Option<i64>, AdapterError> {
        let resp = self
            .run("lease time-to-live", |mut c| async move {
                c.lease_time_to_live(id, None).await
            })
            .await?;
        Ok((resp.ttl() > 0).then_some(resp.ttl()))
    }

    /// Grants a lease of `ttl` seconds; returns its id.
    pub async fn lease_grant(&self, ttl: i64) -> Result<i64, AdapterError> {
        let resp = self
            .run("lease grant", |mut c| async move { c.lease_grant(ttl, None).await })
            .await?;
        Ok(resp.id())
    }

    /// Revokes a lease (keys attached to it are deleted).
    pub async fn lease_revoke(&self, id: i64) -> Result<(), AdapterError> {
        self.run("lease revoke", |mut c| async move { c.lease_revoke(id).await })
            .await
            .map(drop)
    }

    /// Opens a watch on `key` (or the prefix) from `start_revision`.
    pub async fn watch(&self, key: &str, prefix: bool, start_revision: i64) -> Result<WatchStream, AdapterError> {
        let mut options = WatchOptions::new().with_start_revision(start_revision);
        if prefix {
            options = options.with_prefix();
        }
        self.run(&format!("watch {key}"), |mut c| async move {
            c.watch(key, Some(options)).await
        })
        .await
    }

    /// A cheap call proving the cluster answers (and the credentials work).
    pub async fn status(&self) -> Result<(), AdapterError> {
        self.run("get (health)", |mut c| async move {
            c.get("\0", Some(GetOptions::new().with_count_only())).await
        })
        .await
        .map(drop)
    }
}

fn revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map(|h| h.revision()).unwrap_or(0)
}

/// Maps an `etcd-client` error (see the module table).
pub(crate) fn classify(at: &str, what: &str, e: etcd_client::Error) -> AdapterError {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(status) => {
            let text = status.message().to_string();
            let auth = matches!(status.code(), Code::Unauthenticated | Code::PermissionDenied)
                || text.contains("authentication failed")
                || text.contains("user name is empty")
                || text.contains("permission denied")
                || text.contains("invalid auth token");
            if auth {
                AdapterError::permanent(format!(
                    "{at} refused `{what}`: {text} (authentication / authorization: check `username`, the password \
                     source and the user's roles)"
                ))
            } else if matches!(
                status.code(),
                Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::ResourceExhausted | Code::Cancelled
            ) || (status.code() == Code::Unknown && text.contains("transport"))
                // A key deleted between our read and a lease-keeping put: the next try reads again.
                || text.contains("key not found")
            {
                AdapterError::retryable(format!("{at} is unreachable (`{what}`): {text}"))
            } else {
                AdapterError::permanent(format!("{at} refused `{what}`: {:?}: {text}", status.code()))
            }
        }
        E::TransportError(t) => AdapterError::retryable(format!("{at} is unreachable (`{what}`): {t}")),
        E::IoError(io) => AdapterError::retryable(format!("{at} is unreachable (`{what}`): {io}")),
        E::WatchError(w) => AdapterError::retryable(format!("{at}: watch failed (`{what}`): {w}")),
        E::LeaseKeepAliveError(l) => AdapterError::retryable(format!("{at}: lease keep-alive failed: {l}")),
        E::InvalidArgs(_) | E::InvalidUri(_) | E::EndpointError(_) => {
            AdapterError::permanent(format!("{at}: bad configuration (`{what}`): {e}"))
        }
        other => AdapterError::retryable(format!("{at} failed `{what}`: {other}")),
    }
}

/// A lease this gateway keeps alive (after a restore with `leaseTtlSeconds`); the task
/// stops when this is dropped, and etcd then expires the lease after its TTL.
#[derive(Debug)]
pub(crate) struct KeepAlive {
    pub lease: i64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Keeps `lease` alive every `ttl / 3` seconds, reconnecting after errors, until the lease
/// is gone or the returned handle is dropped.
pub(crate) fn spawn_keepalive(conn: std::sync::Arc<EtcdConn>, lease: i64, ttl: i64) -> KeepAlive {
    let period = Duration::from_secs((ttl / 3).max(1) as u64);
    let task = tokio::spawn(async move {
        loop {
            if let Ok(mut client) = conn.client().await {
                if let Ok((mut keeper, mut stream)) = client.lease_keep_alive(lease).await {
                    loop {
                        if keeper.keep_alive().await.is_err() {
                            break;
                        }
                        match tokio::time::timeout(conn.timeout, stream.message()).await {
                            Ok(Ok(Some(resp))) if resp.ttl() > 0 => {}
                            Ok(Ok(Some(_))) => {
                                tracing::warn!(lease = %format!("{lease:x}"), "lease expired; keep-alive stops");
                                return;
                            }
                            _ => break,
                        }
                        tokio::time::sleep(period).await;
                    }
                }
            }
            tokio::time::sleep(period).await;
        }
    });
    KeepAlive { lease, task }
}
