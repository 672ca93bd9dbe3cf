//! Authorisation: `Authorization: Bearer <token>` (RFC 6750). With the
//! redb store the token is `ROUTESERVICE_TOKEN`, compared in constant time,
//! and reads are open; with the Kubernetes store it is checked by the API
//! server ([`crate::kube_auth`]), and reads are open unless `--auth-reads`.

use std::sync::Arc;

use axum::http::{header, HeaderMap};

use crate::error::{ApiError, FieldError};
use crate::kube_auth::{Access, KubeAuth};

/// Who may write (and read).
#[derive(Clone)]
pub enum Auth {
    /// Writes need this bearer token.
    Token(Vec<u8>),
    /// Anyone may write (`--insecure-no-auth`).
    Disabled,
    /// Kubernetes decides: TokenReview, then SubjectAccessReview of the verb.
    Kubernetes {
        auth: Arc<KubeAuth>,
        /// Reads need `get`/`list` too (else they are open, as the filter,
        /// which sends no token, needs).
        reads: bool,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Token(_) => f.write_str("Auth::Token(<redacted>)"),
            Auth::Disabled => f.write_str("Auth::Disabled"),
            Auth::Kubernetes { reads, .. } => write!(f, "Auth::Kubernetes {{ reads: {reads} }}"),
        }
    }
}

/// Why a token cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidToken {
    #[error("the token is empty")]
    Empty,
    #[error("the token has a character outside printable ASCII, or a space")]
    BadCharacter,
}

impl Auth {
    /// A token auth, if `token` can be sent in a header as one word.
    pub fn token(token: &str) -> Result<Self, InvalidToken> {
        if token.is_empty() {
            return Err(InvalidToken::Empty);
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidToken::BadCharacter);
        }
        Ok(Auth::Token(token.as_bytes().to_vec()))
    }

    /// `Ok` if the request may write. More than one `Authorization` field
    /// is refused (`400`), whatever the mode: which one counts would be up
    /// to each proxy on the way, so a check of the first could pass a
    /// request another hop reads differently.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let sent = headers.get_all(header::AUTHORIZATION).iter().count();
        if sent > 1 {
            return Err(ApiError::Invalid(FieldError::new(
                "Authorization",
                format!("sent {sent} times: send one Bearer token"),
            )));
        }
        let expected = match self {
            Auth::Token(expected) => expected,
            Auth::Disabled => return Ok(()),
            // Only `authorize` can ask the API server.
            Auth::Kubernetes { .. } => return Err(ApiError::Internal),
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| bearer_token(value.as_bytes()));
        match presented {
            None => Err(ApiError::Unauthorized {
                invalid_token: false,
            }),
            Some(token) if constant_time_eq(token, expected) => Ok(()),
            Some(_) => Err(ApiError::Unauthorized {
                invalid_token: true,
            }),
        }
    }
}

impl Auth {
    /// `Ok` if the request may do `access`: for a token or no auth, reads
    /// are open and writes go through [`Auth::check`]; for Kubernetes, the
    /// API server decides (reads too, with `reads`).
    pub async fn authorize(&self, headers: &HeaderMap, access: Access<'_>) -> Result<(), ApiError> {
        let Auth::Kubernetes { auth, reads } = self else {
            return if access.verb.is_write() {
                self.check(headers)
            } else {
                Ok(())
            };
        };
        if !access.verb.is_write() && !reads {
            return Ok(());
        }
        let sent = headers.get_all(header::AUTHORIZATION).iter().count();
        if sent > 1 {
            return Err(ApiError::Invalid(FieldError::new(
                "Authorization",
                format!("sent {sent} times: send one Bearer token"),
            )));
        }
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| bearer_token(value.as_bytes()))
            .and_then(|token| std::str::from_utf8(token).ok())
            .ok_or(ApiError::Unauthorized {
                invalid_token: false,
            })?;
        auth.check(token, access).await
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 9110 11.1).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let rest = value.get(6..)?;
    let token_start = rest.iter().position(|b| *b != b' ')?;
    if token_start == 0 {
        return None;
    }
    let token = rest.get(token_start..)?;
    let end = token
        .iter()
        .rposition(|b| *b != b' ')
        .map_or(0, |last| last + 1);
    token.get(..end)
}

/// Equal, in a time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer   abc  "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Bearerabc"), None);
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bear"), None);
    }

    #[test]
    fn only_the_token_writes() {
        let auth = Auth::token("dev-token").unwrap();
        auth.check(&with_auth("Bearer dev-token")).unwrap();
        for wrong in [
            "Bearer dev-toke",
            "Bearer dev-token2",
            "Bearer x",
            "Basic dev-token",
        ] {
            assert!(auth.check(&with_auth(wrong)).is_err(), "{wrong}");
        }
        assert!(matches!(
            auth.check(&HeaderMap::new()),
            Err(ApiError::Unauthorized {
                invalid_token: false
            })
        ));
        Auth::Disabled.check(&HeaderMap::new()).unwrap();
    }

    /// The Kubernetes auth answers what it can without the API server
    /// (here one that does not exist): open reads, `401` without a token,
    /// `400` for two tokens, `503` when the API server cannot be asked.
    #[tokio::test]
    async fn kubernetes_auth_without_the_api_server() {
        use crate::kube_auth::Verb;
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let auth = |reads| Auth::Kubernetes {
            auth: Arc::new(KubeAuth::new(client.clone())),
            reads,
        };
        let access = |verb| Access {
            verb,
            name: Some("pr-1"),
        };
        auth(false)
            .authorize(&HeaderMap::new(), access(Verb::Get))
            .await
            .unwrap();
        for (reads, verb) in [
            (false, Verb::Create),
            (true, Verb::List),
            (true, Verb::Delete),
        ] {
            assert!(matches!(
                auth(reads).authorize(&HeaderMap::new(), access(verb)).await,
                Err(ApiError::Unauthorized {
                    invalid_token: false
                })
            ));
        }
        let mut two = with_auth("Bearer a");
        two.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert!(matches!(
            auth(false).authorize(&two, access(Verb::Update)).await,
            Err(ApiError::Invalid(_))
        ));
        assert!(matches!(
            auth(false)
                .authorize(&with_auth("Bearer t"), access(Verb::Delete))
                .await,
            Err(ApiError::Unavailable(_))
        ));
        // The sync check cannot decide for Kubernetes: it refuses.
        assert!(auth(false).check(&with_auth("Bearer t")).is_err());
    }

    #[test]
    fn two_authorization_fields_are_refused() {
        let mut headers = with_auth("Bearer dev-token");
        headers.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        for auth in [Auth::token("dev-token").unwrap(), Auth::Disabled] {
            match auth.check(&headers) {
                Err(ApiError::Invalid(e)) => assert_eq!(e.field, "Authorization", "{e}"),
                other => panic!("{auth:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn tokens_must_fit_a_header() {
        assert_eq!(Auth::token("").unwrap_err(), InvalidToken::Empty);
        assert_eq!(Auth::token("a b").unwrap_err(), InvalidToken::BadCharacter);
        assert_eq!(Auth::token("é").unwrap_err(), InvalidToken::BadCharacter);
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
