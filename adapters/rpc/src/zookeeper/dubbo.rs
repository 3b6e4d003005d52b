//! Dubbo's ZooKeeper registry layout: URL encoding as Dubbo does it (Java's
//! `URLEncoder.encode(s, "UTF-8")`), URL parsing, and the override configurator that takes
//! one provider address offline. Pure functions, no I/O.
//!
//! ```text
//! /dubbo/<interface>/providers/<encoded dubbo://10.0.0.7:20880/<interface>?...>     ephemeral, the provider's session
//! /dubbo/<interface>/configurators/<encoded override://10.0.0.7:20880/<interface>?category=configurators&disabled=true&dynamic=false&enabled=true>
//! ```
//!
//! The override is what Dubbo admin's "disable provider" writes: a *persistent* node that
//! every consumer subscribed to the interface applies to the provider URLs at that
//! `ip:port`, so the provider is dropped from their invoker lists while its own node
//! stays registered.

/// Java's `URLEncoder.encode(s, "UTF-8")`: `[A-Za-z0-9.*_-]` kept, space → `+`, anything
/// else `%XX` (upper case) per UTF-8 byte.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The inverse of [`url_encode`] (`+` → space, `%XX` → byte); `None` on a malformed escape
/// or invalid UTF-8.
pub fn url_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// A parsed Dubbo URL (`protocol://[user@]host:port/path?k=v&...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DubboUrl {
    /// `dubbo`, `tri`, `override`, ...
    pub protocol: String,
    /// `host:port` as written (IPv6 hosts keep their brackets).
    pub address: String,
    /// The path: the interface name.
    pub path: String,
    /// Query parameters in order.
    pub params: Vec<(String, String)>,
}

impl DubboUrl {
    /// Parses a (decoded) Dubbo URL.
    pub fn parse(url: &str) -> Option<DubboUrl> {
        let (protocol, rest) = url.split_once("://")?;
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
        let address = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
        let params = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        Some(DubboUrl {
            protocol: protocol.to_string(),
            address: address.to_string(),
            path: path.to_string(),
            params,
        })
    }

    /// The value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Whether this is an override that disables the provider at `addr` (what Dubbo admin
    /// and Sluice write): `override://addr/...?disabled=true`, not switched off with
    /// `enabled=false`.
    pub fn disables(&self, addr: &str) -> bool {
        self.protocol == "override"
            && self.address == addr
            && self.param("disabled") == Some("true")
            && self.param("enabled") != Some("false")
    }
}

/// Decodes a ZooKeeper child name into a Dubbo URL.
pub fn parse_node(name: &str) -> Option<DubboUrl> {
    DubboUrl::parse(&url_decode(name)?)
}

/// The override URL Sluice writes to take `addr` offline for `interface`.
pub fn override_url(addr: &str, interface: &str) -> String {
    format!("override://{addr}/{interface}?category=configurators&disabled=true&dynamic=false&enabled=true")
}

/// Paths of one interface under a registry root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `/<root>/<interface>`.
    pub interface: String,
    /// `/<root>/<interface>/providers`.
    pub providers: String,
    /// `/<root>/<interface>/configurators`.
    pub configurators: String,
    /// Sluice's override node for the pod.
    pub override_node: String,
}

impl Paths {
    /// Paths for `interface` under `/<root>` and the override for `addr`.
    pub fn new(root: &str, interface: &str, addr: &str) -> Paths {
        let base = format!("/{root}/{interface}");
        Paths {
            providers: format!("{base}/providers"),
            configurators: format!("{base}/configurators"),
            override_node: format!("{base}/configurators/{}", url_encode(&override_url(addr, interface))),
            interface: base,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_java_url_encoder() {
        let url = override_url("10.0.0.7:20880", "org.demo.Greeter");
        let encoded = url_encode(&url);
        assert_eq!(
            encoded,
            "override%3A%2F%2F10.0.0.7%3A20880%2Forg.demo.Greeter%3Fcategory%3Dconfigurators%26disabled%3Dtrue\
             %26dynamic%3Dfalse%26enabled%3Dtrue"
        );
        assert_eq!(url_decode(&encoded).as_deref(), Some(url.as_str()));
        assert_eq!(url_encode("a b*~"), "a+b*%7E");
        assert_eq!(url_decode("a+b%2x"), None);
        assert_eq!(url_decode("%E2%9C%93").as_deref(), Some("✓"));
    }

    #[test]
    fn parses_provider_and_override_urls() {
        // A provider node as Dubbo 2.7 writes it (shortened).
        let node = "dubbo%3A%2F%2F10.0.0.7%3A20880%2Forg.demo.Greeter%3Fanyhost%3Dtrue%26application%3Ddemo\
                    %26interface%3Dorg.demo.Greeter%26methods%3DsayHello%26side%3Dprovider";
        let url = parse_node(node).unwrap();
        assert_eq!(
            (url.protocol.as_str(), url.address.as_str(), url.path.as_str()),
            ("dubbo", "10.0.0.7:20880", "org.demo.Greeter")
        );
        assert_eq!(url.param("side"), Some("provider"));
        assert!(!url.disables("10.0.0.7:20880"));

        let ours = DubboUrl::parse(&override_url("10.0.0.7:20880", "org.demo.Greeter")).unwrap();
        assert!(ours.disables("10.0.0.7:20880") && !ours.disables("10.0.0.8:20880"));
        let switched_off =
            DubboUrl::parse("override://10.0.0.7:20880/org.demo.Greeter?disabled=true&enabled=false").unwrap();
        assert!(!switched_off.disables("10.0.0.7:20880"));
        let weight = DubboUrl::parse("override://10.0.0.7:20880/org.demo.Greeter?weight=200").unwrap();
        assert!(!weight.disables("10.0.0.7:20880"));
        let v6 = DubboUrl::parse("dubbo://user@[fd00::1]:20880/x?a=b").unwrap();
        assert_eq!(v6.address, "[fd00::1]:20880");
    }

    #[test]
    fn paths() {
        let p = Paths::new("dubbo", "org.demo.Greeter", "10.0.0.7:20880");
        assert_eq!(p.providers, "/dubbo/org.demo.Greeter/providers");
        assert!(p
            .override_node
            .starts_with("/dubbo/org.demo.Greeter/configurators/override%3A%2F%2F10.0.0.7%3A20880"));
    }
}
