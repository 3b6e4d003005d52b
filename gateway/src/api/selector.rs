//! Label selectors in their string form (`app=web,tier in (a,b),!canary`), parsed as
//! kube-apiserver parses `labelSelector`.

use std::collections::{BTreeMap, BTreeSet};

use kube::core::{Expression, Selector, SelectorExt};

/// A parsed label selector; the empty one matches every pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Selector);

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.matches(labels)
    }

    /// Parses `s`; the error says which requirement is wrong and how to write it.
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let mut sel = Selector::default();
        for req in split(s)? {
            let req = req.trim();
            if req.is_empty() {
                return Err(format!("label selector {s:?}: an empty requirement (a stray comma?)"));
            }
            sel.extend([requirement(req).map_err(|e| format!("label selector {s:?}: {e}"))?]);
        }
        Ok(LabelSelector(sel))
    }
}

/// Splits at the commas outside parentheses.
fn split(s: &str) -> Result<Vec<&str>, String> {
    if s.trim().is_empty() {
        return Ok(vec![]);
    }
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(format!("label selector {s:?}: unbalanced parentheses"));
        }
    }
    if depth != 0 {
        return Err(format!("label selector {s:?}: unbalanced parentheses"));
    }
    out.push(&s[start..]);
    Ok(out)
}

fn requirement(r: &str) -> Result<Expression, String> {
    if let Some(key) = r.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(key_of(key.trim())?));
    }
    for (op, not) in [(" notin ", true), (" in ", false)] {
        if let Some(i) = r.find(op) {
            let key = key_of(r[..i].trim())?;
            let set = r[i + op.len()..].trim();
            let inner = set
                .strip_prefix('(')
                .and_then(|x| x.strip_suffix(')'))
                .ok_or_else(|| format!("{r:?}: the values of `in` / `notin` go in parentheses: `key in (a,b)`"))?;
            let values: BTreeSet<String> = inner.split(',').map(|v| value_of(v.trim())).collect::<Result<_, _>>()?;
            return Ok(if not {
                Expression::NotIn(key, values)
            } else {
                Expression::In(key, values)
            });
        }
    }
    for (op, not) in [("!=", true), ("==", false), ("=", false)] {
        if let Some(i) = r.find(op) {
            let key = key_of(r[..i].trim())?;
            let value = value_of(r[i + op.len()..].trim())?;
            return Ok(if not {
                Expression::NotEqual(key, value)
            } else {
                Expression::Equal(key, value)
            });
        }
    }
    Ok(Expression::Exists(key_of(r)?))
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters (alphanumerics, `-`, `_`, `.`, alphanumeric at both ends).
fn key_of(k: &str) -> Result<String, String> {
    let name = match k.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty()
                || prefix.len() > 253
                || !prefix
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            {
                return Err(format!("{k:?}: the key's prefix must be a DNS subdomain"));
            }
            name
        }
        None => k,
    };
    if name.is_empty() || !is_label_value(name) {
        return Err(format!(
            "{k:?} is not a label key (at most 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit)"
        ));
    }
    Ok(k.to_string())
}

fn value_of(v: &str) -> Result<String, String> {
    if v.is_empty() || is_label_value(v) {
        Ok(v.to_string())
    } else {
        Err(format!(
            "{v:?} is not a label value (at most 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit)"
        ))
    }
}

fn is_label_value(v: &str) -> bool {
    let b = v.as_bytes();
    v.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn selectors_parse_and_match_as_the_api_server_does() {
        let web = labels(&[("app", "web"), ("tier", "a"), ("example.com/team", "x")]);
        for (s, want) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app=web,tier in (a,b)", true),
            ("tier notin (a, b)", false),
            ("tier", true),
            ("!canary", true),
            ("!tier", false),
            ("example.com/team=x", true),
            ("app=api", false),
            ("app in (api,web), !canary", true),
        ] {
            assert_eq!(LabelSelector::parse(s).unwrap().matches(&web), want, "{s}");
        }
    }

    #[test]
    fn a_bad_selector_says_what_is_wrong() {
        for (s, says) in [
            ("app=web,", "empty requirement"),
            ("tier in a,b", "parentheses"),
            ("tier in (a,b", "unbalanced"),
            ("app=we b", "not a label value"),
            ("-x=1", "not a label key"),
        ] {
            let e = LabelSelector::parse(s).unwrap_err();
            assert!(e.contains(says), "{s}: {e}");
        }
    }
}
