//! Secrets, loaded from where the configuration points — never from the configuration
//! itself: TSIG keys from a BIND key file (as `tsig-keygen` writes it) or an environment
//! variable holding the base64 secret; PowerDNS API keys from a file or an environment
//! variable. [`fmt::Debug`] never prints a secret.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::{Name, TSigner};

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file (a BIND `key` clause for TSIG; the bare key for an API key).
    File(PathBuf),
    /// An environment variable (base64 for TSIG; the bare key for an API key).
    Env(String),
}

/// A TSIG key: name, algorithm and secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    /// The key name, as the server knows it (`sluice`, `ddns-key.example.com`).
    pub name: String,
    /// `hmac-sha256`, `hmac-sha384` or `hmac-sha512`.
    pub algorithm: String,
    secret: Vec<u8>,
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Fudge (allowed clock difference) put in our signatures; BIND's and nsupdate's default.
const FUDGE_SECONDS: u16 = 300;

impl TsigKey {
    /// A key from its parts; `secret_b64` is the base64 secret.
    pub fn new(name: &str, algorithm: &str, secret_b64: &str) -> Result<TsigKey, String> {
        let name = name.trim().trim_end_matches('.').to_string();
        if name.is_empty() {
            return Err("the TSIG key name is empty".into());
        }
        let algorithm = algorithm.trim().to_ascii_lowercase();
        algorithm_of(&algorithm)?;
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret_b64.trim())
            .map_err(|e| format!("the secret of TSIG key '{name}' is not valid base64: {e}"))?;
        if secret.is_empty() {
            return Err(format!("the secret of TSIG key '{name}' is empty"));
        }
        Ok(TsigKey {
            name,
            algorithm,
            secret,
        })
    }

    /// Loads the key: from a BIND key file (choosing `name` when the file holds several
    /// keys) or from an environment variable holding the base64 secret (then `name` is
    /// required).
    pub fn load(source: &SecretSource, name: Option<&str>, algorithm: &str) -> Result<TsigKey, String> {
        match source {
            SecretSource::File(path) => {
                let text = read_secret_file(path, "tsigKeyFile")?;
                parse_key_file(&text, name).map_err(|e| format!("`tsigKeyFile` {}: {e}", path.display()))
            }
            SecretSource::Env(var) => {
                let value = std::env::var(var)
                    .map_err(|_| format!("`tsigSecretEnv`: environment variable {var} is not set"))?;
                let name = name.ok_or("`tsigSecretEnv` needs `tsigKeyName`")?;
                TsigKey::new(name, algorithm, &value).map_err(|e| format!("`tsigSecretEnv` {var}: {e}"))
            }
        }
    }

    /// A hickory signer for this key.
    pub fn signer(&self) -> Result<TSigner, String> {
        let name = Name::from_ascii(format!("{}.", self.name))
            .map_err(|e| format!("TSIG key name '{}' is not a valid DNS name: {e}", self.name))?;
        TSigner::new(self.secret.clone(), algorithm_of(&self.algorithm)?, name, FUDGE_SECONDS)
            .map_err(|e| format!("TSIG key '{}': {e}", self.name))
    }
}

fn algorithm_of(name: &str) -> Result<TsigAlgorithm, String> {
    match name {
        "hmac-sha256" => Ok(TsigAlgorithm::HmacSha256),
        "hmac-sha384" => Ok(TsigAlgorithm::HmacSha384),
        "hmac-sha512" => Ok(TsigAlgorithm::HmacSha512),
        other => Err(format!(
            "TSIG algorithm '{other}' is not supported: use hmac-sha256, hmac-sha384 or hmac-sha512 \
             (tsig-keygen -a hmac-sha256 NAME)"
        )),
    }
}

fn read_secret_file(path: &Path, field: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("`{field}`: cannot read {}: {e}", path.display()))
}

/// Loads a PowerDNS API key from a file (trimmed) or an environment variable.
pub fn load_api_key(source: &SecretSource) -> Result<String, String> {
    let (key, field) = match source {
        SecretSource::File(path) => (read_secret_file(path, "apiKeyFile")?, "apiKeyFile"),
        SecretSource::Env(var) => (
            std::env::var(var).map_err(|_| format!("`apiKeyEnv`: environment variable {var} is not set"))?,
            "apiKeyEnv",
        ),
    };
    let key = key.trim().to_string();
    if key.is_empty() {
        return Err(format!("`{field}`: the API key is empty"));
    }
    if key.bytes().any(|b| b.is_ascii_control()) {
        return Err(format!("`{field}`: the API key contains control characters"));
    }
    Ok(key)
}

/// Parses BIND `key "NAME" { algorithm ALG; secret "B64"; };` clauses (comments `#`, `//`
/// and `/* */` allowed) and returns the one named `wanted` (or the only one).
pub fn parse_key_file(text: &str, wanted: Option<&str>) -> Result<TsigKey, String> {
    let tokens = tokenize(text);
    let mut keys = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i] != "key" {
            i += 1;
            continue;
        }
        let name = tokens.get(i + 1).ok_or("`key` without a name")?.trim_matches('"');
        if tokens.get(i + 2).map(String::as_str) != Some("{") {
            return Err(format!("key '{name}': expected `{{` after the name"));
        }
        let (mut algorithm, mut secret) = (None, None);
        i += 3;
        while i < tokens.len() && tokens[i] != "}" {
            match tokens[i].as_str() {
                "algorithm" => algorithm = tokens.get(i + 1).map(|s| s.trim_matches('"').to_string()),
                "secret" => secret = tokens.get(i + 1).map(|s| s.trim_matches('"').to_string()),
                _ => {}
            }
            i += 1;
        }
        let algorithm = algorithm.ok_or_else(|| format!("key '{name}' has no `algorithm`"))?;
        let secret = secret.ok_or_else(|| format!("key '{name}' has no `secret`"))?;
        keys.push(TsigKey::new(name, &algorithm, &secret)?);
        i += 1;
    }
    let wanted = wanted.map(|w| w.trim_end_matches('.'));
    match (wanted, keys.len()) {
        (_, 0) => Err("no `key \"NAME\" { ... };` clause found".into()),
        (None, 1) => Ok(keys.remove(0)),
        (None, _) => Err("the file holds several keys: set `tsigKeyName` to choose one".into()),
        (Some(w), _) => keys
            .into_iter()
            .find(|k| k.name.eq_ignore_ascii_case(w))
            .ok_or_else(|| format!("no key named '{w}' in the file")),
    }
}

/// Splits a named.conf fragment into words, quoted strings, `{`, `}` (`;` dropped).
fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' => skip_line(&mut chars),
            '/' if chars.peek() == Some(&'/') => skip_line(&mut chars),
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '{' | '}' => out.push(c.to_string()),
            ';' => {}
            '"' => {
                let mut s = String::from('"');
                for c in chars.by_ref() {
                    s.push(c);
                    if c == '"' {
                        break;
                    }
                }
                out.push(s);
            }
            c if c.is_whitespace() => {}
            c => {
                let mut s = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || matches!(n, '{' | '}' | ';' | '"') {
                        break;
                    }
                    s.push(n);
                    chars.next();
                }
                out.push(s);
            }
        }
    }
    out
}

fn skip_line(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    for c in chars.by_ref() {
        if c == '\n' {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYGEN: &str =
        "key \"sluice\" {\n\talgorithm hmac-sha256;\n\tsecret \"U1iDLXb94kZwD9yzXnrVNDSs+h9lNwkxdfn0rH/x1Ds=\";\n};\n";

    #[test]
    fn parses_tsig_keygen_output() {
        let k = parse_key_file(KEYGEN, None).unwrap();
        assert_eq!((k.name.as_str(), k.algorithm.as_str()), ("sluice", "hmac-sha256"));
        assert_eq!(k.secret.len(), 32);
        assert!(k.signer().is_ok());
        assert!(!format!("{k:?}").contains("U1iD"), "Debug must not print the secret");
    }

    #[test]
    fn chooses_among_several_keys_and_skips_comments() {
        let text = format!(
            "# generated\n// other\n/* block\n key \"fake\" */\n{KEYGEN}key other {{ algorithm \"hmac-sha512\"; secret \"c2VjcmV0\"; }};\n"
        );
        assert!(parse_key_file(&text, None).unwrap_err().contains("several keys"));
        assert_eq!(parse_key_file(&text, Some("other")).unwrap().algorithm, "hmac-sha512");
        assert_eq!(parse_key_file(&text, Some("sluice.")).unwrap().name, "sluice");
        assert!(parse_key_file(&text, Some("none"))
            .unwrap_err()
            .contains("no key named 'none'"));
    }

    #[test]
    fn rejects_bad_keys() {
        for (text, needle) in [
            ("", "no `key"),
            ("key k { algorithm hmac-md5; secret \"c2VjcmV0\"; };", "not supported"),
            ("key k { algorithm hmac-sha256; };", "no `secret`"),
            ("key k { algorithm hmac-sha256; secret \"!!\"; };", "not valid base64"),
        ] {
            let e = parse_key_file(text, None).unwrap_err();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn env_sources() {
        let e = TsigKey::load(
            &SecretSource::Env("SLUICE_TEST_UNSET_VAR".into()),
            Some("k"),
            "hmac-sha256",
        );
        assert!(e.unwrap_err().contains("SLUICE_TEST_UNSET_VAR is not set"));
        let e = load_api_key(&SecretSource::File("/nonexistent/key".into())).unwrap_err();
        assert!(e.starts_with("`apiKeyFile`: cannot read /nonexistent/key"), "{e}");
    }
}
