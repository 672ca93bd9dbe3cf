//! Fuzz the W3C baggage parser.
//!
//! The input is split on `\n` into `baggage` header lines (one input can carry
//! several headers, combined as one list as RFC 9110 says). Invariants:
//! - neither the full parser nor the routing fast path panics;
//! - the fast path (`find_value`) agrees with the full parser's value for the
//!   routing key, and so does `find_member`, which skips lines without the
//!   key's bytes (also checked with the one-letter key `k`, which random
//!   input holds far more often than the routing key);
//! - the parser keeps at most `MAX_MEMBERS` members;
//! - lines over `MAX_TOTAL_BYTES` in total (one `,` counted between lines)
//!   yield nothing at all.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandbox_router_core::baggage::{self, Baggage, MemberKey};

const KEY: &str = "sd-routing-key";
const SHORT_KEY: &str = "k";

fuzz_target!(|data: &[u8]| {
    let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();

    let parsed = Baggage::parse(lines.iter().copied());
    let found = baggage::find_value(lines.iter().copied(), KEY);

    assert_eq!(
        found.as_deref(),
        parsed.get(KEY).map(|member| member.value.as_str()),
        "find_value disagrees with Baggage::parse(..).get({KEY:?})"
    );
    for key in [KEY, SHORT_KEY] {
        let member = MemberKey::new(key);
        assert_eq!(
            baggage::find_member(lines.iter().copied(), &member).as_deref(),
            parsed.get(key).map(|member| member.value.as_str()),
            "find_member disagrees with Baggage::parse(..).get({key:?})"
        );
    }
    assert!(
        parsed.len() <= baggage::MAX_MEMBERS,
        "{} members kept, limit is {}",
        parsed.len(),
        baggage::MAX_MEMBERS
    );

    let combined: usize = lines.iter().map(|line| line.len()).sum::<usize>() + lines.len() - 1;
    if combined > baggage::MAX_TOTAL_BYTES {
        assert!(
            parsed.is_empty() && found.is_none(),
            "{combined} bytes of baggage (limit {}) were not ignored",
            baggage::MAX_TOTAL_BYTES
        );
    }
});
