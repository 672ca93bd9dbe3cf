//! Where a request carries its routing key, and the order they are read in
//! (INTERFACES section 2): W3C `baggage`, then the legacy Jaeger and
//! OpenTracing headers, then plain headers. The first non-empty value wins;
//! it is validated only afterwards, so a malformed key in `baggage` is an
//! invalid key, not a reason to look at a lower-priority carrier.

use std::borrow::Cow;

use crate::baggage::{self, MemberKey};
use crate::edge::BAGGAGE;
use crate::legacy::{self, LegacyFormat};

/// The carriers to read, from the plugin configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCarriers {
    /// Baggage member keys, in priority order.
    pub baggage_keys: Vec<MemberKey>,
    /// Also read `uberctx-<key>` and `ot-baggage-<key>` for each baggage key.
    pub legacy_headers: bool,
    /// Plain header names (lower case), in priority order.
    pub headers: Vec<String>,
}

impl Default for KeyCarriers {
    fn default() -> Self {
        KeyCarriers {
            baggage_keys: vec![MemberKey::new("sd-routing-key")],
            legacy_headers: true,
            headers: Vec::new(),
        }
    }
}

/// The carrier a routing key was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    Baggage,
    Legacy(LegacyFormat),
    Header,
}

/// A routing key candidate, not yet validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub value: Cow<'a, str>,
    pub carrier: Carrier,
}

impl KeyCarriers {
    /// The first non-empty routing key candidate of a request's headers
    /// (names lower case, as Envoy presents them; values raw bytes).
    pub fn extract<'a, K, V>(&self, headers: &'a [(K, V)]) -> Option<Candidate<'a>>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        self.scan(headers, "").candidate
    }

    /// [`KeyCarriers::extract`], and whether a header named `also` is
    /// present (the route header, for [`crate::decision::inspect`]), in one
    /// pass over the headers: each name is compared once with each carrier's
    /// name (length first), instead of once per carrier and per key. An
    /// empty `also` matches no header.
    ///
    /// Every request pays for this pass, most of them with no key at all:
    /// in Envoy it was a third of a no-key request's own work
    /// (docs/performance.md).
    pub fn scan<'a, K, V>(&self, headers: &'a [(K, V)], also: &str) -> Scan<'a>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let mut baggage = Lines::default();
        let mut also_present = false;
        // The last value of each legacy header (two per baggage key), then
        // of each plain header: the last line wins, as for baggage
        // duplicates. Allocated only if such a header is there.
        let mut last: Vec<Option<&'a [u8]>> = Vec::new();
        let keys = self.baggage_keys.len();
        let slots = 2 * keys + self.headers.len();
        for (name, value) in headers {
            let (name, value) = (name.as_ref(), value.as_ref());
            if same_name(name, BAGGAGE) {
                baggage.push(value);
            }
            if !also.is_empty() && same_name(name, also) {
                also_present = true;
            }
            if self.legacy_headers {
                if let Some((format, suffix)) = legacy::split_item_header(name) {
                    let column = match format {
                        LegacyFormat::Uberctx => 0,
                        LegacyFormat::OtBaggage => 1,
                    };
                    for (index, key) in self.baggage_keys.iter().enumerate() {
                        if same_name(suffix, key) {
                            set_last(&mut last, slots, 2 * index + column, value);
                        }
                    }
                }
            }
            for (index, wanted) in self.headers.iter().enumerate() {
                if same_name(name, wanted) {
                    set_last(&mut last, slots, 2 * keys + index, value);
                }
            }
        }
        let slot = |index: usize| last.get(index).copied().flatten();
        let candidate = self
            .read_baggage(&baggage)
            .or_else(|| self.read_legacy(slot))
            .or_else(|| self.read_plain_headers(|index| slot(2 * keys + index)));
        Scan {
            candidate,
            also_present,
        }
    }

    fn read_baggage<'a>(&self, lines: &Lines<'a>) -> Option<Candidate<'a>> {
        // Most requests carry no baggage at all: skip the parser entirely.
        lines.first?;
        self.baggage_keys.iter().find_map(|key| {
            let value = baggage::find_member(lines.iter(), key)?;
            non_empty(value, Carrier::Baggage)
        })
    }

    fn read_legacy<'a>(&self, slot: impl Fn(usize) -> Option<&'a [u8]>) -> Option<Candidate<'a>> {
        if !self.legacy_headers {
            return None;
        }
        let formats = [LegacyFormat::Uberctx, LegacyFormat::OtBaggage];
        (0..self.baggage_keys.len()).find_map(|index| {
            formats.into_iter().zip(0..).find_map(|(format, column)| {
                let value = slot(2 * index + column)?;
                non_empty(format.decode(value), Carrier::Legacy(format))
            })
        })
    }

    fn read_plain_headers<'a>(
        &self,
        slot: impl Fn(usize) -> Option<&'a [u8]>,
    ) -> Option<Candidate<'a>> {
        (0..self.headers.len()).find_map(|index| {
            let value = String::from_utf8_lossy(baggage::trim_ows(slot(index)?));
            non_empty(value, Carrier::Header)
        })
    }
}

/// What [`KeyCarriers::scan`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan<'a> {
    /// The routing key candidate, as [`KeyCarriers::extract`] gives it.
    pub candidate: Option<Candidate<'a>>,
    /// Whether a header named `also` is present.
    pub also_present: bool,
}

/// The `baggage` lines of a request, in order; one line (the usual case)
/// needs no allocation.
#[derive(Debug, Default)]
struct Lines<'a> {
    first: Option<&'a [u8]>,
    more: Vec<&'a [u8]>,
}

impl<'a> Lines<'a> {
    fn push(&mut self, line: &'a [u8]) {
        if self.first.is_none() {
            self.first = Some(line);
        } else {
            self.more.push(line);
        }
    }

    fn iter(&self) -> impl Iterator<Item = &'a [u8]> + Clone + '_ {
        self.first.into_iter().chain(self.more.iter().copied())
    }
}

/// Header names compared as HTTP does (ASCII case ignored), the length
/// first: most names differ in length from the one looked for.
#[inline(always)]
fn same_name(name: &[u8], wanted: &str) -> bool {
    name.len() == wanted.len() && name.eq_ignore_ascii_case(wanted.as_bytes())
}

fn set_last<'a>(last: &mut Vec<Option<&'a [u8]>>, slots: usize, index: usize, value: &'a [u8]) {
    if last.is_empty() {
        last.resize(slots, None);
    }
    if let Some(slot) = last.get_mut(index) {
        *slot = Some(value);
    }
}

fn non_empty(value: Cow<'_, str>, carrier: Carrier) -> Option<Candidate<'_>> {
    (!value.is_empty()).then_some(Candidate { value, carrier })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn extract(carriers: &KeyCarriers, headers: &[(&str, &str)]) -> Option<(String, Carrier)> {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        carriers
            .extract(&headers)
            .map(|c| (c.value.into_owned(), c.carrier))
    }

    #[test]
    fn baggage_first_then_legacy_then_plain_headers() {
        let carriers = KeyCarriers {
            headers: vec!["x-routing-key".into()],
            ..KeyCarriers::default()
        };
        let all = [
            ("x-routing-key", "plain"),
            ("ot-baggage-sd-routing-key", "ot"),
            ("uberctx-sd-routing-key", "uber"),
            ("baggage", "a=1,sd-routing-key=bag"),
        ];
        assert_eq!(
            extract(&carriers, &all),
            Some(("bag".into(), Carrier::Baggage))
        );
        assert_eq!(
            extract(&carriers, &all[..3]),
            Some(("uber".into(), Carrier::Legacy(LegacyFormat::Uberctx)))
        );
        assert_eq!(
            extract(&carriers, &all[..2]),
            Some(("ot".into(), Carrier::Legacy(LegacyFormat::OtBaggage)))
        );
        assert_eq!(
            extract(&carriers, &all[..1]),
            Some(("plain".into(), Carrier::Header))
        );
        assert_eq!(extract(&carriers, &[("host", "x")]), None);
    }

    #[test]
    fn empty_values_fall_through_to_the_next_carrier() {
        let carriers = KeyCarriers::default();
        let headers = [
            ("baggage", "sd-routing-key="),
            ("uberctx-sd-routing-key", ""),
            ("ot-baggage-sd-routing-key", "pr-1"),
        ];
        assert_eq!(
            extract(&carriers, &headers),
            Some(("pr-1".into(), Carrier::Legacy(LegacyFormat::OtBaggage)))
        );
    }

    #[test]
    fn an_invalid_baggage_value_still_wins() {
        let carriers = KeyCarriers::default();
        let headers = [
            ("baggage", "sd-routing-key=a%2Fb"),
            ("uberctx-sd-routing-key", "pr-1"),
        ];
        assert_eq!(
            extract(&carriers, &headers),
            Some(("a/b".into(), Carrier::Baggage))
        );
    }

    #[test]
    fn the_last_legacy_header_wins_as_in_baggage() {
        let carriers = KeyCarriers::default();
        let headers = [
            ("uberctx-sd-routing-key", "first"),
            ("uberctx-sd-routing-key", "last"),
        ];
        assert_eq!(extract(&carriers, &headers).unwrap().0, "last");
        let emptied = [
            ("uberctx-sd-routing-key", "x"),
            ("uberctx-sd-routing-key", ""),
        ];
        assert_eq!(extract(&carriers, &emptied), None);
    }

    #[test]
    fn legacy_can_be_turned_off() {
        let carriers = KeyCarriers {
            legacy_headers: false,
            ..KeyCarriers::default()
        };
        assert_eq!(extract(&carriers, &[("uberctx-sd-routing-key", "x")]), None);
    }

    #[test]
    fn baggage_keys_are_tried_in_order() {
        let carriers = KeyCarriers {
            baggage_keys: vec!["first".into(), "second".into()],
            ..KeyCarriers::default()
        };
        let headers = [("baggage", "second=2,first=1")];
        assert_eq!(extract(&carriers, &headers).unwrap().0, "1");
        let headers = [("baggage", "second=2")];
        assert_eq!(extract(&carriers, &headers).unwrap().0, "2");
    }

    /// The carriers read one at a time, as before the one-pass scan: each
    /// carrier's headers found by its own pass (the last line of a legacy
    /// or plain header wins). The oracle of `one_pass_equals_a_pass_per_carrier`.
    fn extract_per_carrier<'a>(
        carriers: &KeyCarriers,
        headers: &'a [(&str, &[u8])],
    ) -> Option<Candidate<'a>> {
        let lines = headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("baggage"))
            .map(|(_, value)| *value);
        let from_baggage = || {
            lines.clone().next()?;
            carriers.baggage_keys.iter().find_map(|key| {
                non_empty(baggage::find_value(lines.clone(), key)?, Carrier::Baggage)
            })
        };
        let from_legacy = || {
            if !carriers.legacy_headers {
                return None;
            }
            carriers.baggage_keys.iter().find_map(|key| {
                [LegacyFormat::Uberctx, LegacyFormat::OtBaggage]
                    .into_iter()
                    .find_map(|format| {
                        let (_, value) = headers
                            .iter()
                            .rfind(|(name, _)| legacy::is_item_header(name, format, key))?;
                        non_empty(format.decode(value), Carrier::Legacy(format))
                    })
            })
        };
        let from_plain = || {
            carriers.headers.iter().find_map(|wanted| {
                let (_, value) = headers
                    .iter()
                    .rfind(|(name, _)| name.eq_ignore_ascii_case(wanted))?;
                let value = String::from_utf8_lossy(baggage::trim_ows(value));
                non_empty(value, Carrier::Header)
            })
        };
        from_baggage().or_else(from_legacy).or_else(from_plain)
    }

    #[test]
    fn one_pass_equals_a_pass_per_carrier() {
        let pool: [(&str, &[u8]); 14] = [
            ("baggage", b"a=1,sd-routing-key=bag"),
            ("BAGGAGE", b"sd-routing-key=two;p=1"),
            ("baggage", b"second=2,first=1"),
            ("baggage", b"sd-routing-key="),
            ("uberctx-sd-routing-key", b"uber%2D1"),
            ("UBERCTX-SD-ROUTING-KEY", b""),
            ("ot-baggage-sd-routing-key", b"ot"),
            ("ot-baggage-first", b"ot-first"),
            ("uberctx-", b"no-key"),
            ("x-routing-key", b" plain "),
            ("X-Routing-Key", b"\xff"),
            ("x-sandbox-route", b"pr-1"),
            (":method", b"GET"),
            ("host", b"x"),
        ];
        let configs = [
            KeyCarriers::default(),
            KeyCarriers {
                baggage_keys: vec!["first".into(), "second".into(), "sd-routing-key".into()],
                headers: vec!["x-routing-key".into(), "x-sandbox-route".into()],
                ..KeyCarriers::default()
            },
            KeyCarriers {
                legacy_headers: false,
                headers: vec!["x-routing-key".into()],
                ..KeyCarriers::default()
            },
        ];
        // Every list of up to three headers from the pool, in every order.
        let mut lists: Vec<Vec<(&str, &[u8])>> = vec![Vec::new()];
        for _ in 0..3 {
            let longer: Vec<_> = lists
                .iter()
                .filter(|list| list.len() == lists.last().map_or(0, Vec::len))
                .flat_map(|list| {
                    pool.iter().map(move |header| {
                        let mut list = list.clone();
                        list.push(*header);
                        list
                    })
                })
                .collect();
            lists.extend(longer);
        }
        assert_eq!(lists.len(), 1 + 14 + 14 * 14 + 14 * 14 * 14);
        for carriers in &configs {
            for headers in &lists {
                let expected = extract_per_carrier(carriers, headers);
                let scan = carriers.scan(headers, "x-sandbox-route");
                assert_eq!(scan.candidate, expected, "{carriers:?} {headers:?}");
                let route_header = headers
                    .iter()
                    .any(|(name, _)| name.eq_ignore_ascii_case("x-sandbox-route"));
                assert_eq!(scan.also_present, route_header, "{headers:?}");
                assert_eq!(carriers.extract(headers), expected);
            }
        }
    }

    #[test]
    fn several_baggage_lines_are_one_list() {
        let carriers = KeyCarriers::default();
        let headers = [
            ("baggage", "a=1"),
            ("x", "y"),
            ("baggage", "sd-routing-key=k2"),
        ];
        assert_eq!(extract(&carriers, &headers).unwrap().0, "k2");
    }
}
