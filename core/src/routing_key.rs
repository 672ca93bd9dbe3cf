//! The routing key: what a request carries to say which sandbox it belongs to.
//!
//! A key reaches a header, a URL query and log lines, so it is validated
//! before it is used anywhere: 1 to 128 bytes of `[A-Za-z0-9._~-]`
//! (RFC 3986 unreserved characters: safe in all three without escaping).

use std::fmt;

pub const MAX_LEN: usize = 128;

/// A validated routing key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoutingKey(String);

/// Why a candidate routing key was refused. Carries no copy of the input:
/// an invalid key must not reach a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRoutingKey {
    #[error("routing key is empty")]
    Empty,
    #[error("routing key is longer than {MAX_LEN} bytes")]
    TooLong,
    #[error("routing key has a character outside [A-Za-z0-9._~-]")]
    BadCharacter,
}

impl RoutingKey {
    pub fn parse(candidate: &str) -> Result<Self, InvalidRoutingKey> {
        validate(candidate)?;
        Ok(RoutingKey(candidate.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a candidate without allocating (the per-request path).
pub fn validate(candidate: &str) -> Result<&str, InvalidRoutingKey> {
    if candidate.is_empty() {
        return Err(InvalidRoutingKey::Empty);
    }
    if candidate.len() > MAX_LEN {
        return Err(InvalidRoutingKey::TooLong);
    }
    if !candidate.bytes().all(is_key_byte) {
        return Err(InvalidRoutingKey::BadCharacter);
    }
    Ok(candidate)
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-')
}

impl fmt::Display for RoutingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for RoutingKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn accepts_the_unreserved_alphabet() {
        for key in ["pr-42", "a", "A.b_c~d-9", &"k".repeat(MAX_LEN)] {
            assert_eq!(RoutingKey::parse(key).unwrap().as_str(), key);
        }
    }

    #[test]
    fn refuses_empty_long_and_foreign_characters() {
        assert_eq!(RoutingKey::parse(""), Err(InvalidRoutingKey::Empty));
        let long = "k".repeat(MAX_LEN + 1);
        assert_eq!(RoutingKey::parse(&long), Err(InvalidRoutingKey::TooLong));
        for key in [
            "a b", "a/b", "a%20", "é", "a\nb", "a,b", "a;b", "a=b", "a:b",
        ] {
            assert_eq!(
                RoutingKey::parse(key),
                Err(InvalidRoutingKey::BadCharacter),
                "{key:?}"
            );
        }
    }
}
