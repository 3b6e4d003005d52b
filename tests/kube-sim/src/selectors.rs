//! Label selectors (equality- and set-based) and field selectors, parsed with the grammar of
//! `k8s.io/apimachinery/pkg/labels` and `.../fields`.

use std::collections::{BTreeMap, BTreeSet};

use crate::object::dns1123_subdomain_errors;
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

    /// `labels.Parse`, whose error the list handler answers as `400 BadRequest`.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut parser = Parser {
            items: lex(s),
            position: 0,
        };
        let reqs = parser.parse().map_err(ApiError::bad_request)?;
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

/// `labels.Parse`'s lexer tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Ident,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

/// `string2token`.
fn token(s: &str) -> Option<Tok> {
    Some(match s {
        ")" => Tok::ClosedPar,
        "," => Tok::Comma,
        "!" => Tok::DoesNotExist,
        "==" => Tok::DoubleEquals,
        "=" => Tok::Equals,
        ">" => Tok::GreaterThan,
        "in" => Tok::In,
        "<" => Tok::LessThan,
        "!=" => Tok::NotEquals,
        "notin" => Tok::NotIn,
        "(" => Tok::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// The lexer: every token up to and including `End`.
fn lex(s: &str) -> Vec<(Tok, String)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        while pos < b.len() && is_whitespace(b[pos]) {
            pos += 1;
        }
        let start = pos;
        if pos == b.len() {
            out.push((Tok::End, String::new()));
            return out;
        }
        if is_special(b[pos]) {
            // scanSpecialSymbol: the longest run of symbols that is still a token (every
            // single symbol is one).
            let mut last = None;
            while pos < b.len() && is_special(b[pos]) {
                match token(&s[start..=pos]) {
                    Some(t) => last = Some((t, pos + 1)),
                    None if last.is_some() => break,
                    None => {}
                }
                pos += 1;
            }
            let (t, end) = last.expect("every symbol is a token");
            pos = end;
            out.push((t, s[start..end].to_string()));
        } else {
            while pos < b.len() && !is_special(b[pos]) && !is_whitespace(b[pos]) {
                pos += 1;
            }
            let lit = &s[start..pos];
            out.push((token(lit).unwrap_or(Tok::Ident), lit.to_string()));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    In,
    NotIn,
    Equals,
    NotEquals,
    GreaterThan,
    LessThan,
    Exists,
    DoesNotExist,
}

/// `labels.Parser`: a recursive descent over the tokens, with its error texts.
struct Parser {
    items: Vec<(Tok, String)>,
    position: usize,
}

impl Parser {
    /// In the values context `in` and `notin` are identifiers.
    fn in_context(tok: Tok, values: bool) -> Tok {
        match tok {
            Tok::In | Tok::NotIn if values => Tok::Ident,
            t => t,
        }
    }

    fn lookahead(&self, values: bool) -> (Tok, String) {
        let (t, l) = &self.items[self.position.min(self.items.len() - 1)];
        (Self::in_context(*t, values), l.clone())
    }

    fn consume(&mut self, values: bool) -> (Tok, String) {
        let item = self.lookahead(values);
        self.position += 1;
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut reqs = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(true);
            match tok {
                Tok::Ident | Tok::DoesNotExist => {
                    let r = self
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    let (t, l) = self.consume(true);
                    match t {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => {
                            let (t2, l2) = self.lookahead(true);
                            if t2 != Tok::Ident && t2 != Tok::DoesNotExist {
                                return Err(format!("found '{l2}', expected: identifier after ','"));
                            }
                        }
                        _ => return Err(format!("found '{l}', expected: ',' or 'end of string'")),
                    }
                }
                Tok::End => return Ok(reqs),
                _ => return Err(format!("found '{lit}', expected: !, identifier, or 'end of string'")),
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, op) = self.parse_key_and_infer_operator()?;
        if let Some(op) = op {
            return new_requirement(key, op, Vec::new());
        }
        let op = self.parse_operator()?;
        let values = match op {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        new_requirement(key, op, values.into_iter().collect())
    }

    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut op = None;
        let (mut tok, mut literal) = self.consume(true);
        if tok == Tok::DoesNotExist {
            op = Some(Operator::DoesNotExist);
            (tok, literal) = self.consume(true);
        }
        if tok != Tok::Ident {
            return Err(format!("found '{literal}', expected: identifier"));
        }
        // Checked with the parser's path, which labels.Parse leaves nil.
        if let Some(e) = label_key_error(&literal, "<nil>") {
            return Err(e);
        }
        let (t, _) = self.lookahead(true);
        if (t == Tok::End || t == Tok::Comma) && op.is_none() {
            op = Some(Operator::Exists);
        }
        Ok((literal, op))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (tok, lit) = self.consume(false);
        Ok(match tok {
            Tok::In => Operator::In,
            Tok::Equals | Tok::DoubleEquals => Operator::Equals,
            Tok::GreaterThan => Operator::GreaterThan,
            Tok::LessThan => Operator::LessThan,
            Tok::NotIn => Operator::NotIn,
            Tok::NotEquals => Operator::NotEquals,
            _ => return Err(format!("found '{lit}', expected: in, notin, =, ==, !=, gt, lt")),
        })
    }

    fn parse_values(&mut self) -> Result<BTreeSet<String>, String> {
        let (tok, lit) = self.consume(true);
        if tok != Tok::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(true);
        match tok {
            Tok::Ident | Tok::Comma => {
                let s = self.parse_identifiers_list()?;
                if self.consume(true).0 != Tok::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(s)
            }
            Tok::ClosedPar => {
                self.consume(true);
                Ok(BTreeSet::from([String::new()]))
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<String>, String> {
        let mut s = BTreeSet::new();
        loop {
            let (tok, lit) = self.consume(true);
            match tok {
                Tok::Ident => {
                    s.insert(lit);
                    let (tok2, lit2) = self.lookahead(true);
                    match tok2 {
                        Tok::Comma => continue,
                        Tok::ClosedPar => return Ok(s),
                        _ => return Err(format!("found '{lit2}', expected: ',' or ')'")),
                    }
                }
                Tok::Comma => {
                    // `(,`, `,,` and `,)` hold the empty value.
                    if s.is_empty() {
                        s.insert(String::new());
                    }
                    match self.lookahead(true).0 {
                        Tok::ClosedPar => {
                            s.insert(String::new());
                            return Ok(s);
                        }
                        Tok::Comma => {
                            s.insert(String::new());
                        }
                        _ => {}
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<BTreeSet<String>, String> {
        let (tok, _) = self.lookahead(true);
        if tok == Tok::End || tok == Tok::Comma {
            return Ok(BTreeSet::from([String::new()]));
        }
        let (tok, lit) = self.consume(true);
        if tok == Tok::Ident {
            return Ok(BTreeSet::from([lit]));
        }
        Err(format!("found '{lit}', expected: identifier"))
    }
}

/// `NewRequirement` (the parser only builds valid operator/value-count combinations): the
/// values are checked in sorted order, as `field.Error`s aggregated.
fn new_requirement(key: String, op: Operator, values: Vec<String>) -> Result<Requirement, String> {
    let mut errors: Vec<String> = Vec::new();
    errors.extend(label_key_error(&key, "key"));
    let mut bound = None;
    if matches!(op, Operator::GreaterThan | Operator::LessThan) {
        for (i, v) in values.iter().enumerate() {
            match v.parse::<i64>() {
                Ok(n) => bound = Some(n),
                Err(_) => errors.push(format!(
                    "values[{i}]: Invalid value: {v:?}: for 'Gt', 'Lt' operators, the value must be an integer"
                )),
            }
        }
    }
    for (i, v) in values.iter().enumerate() {
        let msgs = label_value_errors(v);
        if !msgs.is_empty() {
            errors.push(format!("values[{i}][{key}]: Invalid value: {v:?}: {}", msgs.join("; ")));
        }
    }
    // ToAggregate: each message once.
    let mut seen: Vec<String> = Vec::new();
    errors.retain(|e| {
        let new = !seen.contains(e);
        seen.push(e.clone());
        new
    });
    match errors.as_slice() {
        [] => {}
        [one] => return Err(one.clone()),
        _ => return Err(format!("[{}]", errors.join(", "))),
    }
    let first = values.first().cloned().unwrap_or_default();
    let op = match op {
        Operator::In => Op::In(values),
        Operator::NotIn => Op::NotIn(values),
        Operator::Equals => Op::Eq(first),
        Operator::NotEquals => Op::NotEq(first),
        Operator::GreaterThan => Op::Gt(bound.unwrap_or_default()),
        Operator::LessThan => Op::Lt(bound.unwrap_or_default()),
        Operator::Exists => Op::Exists,
        Operator::DoesNotExist => Op::DoesNotExist,
    };
    Ok(Requirement { key, op })
}

const QUALIFIED_NAME_MSG: &str =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' \
                               or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";

/// `validation.RegexError` (the examples joined as it joins them, hence the double spaces).
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let examples: Vec<String> = examples.iter().map(|e| format!("'{e}', ")).collect();
    format!(
        "{msg} (e.g. {}regex used for validation is '{fmt}')",
        examples.join(" or ")
    )
}

/// `^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`
fn is_qualified_name(s: &str) -> bool {
    let edge = |c: char| c.is_ascii_alphanumeric();
    s.chars().next().is_some_and(edge)
        && s.chars().last().is_some_and(edge)
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// `validation.IsQualifiedName` (label keys).
fn qualified_name_errors(value: &str) -> Vec<String> {
    let parts: Vec<&str> = value.split('/').collect();
    let mut errs = Vec::new();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    dns1123_subdomain_errors(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    QUALIFIED_NAME_MSG,
                    QUALIFIED_NAME_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            )]
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    if !is_qualified_name(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// `validateLabelKey`: one `field.Invalid` at `path`, the messages joined.
fn label_key_error(key: &str, path: &str) -> Option<String> {
    let errs = qualified_name_errors(key);
    (!errs.is_empty()).then(|| format!("{path}: Invalid value: {key:?}: {}", errs.join("; ")))
}

/// `validation.IsValidLabelValue`.
fn label_value_errors(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !v.is_empty() && !is_qualified_name(v) {
        errs.push(regex_error(
            LABEL_VALUE_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
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
            ("app in ()", false),
            ("app in (,web)", true),
            ("app notin (,db)", true),
            ("app=", false),
            ("app!=", true),
            ("in in (in)", false),
            ("!missing,n>4", true),
            ("  app == web , tier ", true),
        ];
        for (sel, want) in cases {
            let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&l), want, "selector {sel:?}");
        }
    }

    #[test]
    fn label_selector_errors() {
        let req = "unable to parse requirement";
        let cases = [
            ("app in (a", format!("{req}: found '', expected: ',' or ')'")),
            (
                "a b in (c)",
                format!("{req}: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
            ),
            ("!", format!("{req}: found '', expected: identifier")),
            ("x in y", format!("{req}: found 'y' expected: '('")),
            ("x in (a b)", format!("{req}: found 'b', expected: ',' or ')'")),
            ("x in (a,=)", format!("{req}: found '=', expected: ',', or identifier")),
            ("x=(", format!("{req}: found '(', expected: identifier")),
            ("n>=4", format!("{req}: found '=', expected: identifier")),
            ("!a=b", "found '=', expected: ',' or 'end of string'".to_string()),
            ("app=web!", "found '!', expected: ',' or 'end of string'".to_string()),
            ("a,,b", "found ',', expected: identifier after ','".to_string()),
            (
                "=a",
                "found '=', expected: !, identifier, or 'end of string'".to_string(),
            ),
            (
                "/x",
                format!(r#"{req}: <nil>: Invalid value: "/x": prefix part must be non-empty"#),
            ),
        ];
        for (selector, want) in cases {
            let e = LabelSelector::parse(selector).expect_err(selector);
            assert_eq!((e.code, e.message.as_str()), (400, want.as_str()), "{selector}");
        }
        // Several errors of one requirement aggregate as `[a, b]`.
        let e = LabelSelector::parse("n>x_").unwrap_err();
        assert!(
            e.message.starts_with(&format!(
                r#"{req}: [values[0]: Invalid value: "x_": for 'Gt', 'Lt' operators, the value must be an integer, values[0][n]: Invalid value: "x_": a valid label"#
            )),
            "{}",
            e.message
        );
        let long = "v".repeat(64);
        let e = LabelSelector::parse(&format!("k={long}")).unwrap_err();
        assert_eq!(
            e.message,
            format!(r#"{req}: values[0][k]: Invalid value: "{long}": must be no more than 63 characters"#)
        );
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
