//! Who is calling, and what they may do: authentication (mTLS client certificate, static
//! bearer tokens, Kubernetes TokenReview), authorization rules (deny by default), and a
//! rate limit per identity.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use tonic::Status;

use crate::config::{ApiConfig, ApiRule, ApiVerb};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
    /// How it was proven: `certificate`, `token`, `token-review`.
    pub via: &'static str,
}

/// Tokens reviewed, kept this long at most whatever the configuration says.
const REVIEW_CACHE_CAP: usize = 10_000;

type Digest = [u8; 32];

fn digest(token: &str) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Proves who a caller is.
pub struct Authenticator {
    /// Static tokens by the SHA-256 of the token (never kept in clear).
    tokens: Vec<(Digest, Identity)>,
    review: Option<Reviewer>,
}

struct Reviewer {
    client: kube::Client,
    audiences: Vec<String>,
    ttl: Duration,
    cache: DashMap<Digest, (Instant, Result<Identity, String>)>,
    /// Reviews in flight at once: random tokens cannot flood the API server through us.
    in_flight: tokio::sync::Semaphore,
}

/// Token reviews in flight at most.
const MAX_REVIEWS: usize = 32;

impl Authenticator {
    /// Reads the token files; `review_client` is the client of `tokenReview.cluster`.
    pub fn new(cfg: &ApiConfig, review_client: Option<kube::Client>) -> anyhow::Result<Authenticator> {
        let mut tokens = Vec::new();
        for (i, t) in cfg.tokens.iter().enumerate() {
            let text = std::fs::read_to_string(&t.file)
                .map_err(|e| anyhow::anyhow!("api.tokens[{i}].file: reading {}: {e}", t.file.display()))?;
            let token = text.trim();
            if token.len() < 16 {
                anyhow::bail!(
                    "api.tokens[{i}].file: {} holds a token of {} characters; use at least 16 random characters",
                    t.file.display(),
                    token.len()
                );
            }
            tokens.push((
                digest(token),
                Identity {
                    user: t.user.clone(),
                    groups: t.groups.clone(),
                    via: "token",
                },
            ));
        }
        let review = match (&cfg.token_review, review_client) {
            (Some(r), Some(client)) => Some(Reviewer {
                client,
                audiences: r.audiences.clone(),
                ttl: Duration::from_secs(r.cache_seconds),
                cache: DashMap::new(),
                in_flight: tokio::sync::Semaphore::new(MAX_REVIEWS),
            }),
            _ => None,
        };
        Ok(Authenticator { tokens, review })
    }

    /// The caller of a request: its bearer token when it sends one (a bad token is refused
    /// even with a certificate), else its client certificate.
    pub async fn identify<T>(&self, req: &tonic::Request<T>) -> Result<Identity, Status> {
        if let Some(h) = req.metadata().get("authorization") {
            let h = h
                .to_str()
                .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
            let token = h
                .strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| Status::unauthenticated("the authorization header must be `Bearer <token>`"))?;
            return self.by_token(token).await;
        }
        if let Some(certs) = req.peer_certs() {
            if let Some(leaf) = certs.first() {
                return by_certificate(leaf.as_ref());
            }
        }
        Err(Status::unauthenticated(
            "no credentials: present a client certificate (mTLS) or a bearer token",
        ))
    }

    async fn by_token(&self, token: &str) -> Result<Identity, Status> {
        let d = digest(token);
        if let Some((_, id)) = self.tokens.iter().find(|(t, _)| *t == d) {
            return Ok(id.clone());
        }
        let Some(r) = &self.review else {
            return Err(Status::unauthenticated("the bearer token is not valid"));
        };
        if let Some(hit) = r.cache.get(&d) {
            if hit.0.elapsed() < r.ttl {
                return hit.1.clone().map_err(Status::unauthenticated);
            }
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: (!r.audiences.is_empty()).then(|| r.audiences.clone()),
            },
            ..Default::default()
        };
        let Ok(_permit) = r.in_flight.try_acquire() else {
            return Err(Status::unavailable(format!(
                "{MAX_REVIEWS} token reviews are in flight; try again"
            )));
        };
        let api: Api<TokenReview> = Api::all(r.client.clone());
        let answer = tokio::time::timeout(Duration::from_secs(5), api.create(&PostParams::default(), &review))
            .await
            .map_err(|_| Status::unavailable("the token review did not answer within 5 s; try again"))?
            .map_err(|e| Status::unavailable(format!("the token review failed: {e}; try again")))?;
        let status = answer.status.unwrap_or_default();
        let result = match (status.authenticated, status.user) {
            (Some(true), Some(u)) if u.username.as_deref().is_some_and(|n| !n.is_empty()) => {
                let audiences_ok = r.audiences.is_empty()
                    || status
                        .audiences
                        .as_ref()
                        .is_some_and(|a| a.iter().any(|x| r.audiences.contains(x)));
                if audiences_ok {
                    Ok(Identity {
                        user: u.username.unwrap_or_default(),
                        groups: u.groups.unwrap_or_default(),
                        via: "token-review",
                    })
                } else {
                    Err("the bearer token is not valid for this audience".to_string())
                }
            }
            _ => Err(format!(
                "the bearer token is not valid{}",
                status.error.map(|e| format!(": {e}")).unwrap_or_default()
            )),
        };
        // Full: expired answers go, then refusals; the identities of good tokens stay (a
        // flood of random tokens evicts nothing valid), and a new answer is not kept.
        if r.cache.len() >= REVIEW_CACHE_CAP {
            r.cache.retain(|_, v| v.0.elapsed() < r.ttl);
        }
        if r.cache.len() >= REVIEW_CACHE_CAP {
            r.cache.retain(|_, v| v.1.is_ok());
        }
        if r.cache.len() < REVIEW_CACHE_CAP {
            r.cache.insert(d, (Instant::now(), result.clone()));
        }
        result.map_err(Status::unauthenticated)
    }
}

/// A client certificate's identity, as kube-apiserver reads one: the subject's common name
/// is the user, its organizations the groups.
fn by_certificate(der: &[u8]) -> Result<Identity, Status> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Status::unauthenticated(format!("the client certificate cannot be read: {e}")))?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| Status::unauthenticated("the client certificate has no subject common name (the user)"))?;
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Ok(Identity {
        user,
        groups,
        via: "certificate",
    })
}

/// `pattern` matches `value`: equal, `*`, or a prefix ending in `*`.
pub(crate) fn glob(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

/// The authorization rules (deny by default).
#[derive(Debug, Clone)]
pub struct Rules(Vec<ApiRule>);

impl Rules {
    pub fn new(rules: Vec<ApiRule>) -> Rules {
        Rules(rules)
    }

    fn applies(rule: &ApiRule, who: &Identity) -> bool {
        rule.users.iter().any(|u| glob(u, &who.user))
            || rule.groups.iter().any(|g| who.groups.iter().any(|x| glob(g, x)))
    }

    /// Whether `who` may perform `verb` on a namespace of a cluster.
    pub fn allows(&self, who: &Identity, verb: ApiVerb, cluster: &str, namespace: &str) -> bool {
        self.0.iter().any(|r| {
            Self::applies(r, who)
                && r.verbs.iter().any(|v| *v == verb || *v == ApiVerb::All)
                && r.clusters.iter().any(|c| glob(c, cluster))
                && r.namespaces.iter().any(|n| glob(n, namespace))
        })
    }

    /// Whether `who` may perform `verb` on some namespace of `cluster` (a List or Watch
    /// across namespaces is then filtered by [`Rules::allows`]).
    pub fn allows_some(&self, who: &Identity, verb: ApiVerb, cluster: Option<&str>) -> bool {
        self.0.iter().any(|r| {
            Self::applies(r, who)
                && r.verbs.iter().any(|v| *v == verb || *v == ApiVerb::All)
                && cluster.is_none_or(|c| r.clusters.iter().any(|x| glob(x, c)))
        })
    }
}

/// A token bucket per identity.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: DashMap<String, (f64, Instant)>,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second,
            burst: f64::from(burst),
            buckets: DashMap::new(),
        }
    }

    /// Takes one call from `who`'s bucket, or says when to come back.
    pub fn take(&self, who: &str) -> Result<(), Status> {
        let now = Instant::now();
        if self.buckets.len() > 100_000 {
            // Identities idle long enough to have a full bucket again carry no state.
            let full = Duration::from_secs_f64(self.burst / self.per_second);
            self.buckets.retain(|_, b| now.duration_since(b.1) < full);
        }
        let mut b = self.buckets.entry(who.to_string()).or_insert((self.burst, now));
        let refill = now.duration_since(b.1).as_secs_f64() * self.per_second;
        b.0 = (b.0 + refill).min(self.burst);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - b.0) / self.per_second;
            Err(Status::resource_exhausted(format!(
                "rate limit: {} calls per second for {who}; try again in {:.0} ms",
                self.per_second,
                (wait * 1000.0).ceil()
            )))
        }
    }
}

/// The clients that review tokens, by cluster: the one `tokenReview.cluster` names.
pub fn review_client(cfg: &ApiConfig, clients: &BTreeMap<String, kube::Client>, first: &str) -> Option<kube::Client> {
    let r = cfg.token_review.as_ref()?;
    clients.get(r.cluster.as_deref().unwrap_or(first)).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(user: &str, groups: &[&str]) -> Identity {
        Identity {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            via: "token",
        }
    }

    fn rule(users: &[&str], groups: &[&str], verbs: &[ApiVerb], clusters: &[&str], ns: &[&str]) -> ApiRule {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        ApiRule {
            users: s(users),
            groups: s(groups),
            verbs: verbs.to_vec(),
            clusters: s(clusters),
            namespaces: s(ns),
        }
    }

    #[test]
    fn rules_deny_by_default_and_match_users_groups_verbs_and_places() {
        let rules = Rules::new(vec![
            rule(&["ci"], &[], &[ApiVerb::Drain, ApiVerb::Restore], &["*"], &["shop"]),
            rule(&[], &["sre"], &[ApiVerb::All], &["east"], &["*"]),
            rule(
                &["system:serviceaccount:shop:*"],
                &[],
                &[ApiVerb::Read],
                &["*"],
                &["shop"],
            ),
        ]);
        let ci = id("ci", &[]);
        assert!(rules.allows(&ci, ApiVerb::Drain, "east", "shop"));
        assert!(!rules.allows(&ci, ApiVerb::Release, "east", "shop"), "verb not granted");
        assert!(
            !rules.allows(&ci, ApiVerb::Drain, "east", "bank"),
            "namespace not granted"
        );
        assert!(
            !rules.allows(&ci, ApiVerb::Read, "east", "shop"),
            "read is a verb of its own"
        );
        let sre = id("alice", &["sre"]);
        assert!(rules.allows(&sre, ApiVerb::Release, "east", "bank"));
        assert!(
            !rules.allows(&sre, ApiVerb::Release, "west", "bank"),
            "cluster not granted"
        );
        let sa = id("system:serviceaccount:shop:deployer", &[]);
        assert!(rules.allows(&sa, ApiVerb::Read, "west", "shop"));
        assert!(!rules.allows(&id("system:serviceaccount:bank:x", &[]), ApiVerb::Read, "west", "shop"));
        assert!(!rules.allows(&id("nobody", &[]), ApiVerb::Read, "east", "shop"));
        assert!(rules.allows_some(&ci, ApiVerb::Drain, None));
        assert!(!rules.allows_some(&ci, ApiVerb::Read, None));
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_refuses_with_a_wait() {
        let l = RateLimiter::new(1.0, 3);
        for _ in 0..3 {
            l.take("a").unwrap();
        }
        let e = l.take("a").unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(e.message().contains("try again in"), "{}", e.message());
        l.take("b").expect("another identity has its own bucket");
    }
}
