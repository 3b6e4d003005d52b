//! Label selectors (equality- and set-based) and field selectors, parsed with the grammar of
//! `k8s.io/apimachinery/pkg/labels` and `.../fields`.

use std::collections::BTreeMap;

use crate::status::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A parsed label selector. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    reqs: Vec<Requirement>,
}

impl LabelSelector {
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            reqs.push(parse_requirement(part)?);
        }
        Ok(LabelSelector { reqs })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.reqs.iter().all(|r| {
            let v = labels.get(&r.key);
            match &r.op {
                Op::Eq(want) => v == Some(want),
                Op::NotEq(want) => v != Some(want),
                Op::In(set) => v.is_some_and(|v| set.contains(v)),
                Op::NotIn(set) => v.is_none_or(|v| !set.contains(v)),
                Op::Exists => v.is_some(),
                Op::DoesNotExist => v.is_none(),
                Op::Gt(n) => v.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v > *n),
                Op::Lt(n) => v.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v < *n),
            }
        })
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
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
    }
    out.push(&s[start..]);
    out
}

fn parse_error(req: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!("unable to parse requirement: {why}: {req:?}"))
}

fn parse_requirement(req: &str) -> Result<Requirement, ApiError> {
    if let Some(key) = req.strip_prefix('!') {
        let key = key.trim();
        validate_key(req, key)?;
        return Ok(Requirement {
            key: key.into(),
            op: Op::DoesNotExist,
        });
    }
    // Set-based: `key in (a,b)` / `key notin (a,b)`.
    if let Some(open) = req.find('(') {
        let head = req[..open].trim();
        let close = req
            .rfind(')')
            .filter(|c| *c > open && req[c + 1..].trim().is_empty())
            .ok_or_else(|| parse_error(req, "expected ')'"))?;
        let values: Vec<String> = req[open + 1..close]
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        for v in &values {
            validate_value(req, v)?;
        }
        let mut words = head.split_whitespace();
        let (key, op) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        if words.next().is_some() {
            return Err(parse_error(req, "unexpected token"));
        }
        validate_key(req, key)?;
        if values.is_empty() {
            return Err(parse_error(
                req,
                "for 'in', 'notin' operators, values set can't be empty",
            ));
        }
        let op = match op {
            "in" => Op::In(values),
            "notin" => Op::NotIn(values),
            other => return Err(parse_error(req, &format!("unknown operator {other:?}"))),
        };
        return Ok(Requirement { key: key.into(), op });
    }
    for (sym, ctor) in [
        ("!=", Op::NotEq as fn(String) -> Op),
        ("==", Op::Eq as fn(String) -> Op),
        ("=", Op::Eq as fn(String) -> Op),
    ] {
        if let Some(i) = req.find(sym) {
            let (key, value) = (req[..i].trim(), req[i + sym.len()..].trim());
            validate_key(req, key)?;
            validate_value(req, value)?;
            return Ok(Requirement {
                key: key.into(),
                op: ctor(value.into()),
            });
        }
    }
    for (sym, gt) in [(">", true), ("<", false)] {
        if let Some(i) = req.find(sym) {
            let (key, value) = (req[..i].trim(), req[i + 1..].trim());
            validate_key(req, key)?;
            let n: i64 = value
                .parse()
                .map_err(|_| parse_error(req, "for 'Gt', 'Lt' operators, the value must be an integer"))?;
            return Ok(Requirement {
                key: key.into(),
                op: if gt { Op::Gt(n) } else { Op::Lt(n) },
            });
        }
    }
    let key = req.trim();
    validate_key(req, key)?;
    Ok(Requirement {
        key: key.into(),
        op: Op::Exists,
    })
}

/// Label keys: an optional DNS subdomain prefix and `/`, then a name of at most 63
/// characters of alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric.
fn validate_key(req: &str, key: &str) -> Result<(), ApiError> {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty()
                || prefix.len() > 253
                || !prefix
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            {
                return Err(parse_error(req, &format!("invalid label key prefix {prefix:?}")));
            }
            name
        }
        None => key,
    };
    if name.is_empty() || name.len() > 63 || !is_label_chars(name) {
        return Err(parse_error(
            req,
            &format!(
                "invalid label key {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
            ),
        ));
    }
    Ok(())
}

fn validate_value(req: &str, v: &str) -> Result<(), ApiError> {
    if v.is_empty() {
        return Ok(());
    }
    if v.len() > 63 || !is_label_chars(v) {
        return Err(parse_error(
            req,
            &format!(
                "invalid label value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
            ),
        ));
    }
    Ok(())
}

fn is_label_chars(s: &str) -> bool {
    let ok_edge = |c: char| c.is_ascii_alphanumeric();
    s.chars().next().is_some_and(ok_edge)
        && s.chars().last().is_some_and(ok_edge)
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// A parsed field selector: `a=b`, `a==b`, `a!=b`, comma-separated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses and checks every field against `supported` (the resource's selectable
    /// fields), answering unknown ones as kube-apiserver does.
    /// `generic` resources (custom resources, most built-ins) answer unknown fields with the
    /// generic "not a known field selector" message.
    pub fn parse(s: &str, supported: &[&str], generic: bool) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            if !supported.contains(&field) {
                return Err(ApiError::bad_request(if generic {
                    let only: Vec<String> = supported.iter().map(|f| format!("{f:?}")).collect();
                    format!("{field:?} is not a known field selector: only {}", only.join(", "))
                } else {
                    format!("field label not supported: {field}")
                }));
            }
            reqs.push((field.to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector { reqs })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// `get(field)` answers the object's value of a selectable field ("" when unset).
    pub fn matches<'a>(&self, get: impl Fn(&str) -> &'a str) -> bool {
        self.reqs.iter().all(|(f, eq, v)| (get(f) == v) == *eq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn label_selector_table() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("n", "5")]);
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app=db", false),
            ("app in (web,db)", true),
            ("app notin (web,db)", false),
            ("missing notin (x)", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app=web,tier=front", true),
            ("app=web,tier in (back)", false),
            ("n>4", true),
            ("n<4", false),
            ("example.com/x", false),
        ];
        for (sel, want) in cases {
            let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&l), want, "selector {sel:?}");
        }
    }

    #[test]
    fn label_selector_errors() {
        for bad in ["app in ()", "app in (a", "-bad=1", "app=web!", "a b in (c)", "n>x"] {
            let e = LabelSelector::parse(bad).expect_err(bad);
            assert_eq!(e.code, 400, "{bad}");
            assert!(
                e.message.starts_with("unable to parse requirement"),
                "{bad}: {}",
                e.message
            );
        }
    }

    #[test]
    fn field_selector() {
        let f = FieldSelector::parse(
            "spec.nodeName=n1,status.phase!=Failed",
            &["spec.nodeName", "status.phase"],
            false,
        )
        .unwrap();
        assert!(f.matches(|k| if k == "spec.nodeName" { "n1" } else { "Running" }));
        assert!(!f.matches(|k| if k == "spec.nodeName" { "n2" } else { "Running" }));
        let e = FieldSelector::parse("spec.foo=1", &["spec.nodeName"], false).unwrap_err();
        assert_eq!(e.message, "field label not supported: spec.foo");
        let e = FieldSelector::parse("nonsense", &["spec.nodeName"], false).unwrap_err();
        assert_eq!(e.code, 400);
        let e = FieldSelector::parse("spec.x=1", &["metadata.name", "metadata.namespace"], true).unwrap_err();
        assert_eq!(
            e.message,
            r#""spec.x" is not a known field selector: only "metadata.name", "metadata.namespace""#
        );
        assert_eq!(e.code, 400);
    }
}
