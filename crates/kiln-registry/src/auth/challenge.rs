//! `WWW-Authenticate` challenges (RFC 9110 §11.6.1), as registries send
//! them: `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.

/// How a registry wants to be authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        /// The scope the refused request needed (`repository:x:pull`).
        scope: Option<String>,
    },
}

/// The challenge to answer among those in a `WWW-Authenticate` value:
/// Bearer if offered, else Basic; `None` for schemes kiln does not speak.
pub(crate) fn parse(value: &str) -> Option<Challenge> {
    let challenges = parse_all(value);
    let bearer = challenges
        .iter()
        .find(|(s, _)| s.eq_ignore_ascii_case("bearer"));
    if let Some((_, params)) = bearer {
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        return Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        });
    }
    challenges
        .iter()
        .any(|(s, _)| s.eq_ignore_ascii_case("basic"))
        .then_some(Challenge::Basic)
}

type Params = Vec<(String, String)>;

/// Every `scheme param=value, ...` challenge, values unquoted.
fn parse_all(value: &str) -> Vec<(String, Params)> {
    let mut out: Vec<(String, Params)> = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        let token_end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        let token = &rest[..token_end];
        if token.is_empty() {
            break;
        }
        let after = rest[token_end..].trim_start();
        if let Some(value_part) = after.strip_prefix('=')
            && let Some((_, params)) = out.last_mut()
        {
            // A parameter of the current challenge.
            let (v, remaining) = parse_value(value_part.trim_start());
            params.push((token.to_string(), v));
            rest = remaining;
        } else {
            // A new scheme.
            out.push((token.to_string(), Vec::new()));
            rest = after;
        }
    }
    out
}

/// A token or a quoted string (with `\` escapes), and what follows it.
fn parse_value(s: &str) -> (String, &str) {
    if let Some(quoted) = s.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(n);
                    }
                }
                '"' => return (value, &quoted[i + 1..]),
                c => value.push(c),
            }
        }
        (value, "")
    } else {
        let end = s.find([',', ' ', '\t']).unwrap_or(s.len());
        (s[..end].to_string(), &s[end..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_with_scope() {
        let c = parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push",error="insufficient_scope""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull,push".into()),
            })
        );
    }

    #[test]
    fn basic_unquoted_and_several_challenges() {
        assert_eq!(parse(r#"Basic realm="kiln""#), Some(Challenge::Basic));
        assert_eq!(parse("basic realm=kiln"), Some(Challenge::Basic));
        assert_eq!(
            parse(r#"Basic realm="a", Bearer realm="http://t/token", service=reg"#),
            Some(Challenge::Bearer {
                realm: "http://t/token".into(),
                service: Some("reg".into()),
                scope: None,
            })
        );
        assert_eq!(
            parse(r#"Bearer realm="a\"b""#),
            Some(Challenge::Bearer {
                realm: "a\"b".into(),
                service: None,
                scope: None
            })
        );
        assert_eq!(parse("Negotiate"), None);
        assert_eq!(parse("Bearer service=x"), None);
    }
}
