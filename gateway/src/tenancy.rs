//! Tenant isolation of backends: which namespaces may use an adapter instance, and which
//! backends / DNS names / registry services each may name (config `tenants`, keyed by
//! adapter instance). An adapter without an entry is open to every namespace (as before);
//! one with an entry refuses everything it does not allow: a TrafficBinding that names a
//! backend its namespace may not use is Invalid with the reason, and an API request
//! likewise refused.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_adapter::Adapter;

use crate::config::TenantRule;

/// The tenancy rules, resolved against the adapters (which parameter names the resource).
#[derive(Debug, Clone, Default)]
pub struct Tenancy(BTreeMap<String, (String, Vec<TenantRule>)>);

/// The rules' patterns (`*` anything, `abc*` a prefix, else equality), plus a suffix:
/// `*.example.com`.
fn glob(pattern: &str, value: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) if !suffix.is_empty() => value.ends_with(suffix),
        _ => crate::api::auth::glob(pattern, value),
    }
}

/// An address block (`10.2.0.0/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: std::net::IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, b) = s.split_once('/')?;
        let net: std::net::IpAddr = a.parse().ok()?;
        let bits: u8 = b.parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        (bits <= max).then_some(Cidr { net, bits })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let (a, b, width) = match (self.net, ip) {
            (std::net::IpAddr::V4(n), std::net::IpAddr::V4(i)) => {
                (u128::from(u32::from(n)), u128::from(u32::from(i)), 32)
            }
            (std::net::IpAddr::V6(n), std::net::IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        if self.bits == 0 {
            return true;
        }
        let shift = width - u32::from(self.bits);
        (a >> shift) == (b >> shift)
    }
}

impl Tenancy {
    /// `tenants` from the config; the resource parameter of each adapter is its rule's
    /// `param`, or the first parameter the adapter requires (`backend`, `name`, `service`,
    /// `interface`).
    pub fn build(
        tenants: &BTreeMap<String, Vec<TenantRule>>,
        adapters: &BTreeMap<String, Arc<dyn Adapter>>,
    ) -> anyhow::Result<Tenancy> {
        let mut out = BTreeMap::new();
        for (name, rules) in tenants {
            let adapter = adapters
                .get(name)
                .ok_or_else(|| anyhow::anyhow!("tenants.{name}: no adapter instance {name:?} is configured"))?;
            let param = match rules.iter().find_map(|r| r.param.clone()) {
                Some(p) => p,
                None => adapter.capabilities().required_params.first().cloned().ok_or_else(|| {
                    anyhow::anyhow!(
                        "tenants.{name}: adapter {name:?} requires no parameter that names a resource; set param \
                         (the target parameter the names are matched against)"
                    )
                })?,
            };
            out.insert(name.clone(), (param, rules.clone()));
        }
        Ok(Tenancy(out))
    }

    /// Whether `namespace` may drain and restore the address `ip` outside Kubernetes
    /// through `adapter` with `params`: only what a tenants rule allows (`endpoints`), never
    /// through an adapter without a tenants entry.
    pub fn check_endpoint(
        &self,
        namespace: &str,
        adapter: &str,
        params: &BTreeMap<String, String>,
        ip: std::net::IpAddr,
    ) -> Result<(), String> {
        if !self.0.contains_key(adapter) {
            return Err(format!(
                "adapter {adapter:?} takes no endpoint: give it a tenants entry whose rule names the namespace and \
                 the addresses it may drain (endpoints: [CIDR])"
            ));
        }
        self.check(namespace, adapter, params)?;
        let (_, rules) = &self.0[adapter];
        let allowed = rules.iter().any(|r| {
            r.namespaces.iter().any(|n| glob(n, namespace))
                && r.endpoints
                    .iter()
                    .filter_map(|c| Cidr::parse(c))
                    .any(|c| c.contains(ip))
        });
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "namespace {namespace:?} may not drain address {ip} through adapter {adapter:?} (no tenants.{adapter} \
                 rule for it lists a block holding it in endpoints)"
            ))
        }
    }

    /// Whether a target of `namespace` may use `adapter` with `params`; the error says
    /// what is refused and what is allowed.
    pub fn check(&self, namespace: &str, adapter: &str, params: &BTreeMap<String, String>) -> Result<(), String> {
        let Some((param, rules)) = self.0.get(adapter) else {
            return Ok(());
        };
        let value = params.get(param).map(String::as_str).unwrap_or("");
        let mine: Vec<&TenantRule> = rules
            .iter()
            .filter(|r| r.namespaces.iter().any(|n| glob(n, namespace)))
            .collect();
        if mine.is_empty() {
            return Err(format!(
                "namespace {namespace:?} may not use adapter {adapter:?} (tenants.{adapter} names no rule for it)"
            ));
        }
        if mine.iter().any(|r| r.names.iter().any(|n| glob(n, value))) {
            // Any other parameter can change what is touched: only those a rule lists.
            for k in params.keys().filter(|k| *k != param) {
                if !mine.iter().any(|r| r.params.iter().any(|p| p == k)) {
                    return Err(format!(
                        "namespace {namespace:?} may not set parameter {k:?} of adapter {adapter:?} (tenants.{adapter} \
                         lets it set: {param}{})",
                        mine.iter()
                            .flat_map(|r| r.params.iter())
                            .map(|p| format!(", {p}"))
                            .collect::<String>()
                    ));
                }
            }
            return Ok(());
        }
        let allowed: Vec<&str> = mine.iter().flat_map(|r| r.names.iter().map(String::as_str)).collect();
        Err(format!(
            "namespace {namespace:?} may not name {param} {value:?} of adapter {adapter:?} (tenants.{adapter} allows it: {})",
            allowed.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(ns: &[&str], names: &[&str]) -> TenantRule {
        TenantRule {
            namespaces: ns.iter().map(|s| s.to_string()).collect(),
            names: names.iter().map(|s| s.to_string()).collect(),
            param: None,
            params: vec![],
            endpoints: vec![],
        }
    }

    #[test]
    fn other_parameters_endpoints_and_suffix_names_are_checked() {
        let mut shop = rule(&["shop"], &["*.shop.example.com"]);
        shop.params = vec!["ttl".into()];
        shop.endpoints = vec!["10.2.0.0/16".into()];
        let t = Tenancy(BTreeMap::from([("dns".to_string(), ("name".to_string(), vec![shop]))]));
        let p = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert!(t
            .check("shop", "dns", &p(&[("name", "web.shop.example.com"), ("ttl", "30")]))
            .is_ok());
        let e = t
            .check(
                "shop",
                "dns",
                &p(&[("name", "web.shop.example.com"), ("zone", "bank.example.com")]),
            )
            .unwrap_err();
        assert!(e.contains("may not set parameter \"zone\""), "{e}");
        assert!(t.check("shop", "dns", &p(&[("name", "web.bank.example.com")])).is_err());
        let web = p(&[("name", "web.shop.example.com")]);
        assert!(t
            .check_endpoint("shop", "dns", &web, "10.2.3.4".parse().unwrap())
            .is_ok());
        let e = t
            .check_endpoint("shop", "dns", &web, "10.3.0.1".parse().unwrap())
            .unwrap_err();
        assert!(e.contains("may not drain address 10.3.0.1"), "{e}");
        let e = t
            .check_endpoint("shop", "lb", &web, "10.2.3.4".parse().unwrap())
            .unwrap_err();
        assert!(e.contains("takes no endpoint"), "{e}");
        assert!(Cidr::parse("2001:db8::/32")
            .unwrap()
            .contains("2001:db8::5".parse().unwrap()));
        assert!(!Cidr::parse("10.0.0.0/8")
            .unwrap()
            .contains("2001:db8::5".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
    }

    #[test]
    fn a_namespace_names_only_its_own_backends_and_unlisted_adapters_stay_open() {
        let t = Tenancy(BTreeMap::from([(
            "lb".to_string(),
            (
                "backend".to_string(),
                vec![
                    rule(&["shop", "shop-*"], &["web", "api-*"]),
                    rule(&["bank"], &["ledger"]),
                ],
            ),
        )]));
        let p = |b: &str| BTreeMap::from([("backend".to_string(), b.to_string())]);
        assert!(t.check("shop", "lb", &p("web")).is_ok());
        assert!(t.check("shop-eu", "lb", &p("api-v2")).is_ok());
        let e = t.check("shop", "lb", &p("ledger")).unwrap_err();
        assert!(
            e.contains("may not name backend \"ledger\"") && e.contains("web, api-*"),
            "{e}"
        );
        let e = t.check("ops", "lb", &p("web")).unwrap_err();
        assert!(e.contains("may not use adapter \"lb\""), "{e}");
        assert!(t.check("ops", "dns", &p("anything")).is_ok(), "no entry: open");
        assert!(t.check("shop", "lb", &BTreeMap::new()).is_err(), "no backend named");
    }
}
