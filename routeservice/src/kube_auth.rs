//! Kubernetes' access control for the API (`serve --store kubernetes`): the
//! bearer token is checked with a `TokenReview`, then the caller's right to
//! the verb on `sandboxes.sandbox-router.dev` with a `SubjectAccessReview`,
//! so who may route where is ordinary RBAC (the ClusterRoles in
//! `istio-config/base/rbac.yaml`).
//!
//! Answers: no token `401`; a token the API server does not accept `401`;
//! a token whose user may not do the verb `403`, naming the user and the
//! verb; the API server unreachable `503`. Positive answers are cached for
//! [`CACHE_TTL`] (per token, verb and name), so a burst of writes does not
//! cost two API calls each; a revoked token or binding takes effect after
//! at most that long.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::Client;
use sha2::{Digest as _, Sha256};

use crate::error::ApiError;

/// How long an allowed (token, verb, name) is remembered.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// At most this many remembered answers (then the cache starts afresh).
const CACHE_MAX: usize = 10_000;

/// A Kubernetes verb on sandboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Get,
    List,
    Create,
    Update,
    Delete,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Delete => "delete",
        }
    }

    /// Whether the verb changes something.
    pub fn is_write(self) -> bool {
        matches!(self, Verb::Create | Verb::Update | Verb::Delete)
    }
}

/// What a request wants to do: a verb on one sandbox, or on all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access<'a> {
    pub verb: Verb,
    pub name: Option<&'a str>,
}

/// (SHA-256 of the token, verb, name): one remembered answer.
type CacheKey = ([u8; 32], Verb, Option<String>);

/// Checks tokens and verbs with the API server.
pub struct KubeAuth {
    client: Client,
    /// (SHA-256 of the token, verb, name) -> when it was allowed.
    allowed: Mutex<HashMap<CacheKey, Instant>>,
}

impl std::fmt::Debug for KubeAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeAuth").finish_non_exhaustive()
    }
}

impl KubeAuth {
    pub fn new(client: Client) -> Self {
        KubeAuth {
            client,
            allowed: Mutex::new(HashMap::new()),
        }
    }

    /// `Ok` if the holder of `token` may do `access`.
    pub async fn check(&self, token: &str, access: Access<'_>) -> Result<(), ApiError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let key = (digest, access.verb, access.name.map(str::to_owned));
        if self.cached(&key) {
            return Ok(());
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| unavailable("TokenReview", &e))?;
        let status = reviewed.status.unwrap_or_default();
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(user)) => user,
            _ => {
                return Err(ApiError::Unauthorized {
                    invalid_token: true,
                })
            }
        };
        let username = user.username.clone().unwrap_or_default();
        let sar = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                uid: user.uid,
                groups: user.groups,
                extra: user.extra,
                resource_attributes: Some(ResourceAttributes {
                    group: Some(sandbox_router_crd::GROUP.to_owned()),
                    resource: Some(sandbox_router_crd::RESOURCE.to_owned()),
                    verb: Some(access.verb.as_str().to_owned()),
                    name: access.name.map(str::to_owned),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let decided = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &sar)
            .await
            .map_err(|e| unavailable("SubjectAccessReview", &e))?;
        if decided.status.is_some_and(|s| s.allowed) {
            self.remember(key);
            Ok(())
        } else {
            let what = access
                .name
                .map_or_else(String::new, |name| format!(" {name:?}"));
            Err(ApiError::Forbidden(format!(
                "user {username:?} may not {} sandboxes.{}{what} (Kubernetes RBAC)",
                access.verb.as_str(),
                sandbox_router_crd::GROUP,
            )))
        }
    }

    fn cached(&self, key: &CacheKey) -> bool {
        let allowed = self.allowed.lock().unwrap_or_else(PoisonError::into_inner);
        allowed.get(key).is_some_and(|at| at.elapsed() < CACHE_TTL)
    }

    fn remember(&self, key: CacheKey) {
        let mut allowed = self.allowed.lock().unwrap_or_else(PoisonError::into_inner);
        if allowed.len() >= CACHE_MAX {
            allowed.retain(|_, at| at.elapsed() < CACHE_TTL);
            if allowed.len() >= CACHE_MAX {
                allowed.clear();
            }
        }
        allowed.insert(key, Instant::now());
    }
}

fn unavailable(what: &str, error: &kube::Error) -> ApiError {
    tracing::error!(error = %error, "{what} failed: cannot check the caller's rights");
    ApiError::Unavailable(format!(
        "cannot check the token with the Kubernetes API ({what}): retry"
    ))
}
