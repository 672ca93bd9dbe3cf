//! Legacy baggage carriers, one header per item:
//! - Jaeger: `uberctx-<key>: <value>`, value URL-query-encoded
//!   (`%XX` and `+` for space); a value that does not decode is used raw,
//!   as jaeger-client-go does;
//! - OpenTracing: `ot-baggage-<key>: <value>`, value raw.
//!
//! Header names are matched case-insensitively and the item key is the
//! lower-cased suffix. Policy points are in `docs/baggage.md`.

use std::borrow::Cow;

pub const UBERCTX_PREFIX: &str = "uberctx-";
pub const OT_BAGGAGE_PREFIX: &str = "ot-baggage-";

/// Which legacy header family an item came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyFormat {
    Uberctx,
    OtBaggage,
}

impl LegacyFormat {
    pub fn prefix(self) -> &'static str {
        match self {
            LegacyFormat::Uberctx => UBERCTX_PREFIX,
            LegacyFormat::OtBaggage => OT_BAGGAGE_PREFIX,
        }
    }

    /// The item's value as this format encodes it.
    pub fn decode(self, raw: &[u8]) -> Cow<'_, str> {
        match self {
            LegacyFormat::Uberctx => query_unescape(raw)
                .map(|bytes| Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()))
                .unwrap_or_else(|| String::from_utf8_lossy(raw)),
            LegacyFormat::OtBaggage => String::from_utf8_lossy(raw),
        }
    }
}

/// The item key of a legacy header name (`uberctx-Foo` → `foo`), if it is one.
pub fn item_key(header_name: &str) -> Option<(LegacyFormat, String)> {
    [LegacyFormat::Uberctx, LegacyFormat::OtBaggage]
        .into_iter()
        .find_map(|format| {
            let suffix = strip_prefix_ignore_case(header_name, format.prefix())?;
            (!suffix.is_empty()).then(|| (format, suffix.to_ascii_lowercase()))
        })
}

/// Whether `header_name` is `<prefix><key>`, ignoring ASCII case.
pub fn is_item_header(header_name: &str, format: LegacyFormat, key: &str) -> bool {
    strip_prefix_ignore_case(header_name, format.prefix())
        .is_some_and(|suffix| suffix.eq_ignore_ascii_case(key))
}

/// The format and the (possibly empty) suffix of a legacy header name,
/// ignoring ASCII case, without allocating: `is_item_header(name, f, key)`
/// is `split_item_header(name) == Some((f, s))` with `s` equal to `key`
/// ignoring case. The two prefixes differ in their first byte, so at most
/// one matches.
pub fn split_item_header(header_name: &[u8]) -> Option<(LegacyFormat, &[u8])> {
    let format = match header_name.first()? {
        b'u' | b'U' => LegacyFormat::Uberctx,
        b'o' | b'O' => LegacyFormat::OtBaggage,
        _ => return None,
    };
    Some((
        format,
        strip_bytes_prefix_ignore_case(header_name, format.prefix())?,
    ))
}

/// All legacy items of a request, in header order (a later header with the
/// same key replaces an earlier one).
pub fn items<K, V>(headers: &[(K, V)]) -> Vec<(String, String)>
where
    K: AsRef<str>,
    V: AsRef<[u8]>,
{
    let mut items: Vec<(String, String)> = Vec::new();
    for (name, value) in headers {
        let Some((format, key)) = item_key(name.as_ref()) else {
            continue;
        };
        let value = format.decode(value.as_ref()).into_owned();
        match items.iter_mut().find(|(k, _)| *k == key) {
            Some(existing) => existing.1 = value,
            None => items.push((key, value)),
        }
    }
    items
}

fn strip_prefix_ignore_case<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    // An ASCII prefix matched: its end is a character boundary of `name`.
    strip_bytes_prefix_ignore_case(name.as_bytes(), prefix)?;
    name.get(prefix.len()..)
}

fn strip_bytes_prefix_ignore_case<'a>(name: &'a [u8], prefix: &str) -> Option<&'a [u8]> {
    let head = name.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix.as_bytes())
        .then(|| name.get(prefix.len()..))
        .flatten()
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte; `None` if an
/// escape is incomplete or not hex.
fn query_unescape(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        out.push(match b {
            b'+' => b' ',
            b'%' => {
                let high = hex(*bytes.next()?)?;
                let low = hex(*bytes.next()?)?;
                high << 4 | low
            }
            other => other,
        });
    }
    Some(out)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn uberctx_values_are_query_unescaped() {
        assert_eq!(LegacyFormat::Uberctx.decode(b"98%3A765"), "98:765");
        assert_eq!(LegacyFormat::Uberctx.decode(b"a+b"), "a b");
        assert_eq!(LegacyFormat::Uberctx.decode(b"bad%zz"), "bad%zz");
        assert_eq!(LegacyFormat::Uberctx.decode(b"%"), "%");
    }

    #[test]
    fn ot_baggage_values_are_raw() {
        assert_eq!(LegacyFormat::OtBaggage.decode(b"a+b%20"), "a+b%20");
    }

    #[test]
    fn header_names_match_case_insensitively() {
        assert_eq!(
            item_key("UBERCTX-Some-Key"),
            Some((LegacyFormat::Uberctx, "some-key".to_owned()))
        );
        assert_eq!(
            item_key("Ot-Baggage-K"),
            Some((LegacyFormat::OtBaggage, "k".to_owned()))
        );
        assert_eq!(item_key("uberctx-"), None);
        assert_eq!(item_key("baggage"), None);
        assert!(is_item_header(
            "uberctx-SD-Routing-Key",
            LegacyFormat::Uberctx,
            "sd-routing-key"
        ));
        assert!(!is_item_header(
            "ot-baggage-sd-routing-key",
            LegacyFormat::Uberctx,
            "sd-routing-key"
        ));
    }

    #[test]
    fn items_collects_both_formats_and_ignores_others() {
        let headers = [
            ("uberctx-a", b"1".as_slice()),
            ("ot-baggage-b", b"2"),
            ("x-other", b"3"),
            ("uberctx-a", b"4"),
        ];
        assert_eq!(
            items(&headers),
            vec![("a".into(), "4".into()), ("b".into(), "2".into())]
        );
    }
}
