//! Fuzz what a gateway reads of a signed routing key from outside the mesh:
//! the request's `:path` (query parameter) and `cookie` lines.
//!
//! The input is split on `\n`: the first line is `:path`, the others are
//! `cookie` lines. Invariants:
//! - neither verification nor admission panics;
//! - a key that was let in is a valid routing key, and only then does
//!   `baggage` change;
//! - once admitted (stripping on), neither the parameter nor the cookie is
//!   left in what is forwarded;
//! - signing the input's path as a key and verifying it round-trips, and
//!   changing any byte of the signature breaks it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandbox_router_core::config::SignedKeysConfig;
use sandbox_router_core::routing_key;
use sandbox_router_core::signed_admission;
use sandbox_router_core::signed_carrier;
use sandbox_router_core::signed_key::{self, Secret, Verifier};

const NAME: &str = "sd-routing-key";
const NOW: u64 = 1_767_225_600;

fuzz_target!(|data: &[u8]| {
    let Ok(secret) = Secret::new(b"fuzz-secret-0123456789abcdef0123") else {
        return;
    };
    let verifier = Verifier {
        secrets: vec![secret.clone()],
        max_ttl_seconds: 86_400,
    };
    let Ok(config) = serde_json::from_str::<SignedKeysConfig>(
        r#"{"secretEnv": "S", "queryParameter": "sd-routing-key", "cookie": "sd-routing-key", "setCookie": true}"#,
    ) else {
        return;
    };
    let mut lines = data.split(|&b| b == b'\n');
    let path = lines.next().unwrap_or_default();
    let mut headers: Vec<(String, Vec<u8>)> = vec![(":path".to_owned(), path.to_vec())];
    headers.extend(lines.map(|line| ("cookie".to_owned(), line.to_vec())));

    let admission = signed_admission::admit(&config, &verifier, NAME, &headers, NOW);
    match &admission.verdict {
        Some((_, Ok(key))) => {
            assert!(routing_key::validate(key).is_ok(), "let in an invalid key");
            assert!(admission.baggage.is_some());
        }
        _ => assert!(admission.baggage.is_none(), "baggage changed without a key"),
    }
    if admission.verdict.is_some() {
        let mut forwarded = headers.clone();
        admission.apply_to(&mut forwarded);
        for (name, value) in &forwarded {
            if name == ":path" {
                if let Ok(path) = std::str::from_utf8(value) {
                    assert_eq!(signed_carrier::query_value(path, NAME), None, "{path}");
                }
            } else if name == "cookie" {
                assert_eq!(
                    signed_carrier::cookie_value([value.as_slice()], NAME),
                    None,
                    "cookie left in {:?}",
                    String::from_utf8_lossy(value)
                );
            }
        }
    }

    // Round trip: the path as a key, when it is one.
    if let Ok(key) = std::str::from_utf8(path) {
        if let Ok(token) = signed_key::sign(&secret, key, NOW + 60) {
            let verified = verifier.verify(&token, NOW);
            assert_eq!(verified.map(|v| v.key), Ok(key));
            // The signature's first character: every bit of it counts.
            let mut broken = token.clone().into_bytes();
            let first = token.rfind('.').map_or(0, |dot| dot + 1);
            if let Some(byte) = broken.get_mut(first) {
                *byte = if *byte == b'A' { b'B' } else { b'A' };
            }
            let broken = String::from_utf8(broken).unwrap_or_default();
            assert!(verifier.verify(&broken, NOW).is_err(), "{broken}");
        }
    }
});
