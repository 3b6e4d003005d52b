//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go's leaderelection
//! does it (and kubert's lease loop): every `retry` the replica reads the Lease; the holder
//! renews it, an expired or released one is taken with an optimistic update
//! (`resourceVersion`), so two replicas can never both win.
//!
//! Expiry is judged by this replica's own clock: a Lease counts as expired when its
//! record (holder, renew time, version) has not changed for `leaseDurationSeconds` since
//! *this* replica first saw it — clocks of different machines are never compared. The
//! holder stops writing at its renew deadline (shorter than the lease), counted from the
//! start of its last successful renew, so it has stopped before anyone may take over.
//!
//! On shutdown the holder releases the Lease (empty holder), so a standby takes over at
//! its next retry instead of after the whole lease duration.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};
use kube::Client;
use tracing::{info, warn};

use crate::authority::Authority;
use crate::config::LeaderElectionConfig;

/// What a leader election attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// This replica holds the lease (acquired or renewed).
    Held,
    /// Someone else holds a live lease.
    Other(String),
}

/// The lease loop's memory between attempts.
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaderElectionConfig,
    identity: String,
    /// The other holder's record as last seen, and when this replica first saw it.
    observed: Option<(String, Instant)>,
}

fn now_micro() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

impl Elector {
    pub fn new(client: Client, cfg: LeaderElectionConfig, identity: &str) -> Elector {
        Elector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            identity: identity.to_string(),
            observed: None,
        }
    }

    fn spec(&self, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.cfg.lease_seconds as i32),
            acquire_time: Some(acquired.unwrap_or_else(now_micro)),
            renew_time: Some(now_micro()),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One attempt to acquire or renew.
    pub async fn attempt(&mut self) -> Result<Attempt, kube::Error> {
        let name = self.cfg.name.clone();
        let Some(mut lease) = self.api.get_opt(&name).await? else {
            let lease = Lease {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(0, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Other("(created meanwhile)".into())),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let transitions = spec.lease_transitions.unwrap_or(0);
        let new_spec = match &holder {
            Some(h) if *h == self.identity => {
                // Renew: keep the acquire time and the transitions.
                self.spec(transitions, spec.acquire_time.clone())
            }
            Some(h) => {
                let record = format!(
                    "{h}|{:?}|{}",
                    spec.renew_time,
                    lease.metadata.resource_version.clone().unwrap_or_default()
                );
                let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(1) as u64);
                let first_seen = match &self.observed {
                    Some((seen, at)) if *seen == record => *at,
                    _ => {
                        self.observed = Some((record, Instant::now()));
                        Instant::now()
                    }
                };
                if first_seen.elapsed() < duration {
                    return Ok(Attempt::Other(h.clone()));
                }
                info!(previous = %h, "The leader lease expired; taking it over.");
                self.spec(transitions + 1, None)
            }
            None => self.spec(transitions + 1, None),
        };
        lease.spec = Some(new_spec);
        match self.api.replace(&name, &PostParams::default(), &lease).await {
            Ok(_) => {
                self.observed = None;
                Ok(Attempt::Held)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Other("(changed meanwhile)".into())),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up (empty holder), if this replica holds it.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else { return Ok(()) };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now_micro());
        self.api.replace(&self.cfg.name, &PostParams::default(), &lease).await?;
        Ok(())
    }
}

/// Runs the lease loop: keeps `authority` up to date; calls `on_elected` each time this
/// replica becomes the leader. Ends when `stop` is notified, releasing the lease.
pub async fn run(
    mut elector: Elector,
    authority: Arc<Authority>,
    on_elected: impl Fn() + Send + 'static,
    stop: Arc<tokio::sync::Notify>,
) {
    let retry = Duration::from_millis(elector.cfg.retry_ms);
    let deadline = Duration::from_millis(elector.cfg.renew_deadline_ms);
    let mut leading = false;
    loop {
        let started = Instant::now();
        let could_write = authority.may_write();
        let attempt = tokio::select! {
            a = tokio::time::timeout(retry.max(Duration::from_millis(100)), elector.attempt()) => a,
            _ = stop.notified() => break,
        };
        match attempt {
            Ok(Ok(Attempt::Held)) => {
                authority.renewed(started + deadline);
                if !leading {
                    leading = true;
                    info!(identity = %elector.identity, "Elected leader: this replica acts from now on.");
                    on_elected();
                } else if !could_write {
                    // Renewed only after the renew deadline had passed: the passes that
                    // stopped meanwhile are picked up again.
                    info!("Leader lease renewed late; taking the pods up again.");
                    on_elected();
                }
            }
            Ok(Ok(Attempt::Other(holder))) => {
                if leading {
                    warn!(%holder, "Lost the leader lease: no more writes from this replica.");
                    leading = false;
                }
                authority.revoke();
            }
            Ok(Err(e)) => warn!(error = %e, "Leader lease: could not read or renew; retrying."),
            Err(_) => warn!("Leader lease: the API server did not answer in time; retrying."),
        }
        if leading && !authority.may_write() {
            warn!("Leader lease not renewed before the renew deadline: no more writes from this replica.");
            leading = false;
            authority.revoke();
        }
        tokio::select! {
            _ = tokio::time::sleep(retry.saturating_sub(started.elapsed())) => {}
            _ = stop.notified() => break,
        }
    }
    authority.revoke();
    if leading {
        match elector.release().await {
            Ok(()) => info!("Leader lease released: a standby takes over now."),
            Err(e) => warn!(error = %e, "Could not release the leader lease; it expires by itself."),
        }
    }
}
