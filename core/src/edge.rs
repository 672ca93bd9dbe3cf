//! The mesh's edge (an ingress gateway): routing keys sent from outside the
//! mesh are not trusted. With `edge.stripIncomingKeys`, every carrier the
//! configuration reads the key from (INTERFACES section 2) is taken out of
//! the request before the key is read, so the request goes to baseline and
//! no hop behind the gateway sees the key either:
//!
//! - the configured members of every `baggage` line (the other members, their
//!   properties and their order are kept byte for byte; a line left with no
//!   member is dropped);
//! - `uberctx-<key>` and `ot-baggage-<key>` for the configured keys, when
//!   `legacyHeaders` is on;
//! - the plain `routingKey.headers`.
//!
//! Removal is wider than reading, on purpose: a member is removed whatever it
//! holds (an empty, invalid or malformed value too) and its key is compared
//! ignoring ASCII case, so no spelling that an application or another router
//! might take for the key gets through. The size and member limits of
//! [`crate::baggage`] do not apply either: the hops behind the gateway may
//! read more than this filter does. The work is one pass over the header
//! bytes, which Envoy already bounds.

use crate::baggage::trim_ows;
use crate::carrier::KeyCarriers;
use crate::legacy::{self, LegacyFormat};

/// The header the W3C carrier travels in.
pub const BAGGAGE: &str = "baggage";

/// What one `baggage` line becomes once the routing-key members are out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineStrip {
    /// No routing-key member: the line stays as it is.
    Unchanged,
    /// The line without them (never empty).
    Rewritten(Vec<u8>),
    /// Nothing but routing-key members (and empty elements): drop the line.
    Dropped,
}

/// Removes the members whose key is one of `keys` (ASCII case ignored) from
/// one `baggage` line. The other list elements are kept verbatim, in order,
/// joined by `,`; empty elements of a rewritten line are dropped, and so is
/// the optional whitespace at its two ends.
pub fn strip_baggage_line<S: AsRef<str>>(line: &[u8], keys: &[S]) -> LineStrip {
    let is_routing_key = |element: &[u8]| {
        let key = element_key(element);
        keys.iter()
            .any(|wanted| key.eq_ignore_ascii_case(wanted.as_ref().as_bytes()))
    };
    let elements = line.split(|&b| b == b',');
    if !elements.clone().any(is_routing_key) {
        return LineStrip::Unchanged;
    }
    let mut kept: Vec<u8> = Vec::with_capacity(line.len());
    for element in elements.filter(|e| !is_routing_key(e) && !trim_ows(e).is_empty()) {
        if !kept.is_empty() {
            kept.push(b',');
        }
        kept.extend_from_slice(element);
    }
    let kept = trim_ows(&kept);
    if kept.is_empty() {
        LineStrip::Dropped
    } else {
        LineStrip::Rewritten(kept.to_vec())
    }
}

/// The key of a list element, leniently: the text before its first `=` or
/// `;`, whitespace trimmed, valid token or not.
fn element_key(element: &[u8]) -> &[u8] {
    let end = element
        .iter()
        .position(|&b| b == b'=' || b == b';')
        .unwrap_or(element.len());
    trim_ows(element.get(..end).unwrap_or_default())
}

/// The changes that take every routing-key carrier out of a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyStrip {
    /// `Some(lines)` when a `baggage` line lost a member: every `baggage`
    /// line of the request is to be replaced by `lines`, in this order (none
    /// left: no `baggage` header at all).
    pub baggage: Option<Vec<Vec<u8>>>,
    /// Headers to remove, every line of each (names lower case, each once):
    /// the legacy and plain carriers the request has. Applied after
    /// `baggage`, so a plain carrier named `baggage` removes all of it.
    pub remove: Vec<String>,
}

impl KeyStrip {
    /// The request carried no routing-key carrier: nothing to change.
    pub fn is_empty(&self) -> bool {
        self.baggage.is_none() && self.remove.is_empty()
    }

    /// Makes the same changes to a copy of the request's headers, as the
    /// host makes them: `baggage` lines replaced (moved to the end), then
    /// the removals.
    pub fn apply_to(&self, headers: &mut Vec<(String, Vec<u8>)>) {
        if let Some(lines) = &self.baggage {
            headers.retain(|(name, _)| !name.eq_ignore_ascii_case(BAGGAGE));
            headers.extend(lines.iter().map(|line| (BAGGAGE.to_owned(), line.clone())));
        }
        headers.retain(|(name, _)| !self.remove.iter().any(|r| name.eq_ignore_ascii_case(r)));
    }
}

/// What must change in `headers` (names in any case, values raw bytes) so
/// that no carrier of `carriers` holds a routing key any more.
pub fn strip_incoming_keys<K, V>(carriers: &KeyCarriers, headers: &[(K, V)]) -> KeyStrip
where
    K: AsRef<str>,
    V: AsRef<[u8]>,
{
    let baggage_lines = headers
        .iter()
        .filter(|(name, _)| name.as_ref().eq_ignore_ascii_case(BAGGAGE))
        .map(|(_, value)| value.as_ref());
    let mut changed = false;
    let mut lines = Vec::new();
    for line in baggage_lines {
        match strip_baggage_line(line, &carriers.baggage_keys) {
            LineStrip::Unchanged => lines.push(line.to_vec()),
            LineStrip::Rewritten(rewritten) => {
                changed = true;
                lines.push(rewritten);
            }
            LineStrip::Dropped => changed = true,
        }
    }
    let is_carrier = |name: &str| {
        let legacy = carriers.legacy_headers
            && carriers.baggage_keys.iter().any(|key| {
                [LegacyFormat::Uberctx, LegacyFormat::OtBaggage]
                    .into_iter()
                    .any(|format| legacy::is_item_header(name, format, key))
            });
        legacy
            || carriers
                .headers
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h))
    };
    let mut remove: Vec<String> = Vec::new();
    for (name, _) in headers {
        let name = name.as_ref().to_ascii_lowercase();
        if is_carrier(&name) && !remove.contains(&name) {
            remove.push(name);
        }
    }
    KeyStrip {
        baggage: changed.then_some(lines),
        remove,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baggage;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const KEY: &[&str] = &["sd-routing-key"];

    fn line(text: &str) -> LineStrip {
        strip_baggage_line(text.as_bytes(), KEY)
    }

    fn rewritten(text: &str) -> LineStrip {
        LineStrip::Rewritten(text.as_bytes().to_vec())
    }

    fn owned(headers: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    /// The headers after stripping, and whether anything changed.
    fn stripped(carriers: &KeyCarriers, headers: &[(&str, &str)]) -> (Vec<(String, String)>, bool) {
        let mut headers = owned(headers);
        let strip = strip_incoming_keys(carriers, &headers);
        strip.apply_to(&mut headers);
        let shown = headers
            .into_iter()
            .map(|(n, v)| (n, String::from_utf8(v).unwrap()))
            .collect();
        (shown, !strip.is_empty())
    }

    fn pairs(headers: &[(&str, &str)]) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn one_member_among_several_is_removed_the_others_kept_in_order() {
        assert_eq!(line("other=1,sd-routing-key=pr-42"), rewritten("other=1"));
        assert_eq!(line("sd-routing-key=pr-42,other=1"), rewritten("other=1"));
        assert_eq!(
            line("a=1,sd-routing-key=pr-42,b=2,c=3"),
            rewritten("a=1,b=2,c=3")
        );
    }

    #[test]
    fn other_members_keep_their_properties_and_spelling() {
        assert_eq!(
            line("a=1;p=2;flag, sd-routing-key=pr-42;ttl=10 , b=%20x;q"),
            rewritten("a=1;p=2;flag, b=%20x;q")
        );
        // Members that only look like the key stay.
        assert_eq!(
            line("sd-routing-keys=pr-42,x-sd-routing-key=1,v=sd-routing-key"),
            LineStrip::Unchanged
        );
        assert_eq!(line("a=1;sd-routing-key=pr-42"), LineStrip::Unchanged);
    }

    #[test]
    fn case_and_whitespace_do_not_hide_the_key() {
        for text in [
            "sd-routing-key=pr-42",
            "SD-Routing-Key=pr-42",
            " \tsd-routing-key = pr-42 ;ttl=1",
            "sd-routing-key\t=pr-42",
            "sd-routing-key=",
            "sd-routing-key",
            "sd-routing-key;p",
            "sd-routing-key=not a valid value",
        ] {
            assert_eq!(line(text), LineStrip::Dropped, "{text:?}");
            assert_eq!(
                line(&format!("a=1,{text}")),
                rewritten("a=1"),
                "a=1,{text:?}"
            );
        }
    }

    #[test]
    fn a_line_of_only_the_key_is_dropped() {
        assert_eq!(line("sd-routing-key=pr-42"), LineStrip::Dropped);
        assert_eq!(
            line(" sd-routing-key=a , ,sd-routing-key=b,"),
            LineStrip::Dropped
        );
        // Empty elements of a rewritten line go too; an untouched line keeps them.
        assert_eq!(line("a=1,,sd-routing-key=x, "), rewritten("a=1"));
        assert_eq!(line("a=1,, b=2"), LineStrip::Unchanged);
        assert_eq!(line(""), LineStrip::Unchanged);
    }

    #[test]
    fn every_configured_baggage_key_is_removed() {
        let keys = ["first", "second"];
        assert_eq!(
            strip_baggage_line(b"first=1,x=0,second=2", &keys),
            LineStrip::Rewritten(b"x=0".to_vec())
        );
    }

    #[test]
    fn every_baggage_line_is_stripped_and_untouched_lines_kept() {
        let carriers = KeyCarriers::default();
        let (headers, changed) = stripped(
            &carriers,
            &[
                ("baggage", "a=1"),
                (":authority", "catalog"),
                ("baggage", "sd-routing-key=pr-1"),
                ("baggage", "b=2, sd-routing-key=pr-2"),
            ],
        );
        assert!(changed);
        assert_eq!(
            headers,
            pairs(&[
                (":authority", "catalog"),
                ("baggage", "a=1"),
                ("baggage", "b=2")
            ])
        );
    }

    #[test]
    fn legacy_headers_are_removed_in_any_case() {
        let carriers = KeyCarriers::default();
        let (headers, changed) = stripped(
            &carriers,
            &[
                ("uberctx-sd-routing-key", "pr-42"),
                ("Ot-Baggage-SD-Routing-Key", "pr-42"),
                ("uberctx-sd-routing-key", "again"),
                ("uberctx-other", "kept"),
                ("ot-baggage-other", "kept"),
            ],
        );
        assert!(changed);
        assert_eq!(
            headers,
            pairs(&[("uberctx-other", "kept"), ("ot-baggage-other", "kept")])
        );
        let strip = strip_incoming_keys(
            &carriers,
            &owned(&[
                ("uberctx-sd-routing-key", "a"),
                ("UBERCTX-SD-ROUTING-KEY", "b"),
            ]),
        );
        assert_eq!(strip.remove, ["uberctx-sd-routing-key"]);
        assert_eq!(strip.baggage, None);
    }

    #[test]
    fn legacy_headers_stay_when_they_are_not_carriers() {
        let carriers = KeyCarriers {
            legacy_headers: false,
            ..KeyCarriers::default()
        };
        let headers = [("uberctx-sd-routing-key", "pr-42")];
        assert_eq!(stripped(&carriers, &headers), (pairs(&headers), false));
    }

    #[test]
    fn plain_headers_are_removed() {
        let carriers = KeyCarriers {
            headers: vec!["x-routing-key".into()],
            ..KeyCarriers::default()
        };
        let (headers, changed) = stripped(
            &carriers,
            &[
                ("X-Routing-Key", "pr-42"),
                ("x-routing-key", "pr-43"),
                ("x-routing-keys", "kept"),
            ],
        );
        assert!(changed);
        assert_eq!(headers, pairs(&[("x-routing-keys", "kept")]));
    }

    #[test]
    fn a_request_without_carriers_is_left_alone() {
        let carriers = KeyCarriers {
            headers: vec!["x-routing-key".into()],
            ..KeyCarriers::default()
        };
        let headers = [
            (":authority", "catalog"),
            ("baggage", "userId=alice,sd-routing-keys=pr-42"),
            ("uberctx-user", "alice"),
            ("traceparent", "00-1-2-01"),
        ];
        let strip = strip_incoming_keys(&carriers, &owned(&headers));
        assert!(strip.is_empty(), "{strip:?}");
        assert_eq!(stripped(&carriers, &headers), (pairs(&headers), false));
    }

    #[test]
    fn after_stripping_no_carrier_yields_a_key() {
        let carriers = KeyCarriers {
            headers: vec!["x-routing-key".into()],
            ..KeyCarriers::default()
        };
        let mut headers = owned(&[
            ("baggage", "a=1,sd-routing-key=pr-42;p"),
            ("baggage", "sd-routing-key=pr-43"),
            ("uberctx-sd-routing-key", "pr-44"),
            ("ot-baggage-sd-routing-key", "pr-45"),
            ("x-routing-key", "pr-46"),
        ]);
        assert!(carriers.extract(&headers).is_some());
        strip_incoming_keys(&carriers, &headers).apply_to(&mut headers);
        assert_eq!(carriers.extract(&headers), None);
        let lines = headers.iter().map(|(_, v)| v.as_slice());
        assert_eq!(baggage::find_value(lines, "a").as_deref(), Some("1"));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_never_leave_the_key() {
        // A small deterministic sweep over awkward bytes (the fuzz target
        // `baggage` checks the same property on arbitrary input).
        let alphabet: &[u8] = b"sd-routing-key=,; \t%\xff\x00a";
        let mut state = 0x2545_f491_u32;
        for _ in 0..2000 {
            let len = (state % 40) as usize;
            let text: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    alphabet[(state as usize) % alphabet.len()]
                })
                .collect();
            let after = match strip_baggage_line(&text, KEY) {
                LineStrip::Unchanged => text.clone(),
                LineStrip::Rewritten(line) => {
                    assert!(!line.is_empty());
                    line
                }
                LineStrip::Dropped => Vec::new(),
            };
            assert_eq!(
                baggage::find_value([after.as_slice()], "sd-routing-key"),
                None,
                "{:?} -> {:?}",
                String::from_utf8_lossy(&text),
                String::from_utf8_lossy(&after)
            );
            assert_eq!(strip_baggage_line(&after, KEY), LineStrip::Unchanged);
        }
    }
}
