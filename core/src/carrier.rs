//! Where a request carries its routing key, and the order they are read in
//! (INTERFACES section 2): W3C `baggage`, then the legacy Jaeger and
//! OpenTracing headers, then plain headers. The first non-empty value wins;
//! it is validated only afterwards, so a malformed key in `baggage` is an
//! invalid key, not a reason to look at a lower-priority carrier.

use std::borrow::Cow;

use crate::baggage;
use crate::legacy::{self, LegacyFormat};

/// The carriers to read, from the plugin configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCarriers {
    /// Baggage member keys, in priority order.
    pub baggage_keys: Vec<String>,
    /// Also read `uberctx-<key>` and `ot-baggage-<key>` for each baggage key.
    pub legacy_headers: bool,
    /// Plain header names (lower case), in priority order.
    pub headers: Vec<String>,
}

impl Default for KeyCarriers {
    fn default() -> Self {
        KeyCarriers {
            baggage_keys: vec!["sd-routing-key".to_owned()],
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
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        self.read_baggage(headers)
            .or_else(|| self.read_legacy(headers))
            .or_else(|| self.read_plain_headers(headers))
    }

    fn read_baggage<'a, K, V>(&self, headers: &'a [(K, V)]) -> Option<Candidate<'a>>
    where
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        let lines = headers
            .iter()
            .filter(|(name, _)| name.as_ref().eq_ignore_ascii_case("baggage"))
            .map(|(_, value)| value.as_ref());
        // Most requests carry no baggage at all: skip the parser entirely.
        lines.clone().next()?;
        self.baggage_keys.iter().find_map(|key| {
            let value = baggage::find_value(lines.clone(), key)?;
            non_empty(value, Carrier::Baggage)
        })
    }

    fn read_legacy<'a, K, V>(&self, headers: &'a [(K, V)]) -> Option<Candidate<'a>>
    where
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        if !self.legacy_headers {
            return None;
        }
        let formats = [LegacyFormat::Uberctx, LegacyFormat::OtBaggage];
        self.baggage_keys.iter().find_map(|key| {
            formats.into_iter().find_map(|format| {
                // The last occurrence wins, as for baggage duplicates.
                let (_, value) = headers
                    .iter()
                    .rfind(|(name, _)| legacy::is_item_header(name.as_ref(), format, key))?;
                non_empty(format.decode(value.as_ref()), Carrier::Legacy(format))
            })
        })
    }

    fn read_plain_headers<'a, K, V>(&self, headers: &'a [(K, V)]) -> Option<Candidate<'a>>
    where
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        self.headers.iter().find_map(|wanted| {
            let (_, value) = headers
                .iter()
                .rfind(|(name, _)| name.as_ref().eq_ignore_ascii_case(wanted))?;
            let value = String::from_utf8_lossy(baggage::trim_ows(value.as_ref()));
            non_empty(value, Carrier::Header)
        })
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
