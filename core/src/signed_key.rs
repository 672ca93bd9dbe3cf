//! Signed routing keys: how a request from outside the mesh (a preview
//! link, a browser) may still name a sandbox. At the edge every plain
//! routing key is stripped ([`crate::edge`]); a signed key survives when its
//! signature checks and it has not expired.
//!
//! A signed key is `<key>.<expiry>.<signature>`:
//! - `<key>`: the routing key (validated as any key: [`crate::routing_key`]);
//! - `<expiry>`: Unix time in seconds after which it is refused;
//! - `<signature>`: HMAC-SHA256 with the shared secret over the ASCII bytes
//!   `<key>.<expiry>`, in unpadded base64url (43 characters).
//!
//! Every part is made of RFC 3986 unreserved characters, so a signed key
//! goes into a cookie or a query parameter as it is. A key may contain dots:
//! the token is split at its last two. One openssl line makes the same
//! signature (docs/edge.md), so a CI in any language can mint them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::routing_key::{self, InvalidRoutingKey};

type HmacSha256 = Hmac<Sha256>;

/// The shortest secret accepted: 32 bytes, SHA-256's own size (RFC 2104
/// section 3: shorter keys weaken the MAC).
pub const MIN_SECRET_BYTES: usize = 32;

/// An HMAC key, checked for length. Its bytes never reach a log line.
#[derive(Clone)]
pub struct Secret {
    bytes: Vec<u8>,
    /// The keyed MAC, prepared once and cloned per use.
    mac: HmacSha256,
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Secret {}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.bytes.len())
    }
}

/// Why a secret was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSecret {
    #[error("is shorter than {MIN_SECRET_BYTES} bytes")]
    TooShort,
    #[error("is not usable as an HMAC-SHA256 key")]
    Unusable,
}

impl Secret {
    /// A secret from its bytes as written (surrounding whitespace, as a
    /// file or an environment variable often carries, is not part of it).
    pub fn new(bytes: &[u8]) -> Result<Self, InvalidSecret> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_SECRET_BYTES {
            return Err(InvalidSecret::TooShort);
        }
        let mac = HmacSha256::new_from_slice(trimmed).map_err(|_| InvalidSecret::Unusable)?;
        Ok(Secret {
            bytes: trimmed.to_vec(),
            mac,
        })
    }

    fn mac(&self, key: &str, expiry: &str) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(key.as_bytes());
        mac.update(b".");
        mac.update(expiry.as_bytes());
        mac
    }
}

/// Why a signed key was refused. Carries no copy of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignedKeyError {
    #[error("not of the form <key>.<expiry>.<signature>")]
    Malformed,
    #[error("{0}")]
    InvalidKey(InvalidRoutingKey),
    #[error("expired")]
    Expired,
    #[error("expires further ahead than the configured maximum")]
    TooFarAhead,
    #[error("signature does not match")]
    BadSignature,
}

impl SignedKeyError {
    /// A short, stable name for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SignedKeyError::Malformed => "malformed",
            SignedKeyError::InvalidKey(_) => "invalid_key",
            SignedKeyError::Expired => "expired",
            SignedKeyError::TooFarAhead => "too_far_ahead",
            SignedKeyError::BadSignature => "bad_signature",
        }
    }
}

/// Signs routing key `key` (validated first) to expire at `expiry` (Unix
/// seconds).
pub fn sign(secret: &Secret, key: &str, expiry: u64) -> Result<String, InvalidRoutingKey> {
    routing_key::validate(key)?;
    let expiry = expiry.to_string();
    let tag = secret.mac(key, &expiry).finalize().into_bytes();
    Ok(format!("{key}.{expiry}.{}", URL_SAFE_NO_PAD.encode(tag)))
}

/// A signed key that verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified<'t> {
    pub key: &'t str,
    /// Unix seconds.
    pub expiry: u64,
}

/// What a verifier accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    /// The current secret first, then older ones still accepted while
    /// links signed with them are out (rotation).
    pub secrets: Vec<Secret>,
    /// A signed key expiring more than this far ahead of now is refused,
    /// so a leaked secret cannot mint keys that live for ever.
    pub max_ttl_seconds: u64,
}

impl Verifier {
    /// The routing key of `token` if it is signed by one of the secrets and
    /// valid at `now` (Unix seconds). The signature is compared in constant
    /// time.
    pub fn verify<'t>(&self, token: &'t str, now: u64) -> Result<Verified<'t>, SignedKeyError> {
        let (rest, signature) = token.rsplit_once('.').ok_or(SignedKeyError::Malformed)?;
        let (key, expiry_text) = rest.rsplit_once('.').ok_or(SignedKeyError::Malformed)?;
        // Digits only, no sign, no leading `+`, at most 20 of them: the
        // text signed is exactly the text sent.
        if expiry_text.is_empty()
            || expiry_text.len() > 20
            || !expiry_text.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(SignedKeyError::Malformed);
        }
        let expiry: u64 = expiry_text.parse().map_err(|_| SignedKeyError::Malformed)?;
        routing_key::validate(key).map_err(SignedKeyError::InvalidKey)?;
        let tag = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| SignedKeyError::Malformed)?;
        let signed = self
            .secrets
            .iter()
            .any(|secret| secret.mac(key, expiry_text).verify_slice(&tag).is_ok());
        if !signed {
            return Err(SignedKeyError::BadSignature);
        }
        // Time is checked after the signature, so that an unsigned token
        // learns nothing about the clock.
        if expiry <= now {
            return Err(SignedKeyError::Expired);
        }
        if expiry - now > self.max_ttl_seconds {
            return Err(SignedKeyError::TooFarAhead);
        }
        Ok(Verified { key, expiry })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NOW: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    fn secret(fill: u8) -> Secret {
        Secret::new(&[fill; 32]).unwrap()
    }

    fn verifier(secrets: Vec<Secret>) -> Verifier {
        Verifier {
            secrets,
            max_ttl_seconds: 7 * 86_400,
        }
    }

    #[test]
    fn a_signed_key_verifies_and_names_its_key() {
        let token = sign(&secret(1), "pr-42", NOW + 3600).unwrap();
        assert!(token.starts_with("pr-42.1767229200."), "{token}");
        assert_eq!(token.len(), "pr-42.1767229200.".len() + 43);
        assert_eq!(
            verifier(vec![secret(1)]).verify(&token, NOW).map(|v| v.key),
            Ok("pr-42")
        );
        // Keys may hold dots: the token splits at its last two.
        let dotted = sign(&secret(1), "team.pr-42", NOW + 60).unwrap();
        assert_eq!(
            verifier(vec![secret(1)])
                .verify(&dotted, NOW)
                .map(|v| v.key),
            Ok("team.pr-42")
        );
    }

    #[test]
    fn matches_an_independent_hmac_sha256() {
        // Computed independently with openssl:
        // printf 'pr-42.1767229200' | openssl dgst -sha256 \
        //   -hmac 0123456789abcdef0123456789abcdef -binary | basenc --base64url
        let secret = Secret::new(b"0123456789abcdef0123456789abcdef").unwrap();
        let token = sign(&secret, "pr-42", 1_767_229_200).unwrap();
        assert_eq!(
            token,
            "pr-42.1767229200.kypiWe1nHokmpnhFirPiYLwQTyKxk561zoXnhHMxvBY"
        );
    }

    #[test]
    fn refuses_what_it_must_naming_why() {
        let v = verifier(vec![secret(1)]);
        let good = sign(&secret(1), "pr-42", NOW + 3600).unwrap();
        let cases = [
            ("", SignedKeyError::Malformed),
            ("pr-42", SignedKeyError::Malformed),
            ("pr-42.1767229200", SignedKeyError::Malformed),
            ("pr-42.+1767229200.AAAA", SignedKeyError::Malformed),
            ("pr-42.-1.AAAA", SignedKeyError::Malformed),
            (
                "pr-42.99999999999999999999999.AAAA",
                SignedKeyError::Malformed,
            ),
            ("pr-42.1767229200.not base64", SignedKeyError::Malformed),
            (
                ".1767229200.AAAA",
                SignedKeyError::InvalidKey(InvalidRoutingKey::Empty),
            ),
            (
                "pr 42.1767229200.AAAA",
                SignedKeyError::InvalidKey(InvalidRoutingKey::BadCharacter),
            ),
            ("pr-42.1767229200.AAAA", SignedKeyError::BadSignature),
        ];
        for (token, want) in cases {
            assert_eq!(v.verify(token, NOW).err(), Some(want), "{token:?}");
        }
        // Another secret, another key, another expiry: the signature fails.
        let other = sign(&secret(2), "pr-42", NOW + 3600).unwrap();
        assert_eq!(
            v.verify(&other, NOW).err(),
            Some(SignedKeyError::BadSignature)
        );
        let (_, sig) = good.rsplit_once('.').unwrap();
        for forged in [
            format!("pr-43.{}.{sig}", NOW + 3600),
            format!("pr-42.{}.{sig}", NOW + 7200),
            format!("pr-42.0{}.{sig}", NOW + 3600),
        ] {
            assert_eq!(
                v.verify(&forged, NOW).err(),
                Some(SignedKeyError::BadSignature),
                "{forged}"
            );
        }
        // Time: expired at its second, and not too far ahead.
        assert_eq!(
            v.verify(&good, NOW + 3600).err(),
            Some(SignedKeyError::Expired)
        );
        let long = sign(&secret(1), "pr-42", NOW + 8 * 86_400).unwrap();
        assert_eq!(
            v.verify(&long, NOW).err(),
            Some(SignedKeyError::TooFarAhead)
        );
    }

    #[test]
    fn an_older_secret_still_verifies_during_rotation() {
        let old = sign(&secret(1), "pr-42", NOW + 60).unwrap();
        let v = verifier(vec![secret(2), secret(1)]);
        assert_eq!(
            v.verify(&old, NOW),
            Ok(Verified {
                key: "pr-42",
                expiry: NOW + 60
            })
        );
        assert_eq!(
            verifier(vec![secret(2)]).verify(&old, NOW).err(),
            Some(SignedKeyError::BadSignature)
        );
    }

    #[test]
    fn secrets_are_checked_and_never_shown() {
        assert_eq!(Secret::new(&[7; 31]), Err(InvalidSecret::TooShort));
        assert_eq!(
            Secret::new(b"  short secret \n"),
            Err(InvalidSecret::TooShort)
        );
        let padded = Secret::new(b" 0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(
            padded,
            Secret::new(b"0123456789abcdef0123456789abcdef").unwrap()
        );
        assert_eq!(format!("{padded:?}"), "Secret(32 bytes)");
    }
}
