//! A bearer token server as Docker's token spec describes it: `GET
//! /token?service=&scope=` with optional basic auth, and the OAuth2 `POST
//! /token` (password or refresh token). It issues ES256 JWTs that a
//! Distribution registry configured with `auth: token:` accepts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::background::Background;
use crate::http1::{read_body, read_head, request_framing, response};
use crate::pki::SigningKey;

/// The `service` (audience) the registry and the token server agree on.
pub const TOKEN_SERVICE: &str = "kiln-testkit-registry";
/// The `iss` of every token.
pub const TOKEN_ISSUER: &str = "kiln-testkit";

/// Who gets which token.
#[derive(Debug, Clone, Default)]
pub struct TokenAuth {
    /// Accounts (user, password). Empty: everyone, anonymous included,
    /// gets every action asked for.
    pub users: Vec<(String, String)>,
    /// Refresh tokens accepted by `POST /token` (`identitytoken` in a docker config).
    pub refresh_tokens: Vec<String>,
    /// Without credentials, grant `pull` (when there are `users`).
    pub anonymous_pull: bool,
    /// The first this many tokens are issued already expired, so that the
    /// registry refuses them with 401.
    pub expired_tokens: u32,
    /// Lifetime of tokens; default 300 s.
    pub lifetime: Option<Duration>,
}

/// A token request, as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The authenticated account, if any.
    pub account: Option<String>,
    pub scopes: Vec<String>,
    /// Whether a token was issued.
    pub granted: bool,
}

struct State {
    auth: TokenAuth,
    key: SigningKey,
    issued: AtomicU32,
    log: Mutex<Vec<TokenRequest>>,
}

/// A token server on a free loopback port, stopped on drop.
pub struct TokenServer {
    addr: SocketAddr,
    state: Arc<State>,
    _background: Background,
}

impl TokenServer {
    pub fn start(auth: TokenAuth) -> TokenServer {
        let state = Arc::new(State {
            auth,
            key: SigningKey::new(),
            issued: AtomicU32::new(0),
            log: Mutex::new(Vec::new()),
        });
        let background = Background::start("kiln-token-server");
        let listener = background.bind();
        let addr = listener.local_addr().expect("token server address");
        let accept_state = state.clone();
        background.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, accept_state.clone()));
            }
        });
        TokenServer {
            addr,
            state,
            _background: background,
        }
    }

    /// `http://127.0.0.1:PORT/token`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The certificate tokens are signed under: the registry's `rootcertbundle`.
    pub fn root_cert_pem(&self) -> &str {
        &self.state.key.cert_pem
    }

    /// Tokens issued so far.
    pub fn issued(&self) -> u32 {
        self.state.issued.load(Ordering::SeqCst)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

async fn serve(stream: TcpStream, state: Arc<State>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    while let Ok(Some(head)) = read_head(&mut read).await {
        let Ok(body) = read_body(&mut read, request_framing(&head)).await else {
            return;
        };
        let answer = answer(
            &state,
            head.method(),
            head.target(),
            head.header("authorization"),
            &body,
        );
        if write.write_all(&answer).await.is_err() || head.wants_close() {
            return;
        }
    }
}

/// The answer to one request.
fn answer(
    state: &State,
    method: &str,
    target: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> Vec<u8> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/token" {
        return response(404, "Not Found", &[], b"");
    }
    let mut params = form(query);
    if method == "POST" {
        params.extend(form(&String::from_utf8_lossy(body)));
    }
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let scopes: Vec<String> = params
        .iter()
        .filter(|(n, _)| n == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    let auth = &state.auth;

    // Who is asking.
    let basic = authorization
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| {
            s.split_once(':')
                .map(|(u, p)| (u.to_string(), p.to_string()))
        });
    let password_grant = (get("grant_type").as_deref() == Some("password"))
        .then(|| Some((get("username")?, get("password")?)))
        .flatten();
    let refresh = (get("grant_type").as_deref() == Some("refresh_token"))
        .then(|| get("refresh_token"))
        .flatten();
    let account: Result<Option<String>, ()> = if let Some(token) = refresh {
        if auth.refresh_tokens.contains(&token) {
            Ok(Some("refresh-token-user".to_string()))
        } else {
            Err(())
        }
    } else if let Some((user, password)) = basic.or(password_grant) {
        if auth.users.iter().any(|(u, p)| *u == user && *p == password) {
            Ok(Some(user))
        } else {
            Err(())
        }
    } else {
        Ok(None)
    };
    let record = |account: Option<String>, granted: bool| {
        state
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(TokenRequest {
                account,
                scopes: scopes.clone(),
                granted,
            });
    };
    let Ok(account) = account else {
        record(None, false);
        return response(
            401,
            "Unauthorized",
            &[("Content-Type", "application/json".to_string())],
            br#"{"details":"incorrect username or password"}"#,
        );
    };
    let anonymous_only_pull = account.is_none() && !auth.users.is_empty();
    if anonymous_only_pull && !auth.anonymous_pull {
        record(None, false);
        return response(
            401,
            "Unauthorized",
            &[("Content-Type", "application/json".to_string())],
            br#"{"details":"authentication required"}"#,
        );
    }

    // What they get.
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|scope| {
            let (kind, rest) = scope.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            let actions: Vec<&str> = actions
                .split(',')
                .filter(|a| !anonymous_only_pull || *a == "pull")
                .collect();
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions}))
        })
        .collect();
    let number = state.issued.fetch_add(1, Ordering::SeqCst);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let lifetime = auth.lifetime.unwrap_or(Duration::from_secs(300)).as_secs();
    // Distribution allows 60 s of clock skew: expired means well past it.
    let exp = if number < auth.expired_tokens {
        now - 600
    } else {
        now + lifetime
    };
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER,
        "sub": account.clone().unwrap_or_default(),
        "aud": get("service").unwrap_or_else(|| TOKEN_SERVICE.to_string()),
        "exp": exp,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("kiln-{number}-{now}"),
        "access": access,
    });
    let token = jwt(&state.key, &claims);
    record(account, true);
    let body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": lifetime,
        "issued_at": kiln_image::document::rfc3339(now as i64),
    });
    response(
        200,
        "OK",
        &[("Content-Type", "application/json".to_string())],
        body.to_string().as_bytes(),
    )
}

/// `header.claims.signature`, ES256, the signing certificate in `x5c`.
fn jwt(key: &SigningKey, claims: &serde_json::Value) -> String {
    let header = serde_json::json!({
        "typ": "JWT",
        "alg": "ES256",
        "x5c": [STANDARD.encode(&key.cert_der)],
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// `application/x-www-form-urlencoded` pairs.
fn form(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(n), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_dates() {
        assert_eq!(
            form("scope=repository%3Aa%2Fb%3Apull&service=x+y"),
            vec![
                ("scope".to_string(), "repository:a/b:pull".to_string()),
                ("service".to_string(), "x y".to_string())
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(kiln_image::document::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            kiln_image::document::rfc3339(1_700_000_000),
            "2023-11-14T22:13:20Z"
        );
    }
}
