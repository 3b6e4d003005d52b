//! The gRPC API end to end: the simulated API server, real HAProxy, the gateway with its
//! API on TLS; callers authenticated by client certificate, static token and TokenReview.

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use serde_json::json;
use sluice::demo::Stage;
use sluice_proto::v1 as pb;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::Code;

mod support;
use support::*;

/// A stage of two serving pods and a gateway whose API listens on TLS, with:
/// - `alice` (client certificate, group `sre`): every verb everywhere;
/// - `ci` (static token): drain and restore in `default`;
/// - `system:serviceaccount:default:deployer` (ServiceAccount token, TokenReview): read in
///   `default`.
pub struct ApiStage {
    pub stage: Stage,
    /// The gateway in this process, or `sluice run` (`proc`).
    pub gw: Option<sluice::gateway::Gateway>,
    pub proc: Option<Gw>,
    pub api_addr: std::net::SocketAddr,
    /// `sluice run`'s log (JSON lines), when it runs as a process.
    pub log: std::path::PathBuf,
    /// The gateway's configuration.
    pub config: String,
    pub ca_pem: String,
    pub alice: (String, String),
    /// A certificate for `mallory` from a CA the gateway does not trust.
    pub stranger: (String, String, String),
    pub ci_token: String,
    pub sa_token: String,
}

const CI_TOKEN: &str = "ci-token-0123456789abcdef";

pub const RULES: &str = "  rules:\n  - groups: [sre]\n    verbs: ['*']\n    namespaces: ['*']\n  - users: [ci]\n    verbs: [drain, restore]\n    clusters: [demo]\n    namespaces: [default]\n  - users: ['system:serviceaccount:default:*']\n    verbs: [read]\n    namespaces: [default]\n";

impl ApiStage {
    pub async fn start(extra: &str) -> ApiStage {
        Self::start_as(extra, false).await
    }

    /// `process`: the gateway runs as `sluice run --log-format json`, its log in `log`.
    pub async fn start_as(extra: &str, process: bool) -> ApiStage {
        Self::start_in(extra, process, 1).await
    }

    /// Two pods over `clusters` clusters (`demo`, `west`: web-1 in demo, web-2 in west).
    pub async fn start_in(extra: &str, process: bool, clusters: usize) -> ApiStage {
        let stage = Stage::with_clusters(2, true, clusters).await.expect("stage");
        let (issued, clients) = kube_sim::tls::issue_with_clients(&["127.0.0.1"], &[("alice", &["sre"][..])]).unwrap();
        let (_, strangers) = kube_sim::tls::issue_with_clients(&["127.0.0.1"], &[("mallory", &["sre"][..])]).unwrap();
        let d = &stage.dir;
        for (f, text) in [
            ("api.crt", &issued.cert_pem),
            ("api.key", &issued.key_pem),
            ("ca.crt", &issued.ca_pem),
        ] {
            std::fs::write(d.join(f), text).unwrap();
        }
        std::fs::write(d.join("ci.token"), format!("{CI_TOKEN}\n")).unwrap();
        let health = free_addr();
        let listen = if process {
            free_addr().to_string()
        } else {
            "127.0.0.1:0".to_string()
        };
        let text = stage.gateway_config_text(health)
            + &format!(
                "api:\n  listen: {listen}\n  tls:\n    certFile: {0}/api.crt\n    keyFile: {0}/api.key\n    clientCAFile: {0}/ca.crt\n  tokens:\n  - user: ci\n    file: {0}/ci.token\n  tokenReview:\n    audiences: [sluice]\n{RULES}{extra}",
                d.display()
            );
        let log = d.join("gateway.log");
        let (gw, proc, api_addr) = if process {
            let cfg = d.join("gateway.yaml");
            std::fs::write(&cfg, &text).unwrap();
            let gw = spawn_gateway_args(&cfg, health, Some(&log), &["--log-format", "json"]).await;
            (None, Some(gw), listen.parse().unwrap())
        } else {
            let gw = stage.start_gateway_with(&text).await.expect("gateway");
            let addr = gw.api_addr.unwrap();
            (Some(gw), None, addr)
        };
        for i in 0..2 {
            stage.wait_ready(i, T).await.unwrap();
        }
        let sa_token = stage
            .cluster()
            .issue_service_account_token("default", "deployer", &["sluice"]);
        ApiStage {
            gw,
            proc,
            api_addr,
            log,
            config: text,
            ca_pem: issued.ca_pem,
            alice: clients[0].clone(),
            stranger: (strangers[0].0.clone(), strangers[0].1.clone(), String::new()),
            ci_token: CI_TOKEN.into(),
            sa_token,
            stage,
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_addr.port())
    }

    /// A client over TLS, presenting `cert` when given.
    pub async fn client(&self, cert: Option<&(String, String)>) -> pb::sluice_client::SluiceClient<Channel> {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((c, k)) = cert {
            tls = tls.identity(Identity::from_pem(c, k));
        }
        let ch = Channel::from_shared(self.url())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .expect("connect to the API");
        pb::sluice_client::SluiceClient::new(ch)
    }

    pub async fn alice(&self) -> pb::sluice_client::SluiceClient<Channel> {
        self.client(Some(&self.alice)).await
    }
}

/// A request with a bearer token.
pub fn with_token<T>(m: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

pub fn pod(name: &str) -> pb::Target {
    pb::Target {
        target: Some(pb::target::Target::Pod(pb::PodRef {
            namespace: "default".into(),
            name: name.into(),
            ..Default::default()
        })),
    }
}

fn drain(name: &str, reason: &str) -> pb::DrainRequest {
    pb::DrainRequest {
        target: Some(pod(name)),
        reason: reason.into(),
        ..Default::default()
    }
}

/// Every message of a Progress stream.
async fn all(mut s: tonic::Streaming<pb::Progress>) -> Vec<pb::Progress> {
    let mut out = Vec::new();
    while let Some(m) = within("progress", s.message()).await.expect("stream") {
        out.push(m);
    }
    out
}

fn annotations(p: &k8s_openapi::api::core::v1::Pod) -> std::collections::BTreeMap<String, String> {
    p.metadata.annotations.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_api_drain_waits_for_haproxys_evidence_and_a_restore_serves_again_with_nothing_lost() {
    let s = ApiStage::start("").await;
    let stage = &s.stage;
    wait_status(&stage.pods, "web-1", "serving").await;
    let mut api = s.alice().await;
    // A watch opened first sees the whole story.
    let mut watch = api
        .watch(pb::WatchRequest {
            target: Some(pod("web-1")),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = within("snapshot", watch.message()).await.unwrap().unwrap();
    assert_eq!(first.r#type, pb::watch_event::Type::Snapshot as i32);
    assert_eq!(first.pod.as_ref().unwrap().state, "serving");
    let synced = within("synced", watch.message()).await.unwrap().unwrap();
    assert_eq!(synced.r#type, pb::watch_event::Type::Synced as i32);

    let held = hold_in_web(stage, 4, 700).await;
    let mut r = tonic::Request::new(pb::DrainRequest {
        wait: true,
        wait_seconds: 60,
        ..drain("web-1", "kernel patch")
    });
    r.metadata_mut().insert(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            .parse()
            .unwrap(),
    );
    let progress = all(api.drain(r).await.expect("drain").into_inner()).await;
    let answer = progress[0].operation.clone().expect("the first message is the answer");
    assert_eq!(answer.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert!(
        answer.plan[0].contains("record sluice.dev/desired=drained"),
        "{:?}",
        answer.plan
    );
    let last = progress.last().unwrap();
    assert!(last.done && !last.timed_out, "{last:?}");
    // Drained only after HAProxy's last session ended: every held request was answered.
    for h in held {
        assert_eq!(within("a held request", h).await.unwrap().unwrap(), 200);
    }
    let states: Vec<&str> = progress
        .iter()
        .flat_map(|p| p.pods.iter().map(|t| t.state.as_str()))
        .collect();
    assert!(
        states.contains(&"draining"),
        "progress shows the drain under way: {states:?}"
    );
    assert_eq!(*states.last().unwrap(), "drained");
    let p = stage.get(0).await.unwrap();
    let a = annotations(&p);
    assert_eq!(a["sluice.dev/desired"], "drained");
    let by: serde_json::Value = serde_json::from_str(&a["sluice.dev/desired-by"]).unwrap();
    assert_eq!(by["by"], "alice");
    assert_eq!(by["why"], "kernel patch");
    assert_eq!(
        a["sluice.dev/traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert_eq!(sluice_state(&p), "drained");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&a["sluice.dev/status"]).unwrap()["traceId"],
        "0af7651916cd43dd8448eb211c80319c",
        "the drain runs in the caller's trace"
    );
    assert!(stage.status_in("web", 0).await.unwrap().unwrap().starts_with("MAINT"));

    let started = wait_event(&stage.client, "web-1", "DrainStarted").await;
    assert!(started.contains("(asked by alice: kernel patch)"), "{started}");
    // Get agrees.
    let got = api
        .get(pb::GetRequest {
            pod: Some(pb::PodRef {
                namespace: "default".into(),
                name: "web-1".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.state, "drained");
    assert_eq!(got.requested_by, "alice");
    assert_eq!(got.drain_signals, vec!["desired".to_string()]);

    let progress = all(api
        .restore(pb::RestoreRequest {
            target: Some(pod("web-1")),
            reason: "patched".into(),
            wait: true,
            ..Default::default()
        })
        .await
        .expect("restore")
        .into_inner())
    .await;
    let last = progress.last().unwrap();
    assert!(last.done, "{last:?}");
    let p = stage.get(0).await.unwrap();
    assert_eq!(gate(&p).as_deref(), Some("True"));
    assert!(!annotations(&p).contains_key("sluice.dev/desired"));
    assert!(!annotations(&p).contains_key("sluice.dev/desired-by"));
    assert_eq!(stage.status_in("web", 0).await.unwrap().as_deref(), Some("UP"));

    // The watch saw every transition, in order.
    let mut seen = vec![];
    while seen.last().map(String::as_str) != Some("serving") || seen.len() < 3 {
        let ev = within("a watch event", watch.message()).await.unwrap().unwrap();
        assert_eq!(ev.r#type, pb::watch_event::Type::Changed as i32);
        let st = ev.pod.unwrap().state;
        if seen.last() != Some(&st) {
            seen.push(st);
        }
    }
    let drained_at = seen.iter().position(|x| x == "drained").expect("drained seen");
    let draining_at = seen.iter().position(|x| x == "draining").expect("draining seen");
    let restoring_at = seen.iter().position(|x| x == "restoring").expect("restoring seen");
    assert!(draining_at < drained_at && drained_at < restoring_at, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_ids_dry_runs_and_preconditions_behave_as_the_aips_say() {
    let s = ApiStage::start("").await;
    let stage = &s.stage;
    wait_status(&stage.pods, "web-1", "serving").await;
    let mut api = s.alice().await;
    let before = stage.get(0).await.unwrap();

    // validate_only: the plan, nothing written.
    let op = all(api
        .drain(pb::DrainRequest {
            validate_only: true,
            wait: true,
            ..drain("web-1", "check")
        })
        .await
        .unwrap()
        .into_inner())
    .await;
    assert_eq!(op.len(), 1, "a dry run answers once");
    let answer = op[0].operation.clone().unwrap();
    assert!(answer.validate_only && answer.plan[0].contains("record"), "{answer:?}");
    let after = stage.get(0).await.unwrap();
    assert_eq!(
        before.metadata.resource_version, after.metadata.resource_version,
        "nothing written"
    );

    // A request id: the second call answers the first answer and writes nothing.
    let req = pb::DrainRequest {
        request_id: "0d1c8b9e-1".into(),
        ..drain("web-1", "node maintenance")
    };
    let first = all(api.drain(req.clone()).await.unwrap().into_inner()).await[0]
        .operation
        .clone()
        .unwrap();
    assert!(!first.replayed);
    stage.wait_drained(0, T).await.unwrap();
    wait_status(&stage.pods, "web-1", "drained").await;
    let settled = stage.get(0).await.unwrap().metadata.resource_version;
    let again = all(api.drain(req.clone()).await.unwrap().into_inner()).await[0]
        .operation
        .clone()
        .unwrap();
    assert!(again.replayed, "{again:?}");
    assert_eq!(again.plan, first.plan, "the first answer");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stage.get(0).await.unwrap().metadata.resource_version,
        settled,
        "a repeat writes nothing"
    );
    // A replica that never saw the first call (a restart, another replica: here a shadow
    // with an API of its own) recognises the repeat from the pod's record.
    let other = stage
        .start_gateway_with(
            &s.config
                .replace("listen:\n  health: ", "shadow: true\nlisten:\n  health: ")
                .replace(
                    &format!("  health: {}", health_of(&s.config)),
                    &format!("  health: {}", free_addr()),
                ),
        )
        .await
        .expect("a second gateway");
    let url = format!("https://127.0.0.1:{}", other.api_addr.unwrap().port());
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&s.ca_pem))
        .identity(Identity::from_pem(&s.alice.0, &s.alice.1));
    let ch = Channel::from_shared(url)
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let elsewhere = all(pb::sluice_client::SluiceClient::new(ch)
        .drain(req.clone())
        .await
        .unwrap()
        .into_inner())
    .await[0]
        .operation
        .clone()
        .unwrap();
    assert!(elsewhere.replayed, "{elsewhere:?}");
    assert_eq!(elsewhere.plan, first.plan);
    drop(other);
    // The same id for another method (a Restore) is another request: refused, not replayed.
    let e = api
        .restore(pb::RestoreRequest {
            target: req.target.clone(),
            reason: req.reason.clone(),
            request_id: req.request_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // The same id for another request is refused.
    let e = api
        .drain(pb::DrainRequest {
            reason: "other".into(),
            ..req.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("different request"), "{}", e.message());

    // Concurrent repeats of one new id: one write, one first answer.
    let req2 = pb::RestoreRequest {
        target: Some(pod("web-1")),
        reason: "done".into(),
        request_id: "0d1c8b9e-2".into(),
        ..Default::default()
    };
    let (mut api_a, mut api_b) = (s.alice().await, s.alice().await);
    let (a, b) = tokio::join!(api_a.restore(req2.clone()), api_b.restore(req2.clone()));
    let a = all(a.unwrap().into_inner()).await[0].operation.clone().unwrap();
    let b = all(b.unwrap().into_inner()).await[0].operation.clone().unwrap();
    assert!(a.replayed != b.replayed, "exactly one of the two ran: {a:?} {b:?}");
    stage.wait_ready(0, T).await.unwrap();
    wait_status(&stage.pods, "web-1", "serving").await;

    // Preconditions: a stale UID or etag is ABORTED, nothing written.
    let p = stage.get(0).await.unwrap();
    let mut stale = pb::DrainRequest {
        target: Some(pb::Target {
            target: Some(pb::target::Target::Pod(pb::PodRef {
                namespace: "default".into(),
                name: "web-1".into(),
                uid: "00000000-0000-0000-0000-000000000000".into(),
                ..Default::default()
            })),
        }),
        ..drain("web-1", "x")
    };
    let e = api.drain(stale.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    stale.target = Some(pb::Target {
        target: Some(pb::target::Target::Pod(pb::PodRef {
            namespace: "default".into(),
            name: "web-1".into(),
            uid: p.metadata.uid.clone().unwrap(),
            etag: "1".into(),
            ..Default::default()
        })),
    });
    let e = api.drain(stale.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    assert!(e.message().contains("etag"), "{}", e.message());
    assert_eq!(
        stage.get(0).await.unwrap().metadata.resource_version,
        p.metadata.resource_version
    );

    // Clear errors for bad requests.
    for (req, code, says) in [
        (drain("web-1", ""), Code::InvalidArgument, "reason is required"),
        (drain("Web_1", "x"), Code::InvalidArgument, "not a valid name"),
        (drain("web-9", "x"), Code::NotFound, "no pod default/web-9"),
        (
            pb::DrainRequest {
                target: Some(pb::Target {
                    target: Some(pb::target::Target::Pod(pb::PodRef {
                        cluster: "mars".into(),
                        namespace: "default".into(),
                        name: "web-1".into(),
                        ..Default::default()
                    })),
                }),
                ..drain("web-1", "x")
            },
            Code::InvalidArgument,
            "unknown cluster \"mars\": this gateway watches demo",
        ),
        (
            pb::DrainRequest {
                target: Some(pb::Target {
                    target: Some(pb::target::Target::Selector(pb::Selector {
                        namespace: "default".into(),
                        label_selector: "app in web".into(),
                        ..Default::default()
                    })),
                }),
                ..drain("web-1", "x")
            },
            Code::InvalidArgument,
            "parentheses",
        ),
        (
            pb::DrainRequest {
                wait_seconds: 10,
                ..drain("web-1", "x")
            },
            Code::InvalidArgument,
            "wait_seconds is set but wait is false",
        ),
        (
            pb::DrainRequest {
                request_id: "spaces are not ids".into(),
                ..drain("web-1", "x")
            },
            Code::InvalidArgument,
            "request_id must be",
        ),
    ] {
        let e = api.drain(req).await.unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
        assert!(e.message().contains(says), "{} should say {says}", e.message());
    }

    // A restore while another signal drains the pod is refused, nothing changed.
    stage
        .pods
        .patch(
            "web-2",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"lifecycle.apps.kruise.io/state": "PreparingUpdate"}}})),
        )
        .await
        .unwrap();
    until("the gateway to see the label", || async {
        let t = s
            .alice()
            .await
            .get(pb::GetRequest {
                pod: Some(pb::PodRef {
                    namespace: "default".into(),
                    name: "web-2".into(),
                    ..Default::default()
                }),
            })
            .await
            .ok()?
            .into_inner();
        t.drain_signals
            .contains(&"lifecycle:PreparingUpdate".to_string())
            .then_some(())
    })
    .await;
    let e = api
        .restore(pb::RestoreRequest {
            target: Some(pod("web-2")),
            reason: "no".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("lifecycle:PreparingUpdate"), "{}", e.message());

    // Release: the ledger guard never; a kind's finalizer of a draining pod, with a
    // Warning Event.
    let release = |kind: &str| pb::ReleaseRequest {
        pod: Some(pb::PodRef {
            namespace: "default".into(),
            name: "web-2".into(),
            ..Default::default()
        }),
        kind: kind.into(),
        reason: "stuck backend".into(),
        ..Default::default()
    };
    let e = api.release(release("ledger")).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = api
        .release(pb::ReleaseRequest {
            reason: String::new(),
            ..release("slb")
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("reason is required"), "{}", e.message());
    let e = api
        .release(pb::ReleaseRequest {
            pod: Some(pb::PodRef {
                namespace: "default".into(),
                name: "web-1".into(),
                ..Default::default()
            }),
            ..release("slb")
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "a serving pod: {e:?}");
    stage.wait_drained(1, T).await.ok();
}

/// Identity × verb × namespace × cluster: what each caller may do, with UNAUTHENTICATED for
/// no or bad credentials; every mutating call, allowed or not, is one audit line of the
/// real `sluice` process, in order, with who and the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_authorization_matrix_holds_for_certificates_tokens_and_service_accounts() {
    let s = ApiStage::start_in("", true, 2).await;
    let mut expected: Vec<(String, String, String)> = Vec::new();
    // Another namespace with a pod-less selector: allowed callers get NOT_FOUND (no pod),
    // refused ones PERMISSION_DENIED, before anything is looked up.
    enum Who {
        Alice,
        Ci,
        Sa,
        Stranger,
        Nobody,
        BadToken,
    }
    let callers = [Who::Alice, Who::Ci, Who::Sa, Who::Stranger, Who::Nobody, Who::BadToken];
    for who in callers {
        let (mut api, token) = match who {
            Who::Alice => (s.alice().await, None),
            Who::Ci => (s.client(None).await, Some(s.ci_token.clone())),
            Who::Sa => (s.client(None).await, Some(s.sa_token.clone())),
            Who::Stranger => {
                // A certificate of an unknown CA fails the handshake (or the call).
                let c = (s.stranger.0.clone(), s.stranger.1.clone());
                let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&s.ca_pem));
                tls = tls.identity(Identity::from_pem(&c.0, &c.1));
                let ch = Channel::from_shared(s.url())
                    .unwrap()
                    .tls_config(tls)
                    .unwrap()
                    .connect()
                    .await;
                match ch {
                    Err(_) => continue,
                    Ok(ch) => (pb::sluice_client::SluiceClient::new(ch), None),
                }
            }
            Who::Nobody => (s.client(None).await, None),
            Who::BadToken => (s.client(None).await, Some("not-a-token-at-all-really".to_string())),
        };
        let name = match who {
            Who::Alice => "alice",
            Who::Ci => "ci",
            Who::Sa => "sa",
            Who::Stranger => "stranger",
            Who::Nobody => "nobody",
            Who::BadToken => "bad-token",
        };
        let req = |m| match &token {
            Some(t) => with_token(m, t),
            None => tonic::Request::new(m),
        };
        for (cluster, ns, pod) in [
            ("demo", "default", "web-1"),
            ("west", "default", "web-2"),
            ("demo", "bank", "web-1"),
        ] {
            let pod_ref = pb::PodRef {
                cluster: cluster.into(),
                namespace: ns.into(),
                name: pod.into(),
                ..Default::default()
            };
            let target = pb::Target {
                target: Some(pb::target::Target::Pod(pod_ref.clone())),
            };
            let get = api
                .get(req_of(
                    &token,
                    pb::GetRequest {
                        pod: Some(pod_ref.clone()),
                    },
                ))
                .await
                .map(|_| ());
            let dr = api
                .drain(req(pb::DrainRequest {
                    target: Some(target.clone()),
                    reason: "matrix".into(),
                    validate_only: true,
                    ..Default::default()
                }))
                .await
                .map(|_| ());
            let rs = api
                .restore(req_of(
                    &token,
                    pb::RestoreRequest {
                        target: Some(target.clone()),
                        reason: "matrix".into(),
                        validate_only: true,
                        ..Default::default()
                    },
                ))
                .await
                .map(|_| ());
            let rl = api
                .release(req_of(
                    &token,
                    pb::ReleaseRequest {
                        pod: Some(pod_ref.clone()),
                        reason: "matrix".into(),
                        validate_only: true,
                        ..Default::default()
                    },
                ))
                .await
                .map(|_| ());
            // What each may do: (read, drain, restore, release).
            let may = match (name, cluster, ns) {
                ("alice", _, _) => [true; 4],
                ("ci", "demo", "default") => [false, true, true, false],
                ("sa", _, "default") => [true, false, false, false],
                _ => [false; 4],
            };
            let unauth = matches!(name, "nobody" | "bad-token" | "stranger");
            for (verb, got, allowed) in [
                ("read", &get, may[0]),
                ("drain", &dr, may[1]),
                ("restore", &rs, may[2]),
                ("release", &rl, may[3]),
            ] {
                let code = got.as_ref().err().map(|e| e.code()).unwrap_or(Code::Ok);
                // A call that reached the API as a mutation is audited.
                if verb != "read" && (name != "stranger" || code == Code::Unauthenticated) {
                    let who = match name {
                        "alice" | "ci" => name.to_string(),
                        "sa" => "system:serviceaccount:default:deployer".to_string(),
                        _ => "(unauthenticated)".to_string(),
                    };
                    let result = if code == Code::Ok {
                        "OK".to_string()
                    } else {
                        format!("{code:?}")
                    };
                    expected.push((who, verb.to_string(), result));
                }
                if name == "stranger" {
                    // Its certificate fails the TLS handshake: the connection is refused.
                    assert!(
                        matches!(
                            code,
                            Code::Unauthenticated | Code::Cancelled | Code::Unavailable | Code::Unknown
                        ),
                        "{name} {verb} in {cluster}/{ns}: {got:?}"
                    );
                } else if unauth {
                    assert_eq!(code, Code::Unauthenticated, "{name} {verb} in {cluster}/{ns}: {got:?}");
                } else if allowed {
                    assert!(
                        !matches!(code, Code::PermissionDenied | Code::Unauthenticated),
                        "{name} may {verb} in {cluster}/{ns}: {got:?}"
                    );
                } else {
                    assert_eq!(
                        code,
                        Code::PermissionDenied,
                        "{name} may not {verb} in {cluster}/{ns}: {got:?}"
                    );
                }
            }
        }
    }
    let log = std::fs::read_to_string(&s.log).unwrap();
    let audited: Vec<(String, String, String)> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "sluice::audit")
        .map(|v| {
            let f = &v["fields"];
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            (s("who"), s("verb"), s("result"))
        })
        .collect();
    assert_eq!(
        expected.len(),
        45,
        "5 callers reach the API × 3 places × 3 mutating verbs"
    );
    assert_eq!(audited, expected);
}

fn req_of<T>(token: &Option<String>, m: T) -> tonic::Request<T> {
    match token {
        Some(t) => with_token(m, t),
        None => tonic::Request::new(m),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rate_limit_and_the_watch_cap_refuse_with_resource_exhausted() {
    let s = ApiStage::start("  rateLimit:\n    perSecond: 1\n    burst: 3\n  maxWatches: 2\n").await;
    let mut api = s.alice().await;
    let get = || pb::GetRequest {
        pod: Some(pb::PodRef {
            namespace: "default".into(),
            name: "web-1".into(),
            ..Default::default()
        }),
    };
    let mut codes = vec![];
    for _ in 0..5 {
        codes.push(api.get(get()).await.err().map(|e| e.code()).unwrap_or(Code::Ok));
    }
    assert_eq!(&codes[..3], &[Code::Ok; 3]);
    assert_eq!(codes[4], Code::ResourceExhausted, "{codes:?}");
    // Another identity has its own bucket.
    let mut ci = s.client(None).await;
    let e = ci.get(with_token(get(), &s.ci_token)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "limited by its rules only: {e:?}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let w1 = api
        .watch(pb::WatchRequest {
            target: Some(pod("web-1")),
        })
        .await
        .expect("watch 1");
    let w2 = api
        .watch(pb::WatchRequest {
            target: Some(pod("web-2")),
        })
        .await;
    let w2 = match w2 {
        Ok(w) => w,
        Err(e) => panic!("second watch: {e:?}"),
    };
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let e = api
        .watch(pb::WatchRequest {
            target: Some(pod("web-1")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("maxWatches"), "{}", e.message());
    drop((w1, w2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_lets_the_rollout_go_on_while_the_ledger_keeps_the_record() {
    let s = ApiStage::start("").await;
    let stage = &s.stage;
    let mut api = s.alice().await;
    // Long requests on both pods: web-1's drain cannot be verified for a while.
    let held = hold_in_web(stage, 4, 4000).await;
    all(api.drain(drain("web-1", "node going away")).await.unwrap().into_inner()).await;
    wait_status(&stage.pods, "web-1", "draining").await;
    let plan = api
        .release(pb::ReleaseRequest {
            pod: Some(pb::PodRef {
                namespace: "default".into(),
                name: "web-1".into(),
                ..Default::default()
            }),
            kind: "slb".into(),
            reason: "the node is being reclaimed now".into(),
            validate_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        plan.plan[0].contains("remove finalizer sluice.dev/slb WITHOUT verified drain"),
        "{plan:?}"
    );
    assert!(
        finalizers(&stage.get(0).await.unwrap()).contains(&"sluice.dev/slb".to_string()),
        "a dry run"
    );
    api.release(pb::ReleaseRequest {
        pod: Some(pb::PodRef {
            namespace: "default".into(),
            name: "web-1".into(),
            ..Default::default()
        }),
        kind: "slb".into(),
        reason: "the node is being reclaimed now".into(),
        ..Default::default()
    })
    .await
    .expect("release");
    let f = finalizers(&stage.get(0).await.unwrap());
    assert!(!f.contains(&"sluice.dev/slb".to_string()), "{f:?}");
    assert!(f.contains(&"sluice.dev/ledger".to_string()), "the guard stays: {f:?}");
    let note = wait_event(&stage.client, "web-1", "DrainReleased").await;
    assert!(
        note.contains("alice") && note.contains("the node is being reclaimed now"),
        "{note}"
    );
    // Sluice goes on: once the sessions end, the address leaves the ledger and the guard goes.
    for h in held {
        within("a held request", h).await.unwrap().unwrap();
    }
    until("the ledger to empty", || async {
        let p = stage.get(0).await.ok()?;
        (!finalizers(&p).contains(&"sluice.dev/ledger".to_string())).then_some(())
    })
    .await;
}

/// `sluice` with `args` against the stage's API (TLS, its CA), as `alice` (client
/// certificate) or with a token in SLUICE_TOKEN; answers (exit code, stdout, stderr).
async fn cli(s: &ApiStage, args: &[&str], who: Cli) -> (i32, String, String) {
    let d = &s.stage.dir;
    std::fs::write(d.join("alice.crt"), &s.alice.0).unwrap();
    std::fs::write(d.join("alice.key"), &s.alice.1).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(args)
        .arg("--api")
        .arg(s.url())
        .arg("--ca")
        .arg(d.join("ca.crt"))
        .env_remove("SLUICE_TOKEN")
        .env_remove("SLUICE_API");
    match who {
        Cli::Alice => {
            cmd.arg("--cert")
                .arg(d.join("alice.crt"))
                .arg("--key")
                .arg(d.join("alice.key"));
        }
        Cli::Token(t) => {
            cmd.env("SLUICE_TOKEN", t);
        }
        Cli::Nobody => {}
    }
    let out = within("the sluice command", cmd.output()).await.expect("sluice runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

enum Cli {
    Alice,
    Token(String),
    Nobody,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_drives_the_api_with_documented_exit_codes_and_every_mutation_is_audited() {
    let s = ApiStage::start_as("", true).await;
    let stage = &s.stage;
    wait_status(&stage.pods, "web-1", "serving").await;

    let (code, out, err) = cli(
        &s,
        &["drain", "web-1", "--reason", "cli drain", "--wait", "-o", "json"],
        Cli::Alice,
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    assert_eq!(lines[0]["requestId"], "", "the answer first: {}", lines[0]);
    assert!(lines[0]["plan"][0]
        .as_str()
        .unwrap()
        .contains("record sluice.dev/desired=drained"));
    assert_eq!(lines.last().unwrap()["done"], true, "{out}");
    assert_eq!(sluice_state(&stage.get(0).await.unwrap()), "drained");

    let (code, out, _) = cli(&s, &["get", "default/web-1", "-o", "json"], Cli::Alice).await;
    assert_eq!(code, 0);
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got["state"], "drained");
    assert_eq!(got["requestedBy"], "alice");
    let (code, out, _) = cli(&s, &["list", "-o", "yaml"], Cli::Alice).await;
    assert_eq!(code, 0);
    let listed: serde_json::Value = serde_yaml::from_str(out.trim_start_matches("---\n")).unwrap();
    let names: Vec<&str> = listed["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web-1", "web-2"]);

    let (code, out, err) = cli(
        &s,
        &["restore", "web-1", "--reason", "cli restore", "--wait"],
        Cli::Alice,
    )
    .await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("remove sluice.dev/desired") && out.contains("done: every pod is serving"),
        "{out}"
    );
    assert_eq!(gate(&stage.get(0).await.unwrap()).as_deref(), Some("True"));

    // The wait ends before the drain does: exit 2, and the drain goes on.
    let held = hold_in_web(stage, 4, 3000).await;
    let (code, _, err) = cli(
        &s,
        &["drain", "web-2", "--reason", "short wait", "--wait", "--timeout", "1"],
        Cli::Alice,
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the wait ended before every pod was drained"), "{err}");
    for h in held {
        within("a held request", h).await.unwrap().unwrap();
    }
    stage.wait_drained(1, T).await.unwrap();

    // Documented exit codes for what goes wrong.
    let ci = Cli::Token(s.ci_token.clone());
    for (args, who, want, says) in [
        (vec!["release", "web-2", "--reason", "no"], ci, 4, "PermissionDenied"),
        (vec!["get", "web-1"], Cli::Nobody, 4, "no credentials"),
        (
            vec!["drain", "web-9", "--reason", "x"],
            Cli::Alice,
            6,
            "no pod default/web-9",
        ),
        (
            vec!["drain", "web-1", "--reason", " "],
            Cli::Alice,
            64,
            "reason is required",
        ),
        (vec!["drain", "web-1"], Cli::Alice, 64, "--reason"),
        (
            vec!["drain", "web-1", "--reason", "x", "--uid", "not-the-uid"],
            Cli::Alice,
            5,
            "precondition",
        ),
        (
            vec!["restore", "web-2", "--reason", "x", "--cluster", "mars"],
            Cli::Alice,
            64,
            "unknown cluster",
        ),
    ] {
        let (code, out, err) = cli(&s, &args, who).await;
        assert_eq!(code, want, "{args:?}: {out}\n{err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let unreachable = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["get", "web-1", "--api", "http://127.0.0.1:9"])
        .output()
        .await
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(69));

    // One audit line per mutating call: who, what, why, result, trace id.
    let log = std::fs::read_to_string(&s.log).unwrap();
    let audit: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "sluice::audit")
        .collect();
    let summary: Vec<(String, String, String, String)> = audit
        .iter()
        .map(|a| {
            let f = &a["fields"];
            let s = |k: &str| f[k].as_str().map(String::from).unwrap_or_else(|| f[k].to_string());
            (s("who"), s("verb"), s("reason"), s("result"))
        })
        .collect();
    let want: Vec<(String, String, String, String)> = [
        ("alice", "drain", "cli drain", "OK"),
        ("alice", "restore", "cli restore", "OK"),
        ("alice", "drain", "short wait", "OK"),
        ("ci", "release", "no", "PermissionDenied"),
        ("alice", "drain", "x", "NotFound"),
        ("alice", "drain", " ", "InvalidArgument"),
        ("alice", "drain", "x", "Aborted"),
        ("alice", "restore", "x", "InvalidArgument"),
    ]
    .iter()
    .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
    .collect();
    assert_eq!(summary, want, "{audit:#?}");
    assert_eq!(audit[0]["fields"]["target"], "pod demo/default/web-1");
    assert!(audit[0]["fields"].get("trace_id").is_some());
}

/// An independent client in another language: Python grpcio, its stubs generated here
/// from the proto, drives drain → watch → restore and the AIP rules, while requests flow
/// through HAProxy (none may fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_grpcio_client_drives_drain_watch_restore_and_the_aip_rules() {
    let python = std::env::var("SLUICE_PYTHON").unwrap_or_else(|_| "python3".into());
    let s = ApiStage::start("").await;
    let stage = &s.stage;
    wait_status(&stage.pods, "web-1", "serving").await;
    let d = &stage.dir;
    let stubs = d.join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    let proto = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let gen = std::process::Command::new(&python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto)
        .arg(format!("--python_out={}", stubs.display()))
        .arg(format!("--grpc_python_out={}", stubs.display()))
        .arg(proto.join("sluice/v1/sluice.proto"))
        .output()
        .expect("python runs");
    assert!(
        gen.status.success(),
        "generating the stubs with {python} (scripts/test.sh installs grpcio-tools): {}",
        String::from_utf8_lossy(&gen.stderr)
    );
    std::fs::write(d.join("py.crt"), &s.alice.0).unwrap();
    std::fs::write(d.join("py.key"), &s.alice.1).unwrap();
    std::fs::write(d.join("ca.pem"), &s.ca_pem).unwrap();
    let held = hold_in_web(stage, 4, 600).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/api_client.py");
    let out = within(
        "the Python client",
        tokio::process::Command::new(&python)
            .arg(&script)
            .arg(&stubs)
            .arg(format!("127.0.0.1:{}", s.api_addr.port()))
            .arg(d.join("ca.pem"))
            .arg(d.join("py.crt"))
            .arg(d.join("py.key"))
            .arg("web-1")
            .output(),
    )
    .await
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
    assert_eq!(summary["ok"], true);
    for h in held {
        assert_eq!(within("a held request", h).await.unwrap().unwrap(), 200);
    }
}

/// Tenant isolation: an adapter instance names the namespaces that may use it and the
/// backends each may name. A binding naming another team's backend is Invalid with the
/// reason (its pods keep their traffic as it is), and an API drain of its pods is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_namespace_cannot_put_its_pods_into_another_teams_backend() {
    let s = ApiStage::start("tenants:\n  haproxy:\n  - namespaces: [default]\n    names: [web]\n").await;
    let stage = &s.stage;
    wait_status(&stage.pods, "web-1", "serving").await;
    // Another team's backend, `payments`: the binding is refused, the pods keep serving.
    stage
        .put_binding("web", stage.binding_spec(stage.port, &[("haproxy", "payments")]))
        .await
        .unwrap();
    let note = wait_event(&stage.client, "web", "InvalidBinding").await;
    assert!(
        note.contains("namespace \"default\" may not name backend \"payments\" of adapter \"haproxy\"")
            && note.contains("allows it: web"),
        "{note}"
    );
    let e = s.alice().await.drain(drain("web-1", "move")).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("may not name backend \"payments\""),
        "{}",
        e.message()
    );
    assert_eq!(
        stage.status_in("web", 0).await.unwrap().as_deref(),
        Some("UP"),
        "nothing moved"
    );
    // Its own backend again: valid.
    stage
        .put_binding("web", stage.binding_spec(stage.port, &[("haproxy", "web")]))
        .await
        .unwrap();
    until("the binding to be valid again", || async {
        let b: kube::Api<sluice::binding::TrafficBinding> = kube::Api::namespaced(stage.client.clone(), "default");
        let tb = b.get("web").await.ok()?;
        let cond = serde_json::to_value(&tb).ok()?["status"]["conditions"][0]["status"].clone();
        (cond == "True").then_some(())
    })
    .await;
}

/// An address outside Kubernetes (a VM behind the same HAProxy backend as the pods) is
/// drained through the API; its record survives a SIGKILL of the gateway mid-drain, the
/// restarted gateway finishes the drain on HAProxy's evidence (no request lost), and a
/// Restore puts it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endpoint_outside_kubernetes_drains_durably_across_a_gateway_restart() {
    use sluice::endpoint::EndpointDrain;
    let stage = Stage::with_vms(2, 1).await.expect("stage");
    let vm = stage.ips[2];
    std::fs::write(stage.dir.join("op.token"), "operator-token-0123456789").unwrap();
    let (health, api) = (free_addr(), free_addr());
    let cfg = stage.dir.join("gw.yaml");
    std::fs::write(
        &cfg,
        stage.gateway_config_text(health)
            + &format!(
                "api:\n  listen: {api}\n  insecure: true\n  tokens:\n  - user: op\n    file: {}\n  rules:\n  - users: [op]\n    verbs: ['*']\n    namespaces: ['*']\ntenants:\n  haproxy:\n  - namespaces: [default]\n    names: [web]\n    endpoints: [127.0.0.0/24]\n",
                stage.dir.join("op.token").display()
            ),
    )
    .unwrap();
    let gw = spawn_gateway(&cfg, health).await;
    for i in 0..2 {
        stage.wait_ready(i, T).await.unwrap();
    }
    assert_eq!(stage.status_in("web", 2).await.unwrap().as_deref(), Some("UP"));
    let endpoint = pb::Target {
        target: Some(pb::target::Target::Endpoint(pb::Endpoint {
            namespace: "default".into(),
            address: vm.to_string(),
            port: u32::from(stage.port),
            targets: vec![pb::AdapterTarget {
                adapter: "haproxy".into(),
                params_json: r#"{"backend":"web"}"#.into(),
            }],
            ..Default::default()
        })),
    };
    let client = || async {
        pb::sluice_client::SluiceClient::connect(format!("http://{api}"))
            .await
            .expect("connect")
    };
    // Requests on every server, the VM's among them, held for 2.5 s.
    let held = hold_timed(stage.frontend, 9, 2500).await;
    until("HAProxy to count sessions on the VM", || async {
        let s = stage.servers("web").await.ok()?;
        s.values()
            .any(|(a, _, scur)| a.starts_with(&vm.to_string()) && *scur > 0)
            .then_some(())
    })
    .await;
    let answer = all(client()
        .await
        .drain(with_token(
            pb::DrainRequest {
                target: Some(endpoint.clone()),
                reason: "VM kernel patch".into(),
                ..Default::default()
            },
            "operator-token-0123456789",
        ))
        .await
        .expect("endpoint drain")
        .into_inner())
    .await;
    let op = answer[0].operation.clone().unwrap();
    assert_eq!(op.pods[0].kind, "endpoint");
    assert!(op.plan[0].contains("record EndpointDrain"), "{op:?}");
    let name = op.pods[0].name.clone();
    let records: kube::Api<EndpointDrain> = kube::Api::namespaced(stage.client.clone(), "default");
    until("the record to say draining", || async {
        let r = records.get(&name).await.ok()?;
        (r.status?.state == "draining").then_some(())
    })
    .await;
    // SIGKILL mid-drain, start again: the record says what to finish.
    drop(gw);
    assert!(
        stage.status_in("web", 2).await.unwrap().unwrap().starts_with("MAINT")
            || stage.status_in("web", 2).await.unwrap().unwrap().starts_with("DRAIN"),
        "taken out before the kill"
    );
    let _gw = spawn_gateway(&cfg, health).await;
    let drained = until("the restarted gateway to verify the drain", || async {
        let r = records.get(&name).await.ok()?;
        let s = r.status?;
        (s.state == "drained").then_some(s)
    })
    .await;
    let evidence = drained.targets.values().next().unwrap().clone();
    assert!(evidence.starts_with("Drained"), "{evidence}");
    let servers = stage.servers("web").await.unwrap();
    let (_, status, scur) = servers
        .values()
        .find(|(a, _, _)| a.starts_with(&vm.to_string()))
        .unwrap();
    assert!(status.starts_with("MAINT") && *scur == 0, "{status} {scur}");
    for h in held {
        assert_eq!(
            within("a held request", h).await.unwrap().status,
            200,
            "no request lost"
        );
    }
    // Restore (the record's targets), waited for.
    let progress = all(client()
        .await
        .restore(with_token(
            pb::RestoreRequest {
                target: Some(pb::Target {
                    target: Some(pb::target::Target::Endpoint(pb::Endpoint {
                        namespace: "default".into(),
                        address: vm.to_string(),
                        port: u32::from(stage.port),
                        ..Default::default()
                    })),
                }),
                reason: "patched".into(),
                wait: true,
                ..Default::default()
            },
            "operator-token-0123456789",
        ))
        .await
        .expect("endpoint restore")
        .into_inner())
    .await;
    assert!(progress.last().unwrap().done, "{progress:?}");
    assert_eq!(stage.status_in("web", 2).await.unwrap().as_deref(), Some("UP"));
    let r = records.get(&name).await.unwrap();
    assert_eq!(r.spec.requested_by, "op");
    assert_eq!(r.status.unwrap().state, "serving");

    // The same through the command line, with a watch of the record open meanwhile.
    let mut watch = client()
        .await
        .watch(with_token(
            pb::WatchRequest {
                target: Some(endpoint.clone()),
            },
            "operator-token-0123456789",
        ))
        .await
        .expect("watch the record")
        .into_inner();
    let first = within("snapshot", watch.message()).await.unwrap().unwrap();
    assert_eq!(first.pod.unwrap().state, "serving");
    let ep = format!("{vm}:{}", stage.port);
    for (verb, goal) in [("drain", "drained"), ("restore", "serving")] {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args([
                verb,
                "--endpoint",
                &ep,
                "--target",
                "haproxy:backend=web",
                "--reason",
                "cli",
                "--wait",
            ])
            .args(["--api", &format!("http://{api}")])
            .env("SLUICE_TOKEN", "operator-token-0123456789")
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(&format!("done: every pod is {goal}")), "{text}");
    }
    let mut seen = vec![];
    while seen.last().map(String::as_str) != Some("serving") || seen.len() < 3 {
        let ev = within("a watch event", watch.message()).await.unwrap().unwrap();
        let Some(pod) = ev.pod else { continue };
        let st = pod.state;
        if !st.is_empty() && seen.last() != Some(&st) {
            seen.push(st);
        }
    }
    assert!(seen.contains(&"drained".to_string()), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endpoint_requests_that_cannot_work_are_refused_with_what_to_fix() {
    let s = ApiStage::start("tenants:\n  haproxy:\n  - namespaces: [default]\n    names: [web]\n    endpoints: [10.0.0.0/8, 127.0.0.0/24]\n").await;
    let mut api = s.alice().await;
    let ep = |address: &str, adapter: &str, params: &str| pb::Target {
        target: Some(pb::target::Target::Endpoint(pb::Endpoint {
            namespace: "default".into(),
            address: address.into(),
            port: 8080,
            targets: vec![pb::AdapterTarget {
                adapter: adapter.into(),
                params_json: params.into(),
            }],
            ..Default::default()
        })),
    };
    let pod_ip = s.stage.ips[0].to_string();
    for (target, code, says) in [
        (
            ep("10.0.0.x", "haproxy", r#"{"backend":"web"}"#),
            Code::InvalidArgument,
            "not an IP address",
        ),
        (
            ep("10.0.0.5", "nginx", r#"{"backend":"web"}"#),
            Code::InvalidArgument,
            "no adapter instance \"nginx\"",
        ),
        (
            ep("10.0.0.5", "haproxy", r#"{"backend": 1}"#),
            Code::InvalidArgument,
            "JSON object of strings",
        ),
        (
            ep("10.0.0.5", "haproxy", r#"{}"#),
            Code::InvalidArgument,
            "params.backend: required",
        ),
        (
            ep("10.0.0.5", "haproxy", r#"{"backend":"payments"}"#),
            Code::PermissionDenied,
            "may not name backend \"payments\"",
        ),
        (
            ep(&pod_ip, "haproxy", r#"{"backend":"web"}"#),
            Code::InvalidArgument,
            "drain the pod instead",
        ),
        (
            ep("192.168.1.5", "haproxy", r#"{"backend":"web"}"#),
            Code::PermissionDenied,
            "may not drain address 192.168.1.5",
        ),
        (
            ep("10.0.0.5", "haproxy", r#"{"backend":"web","server":"x"}"#),
            Code::PermissionDenied,
            "may not set parameter \"server\"",
        ),
    ] {
        let e = api
            .drain(pb::DrainRequest {
                target: Some(target),
                reason: "x".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
        assert!(e.message().contains(says), "{} should say {says}", e.message());
    }
    let e = api
        .restore(pb::RestoreRequest {
            target: Some(ep("10.0.0.5", "haproxy", r#"{"backend":"web"}"#)),
            reason: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    // A dry run shows the record it would write, and writes none.
    let dry = all(api
        .drain(pb::DrainRequest {
            target: Some(ep("10.0.0.5", "haproxy", r#"{"backend":"web"}"#)),
            reason: "x".into(),
            validate_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner())
    .await;
    let op = dry[0].operation.clone().unwrap();
    assert_eq!(op.pods[0].name, "ep-10-0-0-5-8080");
    let records: kube::Api<sluice::endpoint::EndpointDrain> = kube::Api::namespaced(s.stage.client.clone(), "default");
    assert!(records.get_opt("ep-10-0-0-5-8080").await.unwrap().is_none());
}

/// The `listen.health` address of a configuration text.
fn health_of(config: &str) -> String {
    config
        .lines()
        .find_map(|l| l.trim().strip_prefix("health: "))
        .expect("listen.health")
        .to_string()
}

/// gRPC health answers SERVING once every cluster has synced; reflection lists the
/// service (so grpcurl works); an oversized request is refused before it is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_and_reflection_answer_and_oversized_requests_are_refused() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let s = ApiStage::start("").await;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&s.ca_pem));
    let ch = Channel::from_shared(s.url())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = until("SERVING", || async {
        let r = HealthClient::new(ch.clone())
            .check(tonic_health::pb::HealthCheckRequest {
                service: "sluice.v1.Sluice".into(),
            })
            .await
            .ok()?
            .into_inner();
        (r.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32).then_some(r.status)
    })
    .await;
    assert_eq!(status, 1);
    let mut reflection = ServerReflectionClient::new(ch.clone());
    let mut answers = reflection
        .server_reflection_info(futures::stream::iter([
            tonic_reflection::pb::v1::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            },
        ]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("{answer:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"sluice.v1.Sluice".to_string()), "{names:?}");
    // Bounded: a reason past 1 KiB, a message past maxRequestBytes (64 KiB).
    let mut api = s.alice().await;
    let e = api.drain(drain("web-1", &"x".repeat(2000))).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = api.drain(drain("web-1", &"x".repeat(70 * 1024))).await.unwrap_err();
    assert!(matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted), "{e:?}");
    assert_eq!(
        sluice_state(&s.stage.get(0).await.unwrap()),
        "serving",
        "nothing drained"
    );
}

/// An endpoint record goes only after its address is verified drained (its finalizer);
/// one address and port has one record; a record's targets change only once drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endpoint_record_is_drained_before_it_goes_and_is_never_shared() {
    use sluice::endpoint::EndpointDrain;
    let stage = Stage::with_vms(1, 1).await.expect("stage");
    let vm = stage.ips[1];
    std::fs::write(stage.dir.join("op.token"), "operator-token-0123456789").unwrap();
    let text = stage.gateway_config_text(free_addr())
        + &format!(
            "api:\n  listen: 127.0.0.1:0\n  insecure: true\n  tokens:\n  - user: op\n    file: {}\n  rules:\n  - users: [op]\n    verbs: ['*']\n    namespaces: ['*']\ntenants:\n  haproxy:\n  - namespaces: [default, other]\n    names: [web]\n    endpoints: [127.0.0.0/24]\n",
            stage.dir.join("op.token").display()
        );
    let gw = stage.start_gateway_with(&text).await.expect("gateway");
    stage.wait_ready(0, T).await.unwrap();
    let mut api = pb::sluice_client::SluiceClient::connect(format!("http://{}", gw.api_addr.unwrap()))
        .await
        .unwrap();
    let ep = |ns: &str, backend: &str| pb::Target {
        target: Some(pb::target::Target::Endpoint(pb::Endpoint {
            namespace: ns.into(),
            address: vm.to_string(),
            port: u32::from(stage.port),
            targets: vec![pb::AdapterTarget {
                adapter: "haproxy".into(),
                params_json: format!(r#"{{"backend":"{backend}"}}"#),
            }],
            ..Default::default()
        })),
    };
    let drain = |t: pb::Target| {
        with_token(
            pb::DrainRequest {
                target: Some(t),
                reason: "x".into(),
                ..Default::default()
            },
            "operator-token-0123456789",
        )
    };
    // Serving first (a Restore needs a record: a drain, then a restore).
    all(api.drain(drain(ep("default", "web"))).await.unwrap().into_inner()).await;
    let name = sluice::endpoint::record_name(&vm, stage.port);
    let records: kube::Api<EndpointDrain> = kube::Api::namespaced(stage.client.clone(), "default");
    until("drained", || async {
        (records.get(&name).await.ok()?.status?.state == "drained").then_some(())
    })
    .await;
    assert!(records
        .get(&name)
        .await
        .unwrap()
        .metadata
        .finalizers
        .unwrap()
        .contains(&"sluice.dev/endpoint".into()));
    // One record per address and port, cluster-wide.
    let e = api.drain(drain(ep("other", "web"))).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("already recorded by EndpointDrain default/"),
        "{}",
        e.message()
    );
    let restore = with_token(
        pb::RestoreRequest {
            target: Some(ep("default", "web")),
            reason: "x".into(),
            wait: true,
            ..Default::default()
        },
        "operator-token-0123456789",
    );
    let p = all(api.restore(restore).await.unwrap().into_inner()).await;
    assert!(p.last().unwrap().done);
    assert_eq!(stage.status_in("web", 1).await.unwrap().as_deref(), Some("UP"));
    // Deleting the record of a serving address drains it first; then the record goes.
    records.delete(&name, &Default::default()).await.unwrap();
    until("the record to go", || async {
        records.get_opt(&name).await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(
        stage.status_in("web", 1).await.unwrap().unwrap().starts_with("MAINT"),
        "drained before the record went"
    );
}
