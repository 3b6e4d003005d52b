//! Key/value layouts: where a pod's registry entry lives in etcd and what its value says,
//! for each [`Preset`]. Pure functions, no I/O.
//!
//! | preset | key | value | found by |
//! |---|---|---|---|
//! | `grpc-go` | `<prefix><service>/<ip:port>` | `{"Op":0,"Addr":"ip:port","Metadata":null}` | the exact key |
//! | `go-micro` | `<prefix><service>/<nodeId>` | `{"name":…,"nodes":[{"id":…,"address":"ip:port"}]}` | scanning `<prefix><service>/` for a node with the pod's address |
//! | `kratos` | `<prefix><service>/<id>` | `{"id":…,"name":…,"endpoints":["grpc://ip:port"]}` | scanning for an endpoint with the pod's address |
//! | `custom` | `keyTemplate` | `valueTemplate` | the exact key |
//!
//! go-micro and Kratos services pick their own node ids (usually a UUID), so the key is not
//! derivable from the pod: the adapter scans the service's keys and matches the address in
//! the value. A target may override the key with its `key` parameter (a template), which
//! must stay under an allowed root and identify the pod (`{addr}` or `{ip}` + `{port}`).

use serde_json::{json, Value};
use sluice_adapter::{AdapterError, Target};

use crate::etcd::config::{EtcdConfig, Preset};

/// How to find the pod's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locate {
    /// Exactly this key.
    Exact(String),
    /// Any key under this prefix whose value names the pod's address.
    Scan(String),
}

/// Values for template placeholders.
#[derive(Debug, Clone)]
pub(crate) struct Vars<'a> {
    pub service: &'a str,
    pub target: &'a Target,
    pub id: String,
}

impl Vars<'_> {
    fn render(&self, template: &str) -> String {
        template
            .replace("{service}", self.service)
            .replace("{ip}", &self.target.ip.to_string())
            .replace("{port}", &self.target.port.to_string())
            .replace("{addr}", &self.target.addr())
            .replace("{id}", &self.id)
    }
}

const PLACEHOLDERS: [&str; 5] = ["{service}", "{ip}", "{port}", "{addr}", "{id}"];

/// Checks a key template: known placeholders only, and the pod must be identified.
fn check_key_template(field: &str, template: &str) -> Result<(), String> {
    let mut rest = template.to_string();
    for p in PLACEHOLDERS {
        rest = rest.replace(p, "");
    }
    if rest.contains('{') || rest.contains('}') {
        return Err(format!(
            "`{field}` {template:?} has an unknown placeholder (known: {PLACEHOLDERS:?})"
        ));
    }
    let identifies = template.contains("{addr}") || (template.contains("{ip}") && template.contains("{port}"));
    if !identifies {
        return Err(format!(
            "`{field}` {template:?} must identify the pod with {{addr}} or {{ip}} and {{port}}"
        ));
    }
    Ok(())
}

/// One configured layout.
#[derive(Debug, Clone)]
pub struct Layout {
    preset: Preset,
    prefix: String,
    key_template: Option<String>,
    value_template: Option<String>,
    disabled_value_template: Option<String>,
    instance_id: String,
    scheme: String,
    allowed_key_prefixes: Vec<String>,
}

impl Layout {
    pub(crate) fn from_config(c: &EtcdConfig) -> Result<Layout, String> {
        let custom = c.preset == Preset::Custom;
        if !custom && (c.key_template.is_some() || c.value_template.is_some() || c.disabled_value_template.is_some()) {
            return Err(
                "`keyTemplate`, `valueTemplate` and `disabledValueTemplate` only apply to `preset: custom`".into(),
            );
        }
        if c.scheme.is_some() && c.preset != Preset::Kratos {
            return Err("`scheme` only applies to `preset: kratos`".into());
        }
        let prefix = c.prefix.clone().unwrap_or_else(|| {
            match c.preset {
                Preset::GoMicro => "/micro/registry/",
                Preset::Kratos => "/microservices/",
                Preset::GrpcGo | Preset::Custom => "",
            }
            .to_string()
        });
        if custom {
            let key = c
                .key_template
                .as_deref()
                .ok_or("`preset: custom` needs `keyTemplate`")?;
            check_key_template("keyTemplate", key)?;
        }
        let mut allowed_key_prefixes = c.allowed_key_prefixes.clone();
        if allowed_key_prefixes.is_empty() {
            let root = match &c.key_template {
                Some(t) if custom => t.split('{').next().unwrap_or_default().to_string(),
                _ => prefix.clone(),
            };
            allowed_key_prefixes.push(root);
        }
        let instance_id = c.instance_id.clone().unwrap_or_else(|| "sluice-{ip}-{port}".into());
        if instance_id.contains('/') {
            return Err("`instanceId` must not contain '/'".into());
        }
        Ok(Layout {
            preset: c.preset,
            prefix,
            key_template: c.key_template.clone(),
            value_template: c.value_template.clone(),
            disabled_value_template: c.disabled_value_template.clone(),
            instance_id,
            scheme: c.scheme.clone().unwrap_or_else(|| "grpc".into()),
            allowed_key_prefixes,
        })
    }

    /// The preset.
    pub fn preset(&self) -> Preset {
        self.preset
    }

    pub(crate) fn vars<'a>(&self, service: &'a str, target: &'a Target) -> Vars<'a> {
        let id = Vars {
            service,
            target,
            id: String::new(),
        }
        .render(&self.instance_id);
        Vars { service, target, id }
    }

    /// Where the pod's entry lives; `key_override` is the target's `key` parameter.
    pub(crate) fn locate(&self, vars: &Vars<'_>, key_override: Option<&str>) -> Result<Locate, AdapterError> {
        if let Some(template) = key_override {
            check_key_template("key", template).map_err(AdapterError::permanent)?;
            let key = vars.render(template);
            if !self.allowed_key_prefixes.iter().any(|p| key.starts_with(p.as_str())) {
                return Err(AdapterError::permanent(format!(
                    "key override '{key}' is outside the allowed roots {:?}",
                    self.allowed_key_prefixes
                )));
            }
            return Ok(Locate::Exact(key));
        }
        Ok(match self.preset {
            Preset::GrpcGo => Locate::Exact(format!("{}{}/{}", self.prefix, vars.service, vars.target.addr())),
            Preset::GoMicro | Preset::Kratos => Locate::Scan(format!("{}{}/", self.prefix, vars.service)),
            Preset::Custom => Locate::Exact(vars.render(self.key_template.as_deref().unwrap_or_default())),
        })
    }

    /// Whether `value` is an entry for the pod's address (enabled or disabled form).
    pub(crate) fn is_pods(&self, value: &[u8], vars: &Vars<'_>) -> bool {
        let addr = vars.target.addr();
        match self.preset {
            Preset::Custom => true,
            Preset::GrpcGo => parse(value).is_some_and(|v| v["Addr"] == addr.as_str()),
            Preset::GoMicro => parse(value).is_some_and(|v| {
                v["nodes"]
                    .as_array()
                    .is_some_and(|nodes| nodes.iter().any(|n| n["address"] == addr.as_str()))
            }),
            Preset::Kratos => parse(value).is_some_and(|v| {
                v["endpoints"].as_array().is_some_and(|eps| {
                    eps.iter()
                        .filter_map(Value::as_str)
                        .any(|e| endpoint_authority(e) == addr)
                })
            }),
        }
    }

    /// The value a drain writes instead of deleting (custom `disabledValueTemplate`).
    pub(crate) fn disabled_value(&self, vars: &Vars<'_>) -> Option<String> {
        self.disabled_value_template.as_deref().map(|t| vars.render(t))
    }

    /// Whether `value` is the disabled form.
    pub(crate) fn is_disabled(&self, value: &[u8], vars: &Vars<'_>) -> bool {
        self.disabled_value(vars).is_some_and(|d| d.as_bytes() == value)
    }

    /// A value for the pod rebuilt from the preset (after a restart, nothing remembered).
    pub(crate) fn rebuild_value(&self, vars: &Vars<'_>) -> Result<String, String> {
        let addr = vars.target.addr();
        Ok(match self.preset {
            Preset::GrpcGo => json!({"Op": 0, "Addr": addr, "Metadata": null}).to_string(),
            Preset::GoMicro => json!({
                "name": vars.service, "version": "latest", "metadata": null, "endpoints": [],
                "nodes": [{"id": vars.id, "address": addr, "metadata": null}]
            })
            .to_string(),
            Preset::Kratos => json!({
                "id": vars.id, "name": vars.service, "version": "", "metadata": null,
                "endpoints": [format!("{}://{addr}", self.scheme)]
            })
            .to_string(),
            Preset::Custom => vars.render(
                self.value_template
                    .as_deref()
                    .ok_or("nothing remembered to restore and no `valueTemplate` configured to rebuild the value")?,
            ),
        })
    }

    /// The key of a rebuilt go-micro / Kratos record: `<prefix><service>/<id>`.
    pub(crate) fn rebuild_key(&self, locate: &Locate, vars: &Vars<'_>) -> String {
        match locate {
            Locate::Exact(key) => key.clone(),
            Locate::Scan(prefix) => format!("{prefix}{}", vars.id),
        }
    }

    /// Whether a present, enabled value is the one a restore would expect.
    pub(crate) fn is_expected(&self, value: &[u8], vars: &Vars<'_>) -> bool {
        match (&self.preset, &self.value_template) {
            (Preset::Custom, Some(t)) => vars.render(t).as_bytes() == value,
            (Preset::Custom, None) => true,
            _ => self.is_pods(value, vars),
        }
    }
}

fn parse(value: &[u8]) -> Option<Value> {
    serde_json::from_slice(value).ok()
}

/// `grpc://10.0.0.1:9000?isSecure=false` → `10.0.0.1:9000`.
fn endpoint_authority(endpoint: &str) -> &str {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sluice_adapter::PodRef;

    use super::*;

    fn target() -> Target {
        Target {
            pod: PodRef {
                cluster: "c".into(),
                namespace: "n".into(),
                name: "p".into(),
                uid: "u".into(),
            },
            ip: "10.0.0.7".parse().unwrap(),
            port: 9000,
            params: BTreeMap::new(),
        }
    }

    fn layout(yaml: &str) -> Layout {
        let c: EtcdConfig = serde_yaml::from_str(&format!("name: r\nendpoints: [http://x:1]\n{yaml}")).unwrap();
        Layout::from_config(&c).unwrap()
    }

    #[test]
    fn presets() {
        let t = target();
        let grpc = layout("preset: grpc-go\nprefix: services/\n");
        let v = grpc.vars("greeter", &t);
        assert_eq!(
            grpc.locate(&v, None).unwrap(),
            Locate::Exact("services/greeter/10.0.0.7:9000".into())
        );
        let value = grpc.rebuild_value(&v).unwrap();
        assert_eq!(value, r#"{"Op":0,"Addr":"10.0.0.7:9000","Metadata":null}"#);
        assert!(grpc.is_pods(value.as_bytes(), &v) && grpc.is_expected(value.as_bytes(), &v));

        let micro = layout("preset: go-micro\n");
        let v = micro.vars("greeter", &t);
        let at = micro.locate(&v, None).unwrap();
        assert_eq!(at, Locate::Scan("/micro/registry/greeter/".into()));
        assert_eq!(
            micro.rebuild_key(&at, &v),
            "/micro/registry/greeter/sluice-10.0.0.7-9000"
        );
        let real = br#"{"name":"greeter","version":"latest","metadata":null,"endpoints":[],
            "nodes":[{"id":"greeter-4f1c","address":"10.0.0.7:9000","metadata":{"protocol":"grpc"}}]}"#;
        assert!(micro.is_pods(real, &v));
        let other = String::from_utf8_lossy(real).replace("10.0.0.7", "10.0.0.8");
        assert!(!micro.is_pods(other.as_bytes(), &v));

        let kratos = layout("preset: kratos\n");
        let v = kratos.vars("greeter", &t);
        let real = br#"{"id":"a1","name":"greeter","version":"v1","metadata":{},
            "endpoints":["http://10.0.0.7:8000","grpc://10.0.0.7:9000?isSecure=false"]}"#;
        assert!(kratos.is_pods(real, &v));
        assert!(kratos.rebuild_value(&v).unwrap().contains("\"grpc://10.0.0.7:9000\""));
    }

    #[test]
    fn custom_and_overrides() {
        let t = target();
        let custom = layout(
            "preset: custom\nkeyTemplate: /svc/{service}/{ip}-{port}\nvalueTemplate: 'up {addr}'\n\
             disabledValueTemplate: 'down {addr}'\n",
        );
        let v = custom.vars("greeter", &t);
        assert_eq!(
            custom.locate(&v, None).unwrap(),
            Locate::Exact("/svc/greeter/10.0.0.7-9000".into())
        );
        assert!(custom.is_disabled(b"down 10.0.0.7:9000", &v));
        assert!(custom.is_expected(b"up 10.0.0.7:9000", &v));
        assert!(!custom.is_expected(b"up 10.0.0.8:9000", &v));
        // Overrides stay under the template's literal root and identify the pod.
        assert_eq!(
            custom.locate(&v, Some("/svc/other/{addr}")).unwrap(),
            Locate::Exact("/svc/other/10.0.0.7:9000".into())
        );
        for bad in ["/etc/{addr}", "/svc/{service}", "/svc/{nope}/{addr}"] {
            assert!(custom.locate(&v, Some(bad)).is_err(), "{bad}");
        }
        let grpc = layout("preset: grpc-go\nprefix: services/\n");
        assert!(grpc.locate(&grpc.vars("g", &t), Some("other/{addr}")).is_err());
        assert_eq!(endpoint_authority("grpc://[fd00::1]:9000/x"), "[fd00::1]:9000");
    }
}
