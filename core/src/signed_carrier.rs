//! Where a signed routing key travels from outside the mesh (see
//! [`crate::signed_key`]): a query parameter of the request's `:path` (a
//! preview link) or a cookie (a browser that followed one). Reading and
//! removing each, without decoding anything: a signed key is made of
//! unreserved characters only, so a percent-encoded one is refused as
//! malformed rather than decoded.

/// The value of query parameter `name` in `path` (`/p?a=1&name=v`): the
/// first occurrence, `""` when it has no `=`. The fragment (never sent by
/// clients, but possible) ends the query.
pub fn query_value<'p>(path: &'p str, name: &str) -> Option<&'p str> {
    query_pairs(path).find_map(|(key, value)| (key == name).then_some(value))
}

/// `path` without any `name` parameter, or `None` if it had none. The
/// other parameters keep their order and bytes; a query left empty loses
/// its `?`.
pub fn strip_query(path: &str, name: &str) -> Option<String> {
    let (before_fragment, fragment) = split_fragment(path);
    let (before, query) = before_fragment.split_once('?')?;
    let is_named = |pair: &&str| pair.split_once('=').map_or(*pair, |(k, _)| k) == name;
    if !query.split('&').any(|pair| is_named(&pair)) {
        return None;
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !is_named(pair) && !pair.is_empty())
        .collect();
    let mut stripped = before.to_owned();
    if !kept.is_empty() {
        stripped.push('?');
        stripped.push_str(&kept.join("&"));
    }
    if let Some(fragment) = fragment {
        stripped.push('#');
        stripped.push_str(fragment);
    }
    Some(stripped)
}

/// `path` before its fragment, and the fragment: RFC 3986 section 3.5,
/// the first `#` starts it, even before a `?`.
fn split_fragment(path: &str) -> (&str, Option<&str>) {
    match path.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (path, None),
    }
}

fn query_pairs(path: &str) -> impl Iterator<Item = (&str, &str)> {
    let (before_fragment, _) = split_fragment(path);
    let query = before_fragment
        .split_once('?')
        .map_or("", |(_, query)| query);
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// The value of cookie `name` in the request's `cookie` lines (RFC 6265
/// section 5.4: `a=1; b=2`, and HTTP/2 may split them over several lines):
/// the first occurrence. Names compare exactly, as browsers send them.
pub fn cookie_value<'h, L>(lines: L, name: &str) -> Option<&'h str>
where
    L: IntoIterator<Item = &'h [u8]>,
{
    lines.into_iter().find_map(|line| {
        let line = std::str::from_utf8(line).ok()?;
        cookie_pairs(line).find_map(|(key, value)| (key == name).then_some(value))
    })
}

/// The `cookie` lines without cookie `name`, or `None` if no line had it.
/// Every line is kept in order; a line left with no cookie is dropped
/// (no lines left: no `cookie` header at all).
pub fn strip_cookie<'h, L>(lines: L, name: &str) -> Option<Vec<Vec<u8>>>
where
    L: IntoIterator<Item = &'h [u8]>,
{
    let mut found = false;
    let mut kept_lines = Vec::new();
    for line in lines {
        // A line that is not UTF-8 cannot be parsed as cookies: kept as
        // the client sent it.
        let Ok(text) = std::str::from_utf8(line) else {
            kept_lines.push(line.to_vec());
            continue;
        };
        let pairs: Vec<&str> = text.split(';').map(str::trim).collect();
        let kept: Vec<&str> = pairs
            .iter()
            .copied()
            .filter(|pair| {
                let named = pair.split_once('=').map_or(*pair, |(k, _)| k.trim()) == name;
                found |= named;
                !named && !pair.is_empty()
            })
            .collect();
        if !kept.is_empty() {
            kept_lines.push(kept.join("; ").into_bytes());
        }
    }
    found.then_some(kept_lines)
}

fn cookie_pairs(line: &str) -> impl Iterator<Item = (&str, &str)> {
    line.split(';').filter_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        let value = value.trim();
        // RFC 6265 allows a value in double quotes.
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        Some((key.trim(), value))
    })
}

/// A `Set-Cookie` value that keeps a signed key in the browser until it
/// expires: for the whole site, not readable by scripts, HTTPS only, sent
/// on top-level navigations from other sites (the preview link itself).
pub fn set_cookie(name: &str, token: &str, max_age_seconds: u64) -> String {
    format!("{name}={token}; Max-Age={max_age_seconds}; Path=/; HttpOnly; Secure; SameSite=Lax")
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NAME: &str = "sd-routing-key";

    #[test]
    fn query_values_are_found_and_stripped() {
        assert_eq!(query_value("/p?sd-routing-key=t&a=1", NAME), Some("t"));
        assert_eq!(query_value("/p?a=1&sd-routing-key=t#x", NAME), Some("t"));
        assert_eq!(query_value("/p?sd-routing-key", NAME), Some(""));
        assert_eq!(query_value("/p?a=sd-routing-key", NAME), None);
        assert_eq!(query_value("/p#sd-routing-key=t", NAME), None);
        // The fragment starts at the first `#`, even before a `?`
        // (found by the fuzzer).
        assert_eq!(query_value("/p#x?sd-routing-key=t", NAME), None);
        assert_eq!(strip_query("/p#x?sd-routing-key=t", NAME), None);
        assert_eq!(query_value("/p", NAME), None);
        let cases = [
            ("/p?sd-routing-key=t", Some("/p")),
            ("/p?a=1&sd-routing-key=t&b=2", Some("/p?a=1&b=2")),
            ("/p?sd-routing-key=t&sd-routing-key=u&a", Some("/p?a")),
            ("/p?a=1&sd-routing-key=t#frag", Some("/p?a=1#frag")),
            ("/p?sd-routing-key", Some("/p")),
            ("/p?a=1", None),
            ("/p?xsd-routing-key=1", None),
            ("/p", None),
        ];
        for (path, want) in cases {
            assert_eq!(strip_query(path, NAME).as_deref(), want, "{path}");
        }
    }

    #[test]
    fn cookies_are_found_and_stripped_across_lines() {
        let lines: [&[u8]; 2] = [b"a=1; sd-routing-key=t", b"sd-routing-key=u; b=2"];
        assert_eq!(cookie_value(lines, NAME), Some("t"));
        let quoted: [&[u8]; 1] = [b"sd-routing-key=\"t\""];
        assert_eq!(cookie_value(quoted, NAME), Some("t"));
        let none: [&[u8]; 1] = [b"xsd-routing-key=t; a=sd-routing-key"];
        assert_eq!(cookie_value(none, NAME), None);
        assert_eq!(strip_cookie(none, NAME), None);
        assert_eq!(
            strip_cookie(lines, NAME).unwrap(),
            [b"a=1".to_vec(), b"b=2".to_vec()]
        );
        let only: [&[u8]; 2] = [b"sd-routing-key=t", b"c=3"];
        assert_eq!(strip_cookie(only, NAME).unwrap(), [b"c=3".to_vec()]);
        let not_utf8: [&[u8]; 2] = [b"\xff=1", b"sd-routing-key=t"];
        assert_eq!(strip_cookie(not_utf8, NAME).unwrap(), [b"\xff=1".to_vec()]);
    }

    #[test]
    fn the_cookie_set_is_scoped_and_expires() {
        assert_eq!(
            set_cookie(NAME, "pr-42.1.sig", 60),
            "sd-routing-key=pr-42.1.sig; Max-Age=60; Path=/; HttpOnly; Secure; SameSite=Lax"
        );
    }
}
