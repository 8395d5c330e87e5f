//! Client building: a vendor source's base URL and HTTP client (auth, request budget, retry
//! settings) from its configuration.

use std::sync::Arc;

use super::{BuildError, SourceContext};
use crate::config::{AuthConfig, SourceConfig, SourceKind};
use crate::http::auth::{Auth, OAuth2, OAuth2Config};
use crate::http::budget::RequestBudget;
use crate::http::{HttpClient, HttpOptions};
use crate::store::StoreTokenCache;

/// The base URL and HTTP client of a vendor source (see [`http_client`]); OAuth 2.0 tokens
/// come from the vendor's default token path unless `auth.token_url` is set.
pub fn vendor_client(
    config: &SourceConfig,
    ctx: &SourceContext,
) -> Result<(url::Url, HttpClient), BuildError> {
    let default_token_path = super::vendor(config.kind).defaults().token_path;
    let err = |message: String| BuildError {
        source_name: config.name.clone(),
        message,
    };
    let base = config
        .base_url
        .as_deref()
        .ok_or_else(|| err("base_url is required".into()))
        .and_then(|u| url::Url::parse(u).map_err(|e| err(format!("base_url {u:?}: {e}"))))?;
    let http = http_client(config, ctx, &base, default_token_path).map_err(err)?;
    Ok((base, http))
}

/// The HTTP client of a vendor source: auth from the configuration (OAuth 2.0 token endpoint
/// `default_token_path` under `base` unless configured), the request budget, retry settings.
pub fn http_client(
    config: &SourceConfig,
    ctx: &SourceContext,
    base: &url::Url,
    default_token_path: &str,
) -> Result<HttpClient, String> {
    let options = HttpOptions {
        timeout: config.request_timeout,
        max_attempts: config.max_attempts,
        max_response_bytes: config.max_response_bytes as usize,
        max_retry_wait: config.max_retry_wait,
        ..HttpOptions::default()
    };
    let auth = match &config.auth {
        AuthConfig::None => Auth::None,
        AuthConfig::Basic { username, password } => Auth::Basic {
            username: username.clone(),
            password: password.clone(),
        },
        AuthConfig::Bearer { token } => Auth::Bearer(token.clone()),
        AuthConfig::Header { name, value } => Auth::Header {
            name: name.clone(),
            value: value.clone(),
        },
        AuthConfig::Oauth2 {
            token_url,
            grant,
            client_id,
            client_secret,
            username,
            password,
            refresh_token,
        } => {
            let follow_geolocation = token_url.is_none();
            let token_url = match token_url {
                Some(u) => url::Url::parse(u).map_err(|e| format!("auth.token_url {u:?}: {e}"))?,
                None => base
                    .join(default_token_path)
                    .map_err(|e| format!("token endpoint under {base}: {e}"))?,
            };
            Auth::OAuth2(Arc::new(
                OAuth2::new(
                    &config.name,
                    OAuth2Config {
                        token_url,
                        grant: *grant,
                        client_id: client_id.clone(),
                        client_secret: client_secret.clone(),
                        username: username.clone(),
                        password: password.clone(),
                        refresh_token: refresh_token.clone(),
                        follow_geolocation,
                        geolocation_hosts: match config.kind {
                            SourceKind::Concur => Some(super::concur::geolocation_hosts(config)?),
                            _ => None,
                        },
                    },
                    Arc::new(StoreTokenCache::new(ctx.tokens.clone())),
                    ctx.clock.clone(),
                    config.request_timeout,
                )
                .with_metrics(ctx.metrics.clone()),
            ))
        }
    };
    // Shared through the state store, so the budget holds across all replicas together.
    let budget = config.max_requests_per_hour.map(|n| {
        Arc::new(crate::store::budget::SharedBudget::per_hour(
            ctx.budget.clone(),
            &config.name,
            n,
        )) as Arc<dyn RequestBudget>
    });
    Ok(HttpClient::new(&config.name, auth, budget, options).with_metrics(ctx.metrics.clone()))
}
