//! At the edge, after every plain routing key was stripped
//! ([`crate::edge`]): let a signed key in ([`crate::signed_key`]). What
//! the gateway then changes in the request, decided here and applied by
//! the filter:
//!
//! - accepted: the plain key joins `baggage` as the configured member, so
//!   this gateway routes on it and every hop behind it sees it as any key;
//! - accepted or not, the carriers are removed from what is forwarded when
//!   `stripCarrier` is on; a rejected one is always removed (the apps
//!   behind the gateway are not to see a forged or expired signature);
//! - a key accepted from the query may be answered with a `Set-Cookie`
//!   (`setCookie`), so a browser keeps it for the next pages.
//!
//! When both carriers are present the query parameter decides (a link just
//! followed is newer than a cookie).

use crate::config::SignedKeysConfig;
use crate::signed_carrier;
use crate::signed_key::{SignedKeyError, Verifier};

/// The header the W3C carrier travels in.
const BAGGAGE: &str = "baggage";
const COOKIE: &str = "cookie";
const PATH: &str = ":path";

/// Which carrier a signed key came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedSource {
    Query,
    Cookie,
}

/// The changes to make to a request, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// `None`: no signed-key carrier in the request, nothing to do.
    pub verdict: Option<(SignedSource, Result<String, SignedKeyError>)>,
    /// The new `:path` (the parameter removed).
    pub path: Option<String>,
    /// The new `cookie` lines (the cookie removed; empty: no header).
    pub cookie: Option<Vec<Vec<u8>>>,
    /// The one `baggage` value to replace every `baggage` line with.
    pub baggage: Option<Vec<u8>>,
    /// A `Set-Cookie` value for the response.
    pub set_cookie: Option<String>,
}

impl Admission {
    /// Makes the same changes to a copy of the request's headers, as the
    /// host makes them (replaced headers move to the end).
    pub fn apply_to(&self, headers: &mut Vec<(String, Vec<u8>)>) {
        if let Some(path) = &self.path {
            headers.retain(|(name, _)| name != PATH);
            headers.push((PATH.to_owned(), path.clone().into_bytes()));
        }
        if let Some(lines) = &self.cookie {
            headers.retain(|(name, _)| !name.eq_ignore_ascii_case(COOKIE));
            headers.extend(lines.iter().map(|line| (COOKIE.to_owned(), line.clone())));
        }
        if let Some(baggage) = &self.baggage {
            headers.retain(|(name, _)| !name.eq_ignore_ascii_case(BAGGAGE));
            headers.push((BAGGAGE.to_owned(), baggage.clone()));
        }
    }
}

/// What to do with `headers` (names in any case, values raw bytes; the
/// plain keys already stripped) at Unix time `now`. `member` is the baggage
/// key an accepted key is written under (the first of
/// `routingKey.baggageKeys`).
pub fn admit<K, V>(
    config: &SignedKeysConfig,
    verifier: &Verifier,
    member: &str,
    headers: &[(K, V)],
    now: u64,
) -> Admission
where
    K: AsRef<str>,
    V: AsRef<[u8]>,
{
    let path = headers
        .iter()
        .find(|(name, _)| name.as_ref() == PATH)
        .and_then(|(_, value)| std::str::from_utf8(value.as_ref()).ok());
    let cookie_lines = || {
        headers
            .iter()
            .filter(|(name, _)| name.as_ref().eq_ignore_ascii_case(COOKIE))
            .map(|(_, value)| value.as_ref())
    };
    let from_query = config
        .query_parameter
        .as_deref()
        .zip(path)
        .and_then(|(name, path)| signed_carrier::query_value(path, name));
    let from_cookie = config
        .cookie
        .as_deref()
        .and_then(|name| signed_carrier::cookie_value(cookie_lines(), name));
    let (source, token) = match (from_query, from_cookie) {
        (Some(token), _) => (SignedSource::Query, token),
        (None, Some(token)) => (SignedSource::Cookie, token),
        (None, None) => return Admission::default(),
    };
    let verdict = verifier.verify(token, now);
    let strip = config.strip_carrier || verdict.is_err();
    let mut admission = Admission::default();
    if strip {
        admission.path = config
            .query_parameter
            .as_deref()
            .zip(path)
            .and_then(|(name, path)| signed_carrier::strip_query(path, name));
        admission.cookie = config
            .cookie
            .as_deref()
            .and_then(|name| signed_carrier::strip_cookie(cookie_lines(), name));
    }
    if let Ok(verified) = &verdict {
        admission.baggage = Some(baggage_with(
            headers
                .iter()
                .filter(|(name, _)| name.as_ref().eq_ignore_ascii_case(BAGGAGE))
                .map(|(_, value)| value.as_ref()),
            member,
            verified.key,
        ));
        if config.set_cookie && source == SignedSource::Query {
            admission.set_cookie = config.cookie.as_deref().map(|name| {
                signed_carrier::set_cookie(name, token, verified.expiry.saturating_sub(now))
            });
        }
    }
    admission.verdict = Some((source, verdict.map(|v| v.key.to_owned())));
    admission
}

/// The request's `baggage` lines joined into one (W3C: several lines are
/// one list), with `member=key` last.
fn baggage_with<'h>(lines: impl Iterator<Item = &'h [u8]>, member: &str, key: &str) -> Vec<u8> {
    let mut joined = Vec::new();
    for line in lines {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        joined.extend_from_slice(line);
        joined.push(b',');
    }
    joined.extend_from_slice(member.as_bytes());
    joined.push(b'=');
    joined.extend_from_slice(key.as_bytes());
    joined
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signed_key::{sign, Secret};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NOW: u64 = 1_767_225_600;
    const MEMBER: &str = "sd-routing-key";

    fn secret() -> Secret {
        Secret::new(&[b'k'; 32]).unwrap()
    }

    fn config(json: &str) -> SignedKeysConfig {
        serde_json::from_str(json).unwrap()
    }

    fn both() -> SignedKeysConfig {
        config(
            r#"{"secretEnv": "S", "queryParameter": "sd-routing-key", "cookie": "sd-key",
                "setCookie": true}"#,
        )
    }

    fn verifier() -> Verifier {
        Verifier {
            secrets: vec![secret()],
            max_ttl_seconds: 86_400,
        }
    }

    fn admit_headers(config: &SignedKeysConfig, headers: &[(&str, &str)]) -> Admission {
        admit(config, &verifier(), MEMBER, headers, NOW)
    }

    #[test]
    fn nothing_to_do_without_a_carrier() {
        let headers = [(":path", "/p?a=1"), ("cookie", "a=1"), ("baggage", "x=1")];
        assert_eq!(admit_headers(&both(), &headers), Admission::default());
    }

    #[test]
    fn a_signed_key_in_the_query_joins_baggage_and_leaves_the_path() {
        let token = sign(&secret(), "pr-42", NOW + 3600).unwrap();
        let path = format!("/shop?a=1&sd-routing-key={token}");
        let headers = [
            (":path", path.as_str()),
            ("baggage", "other=1"),
            ("baggage", " more=2 "),
        ];
        let admission = admit_headers(&both(), &headers);
        assert_eq!(
            admission.verdict,
            Some((SignedSource::Query, Ok("pr-42".to_owned())))
        );
        assert_eq!(admission.path.as_deref(), Some("/shop?a=1"));
        assert_eq!(admission.cookie, None);
        assert_eq!(
            admission.baggage.as_deref(),
            Some(&b"other=1,more=2,sd-routing-key=pr-42"[..])
        );
        assert_eq!(
            admission.set_cookie.as_deref(),
            Some(
                format!("sd-key={token}; Max-Age=3600; Path=/; HttpOnly; Secure; SameSite=Lax")
                    .as_str()
            )
        );
        let mut copy: Vec<(String, Vec<u8>)> = headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
            .collect();
        admission.apply_to(&mut copy);
        assert_eq!(
            copy,
            [
                (":path".to_owned(), b"/shop?a=1".to_vec()),
                (
                    "baggage".to_owned(),
                    b"other=1,more=2,sd-routing-key=pr-42".to_vec()
                ),
            ]
        );
    }

    #[test]
    fn a_signed_key_in_a_cookie_is_used_when_the_query_has_none() {
        let token = sign(&secret(), "pr-42", NOW + 60).unwrap();
        let cookie = format!("a=1; sd-key={token}");
        let headers = [(":path", "/"), ("cookie", cookie.as_str())];
        let admission = admit_headers(&both(), &headers);
        assert_eq!(
            admission.verdict,
            Some((SignedSource::Cookie, Ok("pr-42".to_owned())))
        );
        assert_eq!(admission.cookie, Some(vec![b"a=1".to_vec()]));
        assert_eq!(
            admission.baggage.as_deref(),
            Some(&b"sd-routing-key=pr-42"[..])
        );
        assert_eq!(
            admission.set_cookie, None,
            "only a key from the query is set"
        );
    }

    #[test]
    fn kept_when_stripping_is_off_but_a_rejected_one_is_always_removed() {
        let keep = config(r#"{"secretEnv": "S", "queryParameter": "k", "stripCarrier": false}"#);
        let token = sign(&secret(), "pr-42", NOW + 60).unwrap();
        let path = format!("/?k={token}");
        let admission = admit_headers(&keep, &[(":path", path.as_str())]);
        assert_eq!(admission.path, None);
        assert!(admission.baggage.is_some());
        let expired = sign(&secret(), "pr-42", NOW).unwrap();
        let path = format!("/?k={expired}&b=2");
        let admission = admit_headers(&keep, &[(":path", path.as_str())]);
        assert_eq!(
            admission.verdict,
            Some((SignedSource::Query, Err(SignedKeyError::Expired)))
        );
        assert_eq!(admission.path.as_deref(), Some("/?b=2"));
        assert_eq!(admission.baggage, None);
    }

    #[test]
    fn the_query_decides_over_the_cookie_and_both_are_stripped() {
        let good = sign(&secret(), "pr-42", NOW + 60).unwrap();
        let path = "/?sd-routing-key=pr-42.1.AAAA".to_owned();
        let cookie = format!("sd-key={good}");
        let headers = [(":path", path.as_str()), ("cookie", cookie.as_str())];
        let admission = admit_headers(&both(), &headers);
        assert_eq!(
            admission.verdict,
            Some((SignedSource::Query, Err(SignedKeyError::BadSignature)))
        );
        assert_eq!(admission.path.as_deref(), Some("/"));
        assert_eq!(admission.cookie, Some(vec![]));
        assert_eq!(admission.baggage, None);
    }
}
