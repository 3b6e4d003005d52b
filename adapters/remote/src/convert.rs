//! Conversions between the contract's types and the protocol's messages, and the one
//! place where errors are classified into gRPC status codes and back.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_adapter::{AdapterError, Observation, PodRef, Target, TrafficState};
use sluice_proto::adapter::v1 as pb;
use tonic::{Code, Status};

pub fn target_to_pb(t: &Target) -> pb::Target {
    pb::Target {
        pod: Some(pb::PodRef {
            cluster: t.pod.cluster.clone(),
            namespace: t.pod.namespace.clone(),
            name: t.pod.name.clone(),
            uid: t.pod.uid.clone(),
        }),
        ip: t.ip.to_string(),
        port: u32::from(t.port),
        params: t.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

/// A request's target, validated: a malformed one is the caller's error.
pub fn target_from_pb(t: Option<pb::Target>) -> Result<Target, Status> {
    let t = t.ok_or_else(|| Status::invalid_argument("target is required"))?;
    let ip =
        t.ip.parse()
            .map_err(|_| Status::invalid_argument(format!("target.ip {:?} is not an IP address", t.ip)))?;
    let port = u16::try_from(t.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| Status::invalid_argument(format!("target.port {} is not a port number", t.port)))?;
    let pod = t.pod.unwrap_or_default();
    Ok(Target {
        pod: PodRef {
            cluster: pod.cluster,
            namespace: pod.namespace,
            name: pod.name,
            uid: pod.uid,
        },
        ip,
        port,
        params: t.params.into_iter().collect::<BTreeMap<_, _>>(),
    })
}

pub fn observation_to_pb(o: &Observation) -> pb::Observation {
    let state = match o.state {
        TrafficState::Serving => pb::TrafficState::Serving,
        TrafficState::Registered => pb::TrafficState::Registered,
        TrafficState::Draining => pb::TrafficState::Draining,
        TrafficState::Drained => pb::TrafficState::Drained,
    };
    pb::Observation {
        state: state as i32,
        evidence: o.evidence.clone(),
        remaining_ms: o.remaining.map(|d| d.as_millis() as u64).unwrap_or(0),
        advance: o.advance,
        forced: o.forced.clone().unwrap_or_default(),
    }
}

pub fn observation_from_pb(o: pb::Observation) -> Result<Observation, AdapterError> {
    let state = match pb::TrafficState::try_from(o.state) {
        Ok(pb::TrafficState::Serving) => TrafficState::Serving,
        Ok(pb::TrafficState::Registered) => TrafficState::Registered,
        Ok(pb::TrafficState::Draining) => TrafficState::Draining,
        Ok(pb::TrafficState::Drained) => TrafficState::Drained,
        _ => {
            return Err(AdapterError::permanent(format!(
                "plugin answered an observation with state {} (unspecified or unknown): fix the plugin",
                o.state
            )))
        }
    };
    let mut obs = Observation::new(state, o.evidence)
        .with_remaining((o.remaining_ms > 0).then(|| Duration::from_millis(o.remaining_ms)));
    obs.advance = o.advance;
    obs.forced = (!o.forced.is_empty()).then_some(o.forced);
    Ok(obs)
}

/// Adapter error → status: retryable errors are `UNAVAILABLE`, permanent ones
/// `FAILED_PRECONDITION`; the message is kept.
pub fn error_to_status(e: AdapterError) -> Status {
    if e.is_retryable() {
        Status::unavailable(e.message)
    } else {
        Status::failed_precondition(e.message)
    }
}

/// Status → adapter error, by code (see the proto file's table).
pub fn status_to_error(plugin: &str, s: Status) -> AdapterError {
    let msg = format!("plugin {plugin}: {} ({:?})", s.message(), s.code());
    match s.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Internal
        | Code::Unknown
        | Code::Cancelled => AdapterError::retryable(msg),
        _ => AdapterError::permanent(msg),
    }
}
