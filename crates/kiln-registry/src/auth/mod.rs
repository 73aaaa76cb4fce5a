//! Authentication: which credentials a registry gets (options, docker
//! config, helpers), the challenge it sent, and the bearer tokens fetched
//! for it, cached per (registry, scopes).

pub(crate) mod challenge;
pub(crate) mod docker_config;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::HeaderValue;

use crate::client::{Endpoint, Inner};
use crate::http::{MAX_ERROR_BODY, idle_watch, read_body, status_failure, transport_failure};
use crate::retry::{Failure, Retrier};
use crate::{Credentials, Error, Operation, OperationKind};
use challenge::Challenge;
use docker_config::{DockerConfig, Source};

/// Credentials and tokens, shared by the clones of a client.
#[derive(Default)]
pub(crate) struct AuthCache {
    credentials: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Option<Credentials>>>>>,
    tokens: Mutex<HashMap<String, Token>>,
}

#[derive(Clone)]
struct Token {
    value: String,
    refresh_after: Instant,
}

/// A bearer token as token servers return it (Docker's token spec).
#[derive(serde::Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// `repository:<name>:<actions>`.
pub(crate) fn repository_scope(repository: &str, push: bool) -> String {
    let actions = if push { "pull,push" } else { "pull" };
    format!("repository:{repository}:{actions}")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    /// The credentials for `registry`: from the options, else the docker
    /// config (running its helper once per client).
    pub(crate) async fn credentials(&self, registry: &str) -> Result<Option<Credentials>, Error> {
        if let Some(c) = self.options.credentials.get(registry) {
            return Ok(Some(c.clone()));
        }
        let cell = lock(&self.auth.credentials)
            .entry(registry.to_string())
            .or_default()
            .clone();
        let found = cell
            .get_or_try_init(|| async {
                let Some(dir) = &self.docker_config_dir else {
                    return Ok(None);
                };
                match DockerConfig::load(dir)?.source(registry)? {
                    Source::None => Ok(None),
                    Source::Inline(c) => Ok(Some(c)),
                    Source::Helper { name, server } => {
                        docker_config::run_helper(
                            &name,
                            &server,
                            registry,
                            self.options.credential_helper_path.as_deref(),
                            self.options.helper_timeout,
                        )
                        .await
                    }
                }
            })
            .await?;
        Ok(found.clone())
    }

    /// The `Authorization` header for a request needing `scopes`, if the
    /// registry asked for one. `fresh` skips the token cache (after a 401),
    /// and asks for `extra` scopes too (the 401's challenge may name them);
    /// the token is cached under `scopes`, which it covers.
    pub(crate) async fn authorization(
        &self,
        endpoint: &Endpoint,
        scopes: &[String],
        extra: &[String],
        fresh: bool,
    ) -> Result<Option<HeaderValue>, Failure> {
        let Some(challenge) = endpoint.challenge() else {
            return Ok(None);
        };
        match challenge {
            Challenge::Basic => match self.credentials(&endpoint.registry).await? {
                Some(Credentials::Basic { username, password }) => {
                    let encoded = base64::engine::general_purpose::STANDARD
                        .encode(format!("{username}:{password}"));
                    Ok(Some(sensitive(&format!("Basic {encoded}"))))
                }
                _ => Ok(None),
            },
            Challenge::Bearer { realm, service, .. } => {
                let mut scopes = scopes.to_vec();
                scopes.sort();
                scopes.dedup();
                let key = format!("{} {}", endpoint.registry, scopes.join(" "));
                for s in extra {
                    if !scopes.contains(s) {
                        scopes.push(s.clone());
                    }
                }
                if !fresh
                    && let Some(token) = lock(&self.auth.tokens).get(&key)
                    && token.refresh_after > Instant::now()
                {
                    return Ok(Some(sensitive(&format!("Bearer {}", token.value))));
                }
                let token = self
                    .fetch_token(endpoint, &realm, service.as_deref(), &scopes)
                    .await?;
                let header = sensitive(&format!("Bearer {}", token.value));
                lock(&self.auth.tokens).insert(key, token);
                Ok(Some(header))
            }
        }
    }

    /// Asks the realm for a token covering `scopes`, with the registry's
    /// credentials (basic auth, or an OAuth2 refresh token), retrying
    /// transient failures.
    async fn fetch_token(
        &self,
        endpoint: &Endpoint,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<Token, Error> {
        let operation = Operation::new(OperationKind::Authenticate, &endpoint.registry, None, None);
        let credentials = self.credentials(&endpoint.registry).await?;
        let realm_url = url::Url::parse(realm).map_err(|e| Error::Protocol {
            operation: operation.clone(),
            message: format!("token realm {realm:?}: {e}"),
        })?;
        let http = self.transport_for_url(&operation, &realm_url)?;
        let mut retrier = Retrier::new(
            &operation,
            self.options.retry,
            self.options.on_event.as_ref(),
        );
        loop {
            let request = match &credentials {
                Some(Credentials::IdentityToken { token, .. }) => {
                    let mut form = vec![
                        ("grant_type", "refresh_token".to_string()),
                        ("refresh_token", token.clone()),
                        ("client_id", "kiln".to_string()),
                        ("scope", scopes.join(" ")),
                    ];
                    if let Some(service) = service {
                        form.push(("service", service.to_string()));
                    }
                    http.post(realm_url.clone()).form(&form)
                }
                other => {
                    let mut url = realm_url.clone();
                    {
                        let mut q = url.query_pairs_mut();
                        if let Some(service) = service {
                            q.append_pair("service", service);
                        }
                        for scope in scopes {
                            q.append_pair("scope", scope);
                        }
                        if let Some(Credentials::Basic { username, .. }) = other {
                            q.append_pair("account", username);
                        }
                    }
                    let request = http.get(url);
                    match other {
                        Some(Credentials::Basic { username, password }) => {
                            request.basic_auth(username, Some(password))
                        }
                        _ => request,
                    }
                }
            };
            match self.token_attempt(&operation, request).await {
                Ok(token) => return Ok(token),
                Err(failure) => retrier.failed(failure).await?,
            }
        }
    }

    async fn token_attempt(
        &self,
        operation: &Operation,
        request: reqwest::RequestBuilder,
    ) -> Result<Token, Failure> {
        let idle = self.options.idle_timeout;
        let activity = crate::http::Activity::new();
        let response = match idle_watch(request.send(), &activity, idle).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(transport_failure(operation, &e)),
            Err(()) => return Err(crate::http::stalled(operation, idle)),
        };
        let status = response.status().as_u16();
        if status != 200 {
            let mut failure = status_failure(operation, response, idle).await;
            // A token server refusing credentials says 401 or 403; either way
            // it is the credentials, and retrying will not change them.
            if let Error::Status {
                operation,
                status: s @ 403,
                message,
                ..
            } = failure.error
            {
                failure.error = Error::Unauthorized {
                    operation,
                    status: s,
                    message,
                };
            }
            return Err(failure);
        }
        let body = read_body(operation, response, MAX_ERROR_BODY * 4, idle).await?;
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
            Failure::fatal(Error::Protocol {
                operation: operation.clone(),
                message: format!("token answer is not JSON: {e}"),
            })
        })?;
        let value = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Failure::fatal(Error::Protocol {
                    operation: operation.clone(),
                    message: "token answer has no token".to_string(),
                })
            })?;
        // Docker's token spec: 60 s when unsaid. Refresh a little early so a
        // token does not expire between the check and the request.
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(60).max(1));
        let margin = (lifetime / 10).min(Duration::from_secs(30));
        Ok(Token {
            value,
            refresh_after: Instant::now() + lifetime - margin,
        })
    }
}

/// A header value that must not show in logs or debug output.
fn sensitive(value: &str) -> HeaderValue {
    let mut v = HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""));
    v.set_sensitive(true);
    v
}
