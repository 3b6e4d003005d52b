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

fn glob(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
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
        }
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
