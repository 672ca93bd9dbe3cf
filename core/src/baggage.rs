//! W3C Baggage (<https://www.w3.org/TR/baggage/>) as a router reads it.
//!
//! ```text
//! baggage-string = list-member *( OWS "," OWS list-member )
//! list-member    = key OWS "=" OWS value *( OWS ";" OWS property )
//! property       = key OWS "=" OWS value / key
//! key            = token                       ; RFC 9110, never percent-decoded
//! value          = *baggage-octet              ; percent-encoded UTF-8
//! ```
//!
//! Every point where the peers disagree is decided in `docs/baggage.md`; the
//! constants and functions here are that policy in code. The parser borrows
//! from the header text and allocates only for the members it decodes, so the
//! routing path ([`find_value`]) allocates nothing unless the key it looks for
//! is percent-encoded.

use std::borrow::Cow;

/// Combined size of all `baggage` lines, counting one `,` between lines (as
/// if they were one list, RFC 9110). Past it the whole baggage is ignored,
/// so the work per request is bounded whatever the client sends.
pub const MAX_TOTAL_BYTES: usize = 8192;

/// Valid list-members read, in order across all lines; later ones are ignored.
pub const MAX_MEMBERS: usize = 180;

/// One property of a list-member: `name` or `name=value` (value decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    pub name: String,
    pub value: Option<String>,
}

/// One decoded list-member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub key: String,
    pub value: String,
    pub properties: Vec<Property>,
}

/// All members of a request's baggage, keys unique (the last duplicate wins,
/// keeping the position of the first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baggage {
    members: Vec<Member>,
}

impl Baggage {
    /// Parses and decodes every `baggage` line of a request as one list.
    pub fn parse<'a, I>(lines: I) -> Self
    where
        I: IntoIterator<Item = &'a [u8]> + Clone,
    {
        let mut baggage = Baggage::default();
        for raw in members(lines) {
            let member = raw.decode();
            match baggage.members.iter_mut().find(|m| m.key == member.key) {
                Some(existing) => *existing = member,
                None => baggage.members.push(member),
            }
        }
        baggage
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn get(&self, key: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.key == key)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// A member key the router looks for, with its substring searcher built
/// once (with the configuration) rather than per request: [`find_member`]
/// asks it first whether a line holds the key's bytes at all.
#[derive(Clone)]
pub struct MemberKey {
    key: String,
    finder: memchr::memmem::Finder<'static>,
}

impl MemberKey {
    pub fn new(key: impl Into<String>) -> Self {
        let key = key.into();
        let finder = memchr::memmem::Finder::new(key.as_bytes()).into_owned();
        MemberKey { key, finder }
    }

    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// Whether `line` holds the key's bytes anywhere (Wasm SIMD, 16 bytes
    /// at a time).
    fn occurs_in(&self, line: &[u8]) -> bool {
        self.finder.find(line).is_some()
    }
}

impl std::ops::Deref for MemberKey {
    type Target = str;

    fn deref(&self) -> &str {
        &self.key
    }
}

impl std::fmt::Debug for MemberKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.key, f)
    }
}

impl std::fmt::Display for MemberKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.key)
    }
}

/// Keys are equal when their text is: the searcher follows from it.
impl PartialEq for MemberKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for MemberKey {}

impl PartialEq<str> for MemberKey {
    fn eq(&self, other: &str) -> bool {
        self.key == other
    }
}

impl PartialEq<&str> for MemberKey {
    fn eq(&self, other: &&str) -> bool {
        self.key == *other
    }
}

impl AsRef<str> for MemberKey {
    fn as_ref(&self) -> &str {
        &self.key
    }
}

impl From<String> for MemberKey {
    fn from(key: String) -> Self {
        MemberKey::new(key)
    }
}

impl From<&str> for MemberKey {
    fn from(key: &str) -> Self {
        MemberKey::new(key)
    }
}

/// [`find_value`] for a router's key: a line without the key's bytes cannot
/// hold a member named `key` (member keys are never decoded), so lines that
/// do not contain them are not walked at all. Most requests carry no
/// routing key: their baggage is searched once, 16 bytes at a time, instead
/// of walked element by element (about 2,500 Envoy instructions for the
/// bench's 300-byte no-key baggage, docs/performance.md).
pub fn find_member<'a, I>(lines: I, key: &MemberKey) -> Option<Cow<'a, str>>
where
    I: IntoIterator<Item = &'a [u8]> + Clone,
{
    if !lines.clone().into_iter().any(|line| key.occurs_in(line)) {
        return None;
    }
    find_value(lines, key.as_str())
}

/// The decoded value of member `key` (the last one if repeated), without
/// decoding any other member. Agrees with `Baggage::parse(lines).get(key)`.
///
/// The routing path: one pass from the end of each line for the last
/// element named `key` that is a valid member; no other member is
/// validated, which is what the policy allows when the lines hold fewer list
/// elements than the member limit (then which members are valid cannot
/// change which ones count). Otherwise, or for a `key` that is not a token,
/// the general parser decides.
pub fn find_value<'a, I>(lines: I, key: &str) -> Option<Cow<'a, str>>
where
    I: IntoIterator<Item = &'a [u8]> + Clone,
{
    let total = combined_len(lines.clone());
    if total > MAX_TOTAL_BYTES {
        return None;
    }
    if !is_token(key.as_bytes()) || may_reach_member_limit(lines.clone(), total) {
        return members(lines)
            .filter(|m| m.key == key)
            .last()
            .map(|m| percent_decode(m.value));
    }
    // A later line's member replaces an earlier one's.
    let mut found = None;
    for line in lines {
        if let Some(member) = last_member_named(line, key.as_bytes()) {
            found = Some(member);
        }
    }
    found.map(|m| percent_decode(m.value))
}

/// The last element of `line` whose key is `key` (a token) and that is a
/// valid member, scanning from the end.
fn last_member_named<'a>(line: &'a [u8], key: &[u8]) -> Option<RawMember<'a>> {
    // `line.rsplit(',')`, with the commas found by `memrchr` (vectorised
    // natively, a word at a time in Wasm) instead of byte by byte: most
    // requests carry no routing key, and this walks their whole baggage.
    let mut end = line.len();
    loop {
        let before = line.get(..end)?;
        let start = memchr::memrchr(b',', before).map_or(0, |comma| comma + 1);
        let element = before.get(start..)?;
        if names(element, key) {
            if let Some(member) = parse_member(element) {
                return Some(member);
            }
        }
        // `start - 1` is the comma before this element.
        end = start.checked_sub(1)?;
    }
}

/// Whether list element `element` names `key` (a token): OWS, `key`, OWS,
/// `=`. The same as [`raw_key`] being `key`, as a token holds no OWS, `=`
/// or `;`; nothing else is validated.
fn names(element: &[u8], key: &[u8]) -> bool {
    let start = element
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(element.len());
    let Some(rest) = element.get(start..) else {
        return false;
    };
    // Most elements differ from `key` in their first byte: no comparison
    // call for them (one per element of every request's baggage).
    if rest.first() != key.first() {
        return false;
    }
    let Some(rest) = rest.strip_prefix(key) else {
        return false;
    };
    rest.iter().find(|&&b| b != b' ' && b != b'\t') == Some(&b'=')
}

/// Whether the lines (`total` bytes joined) hold at least [`MAX_MEMBERS`]
/// list elements, so the member limit might drop some. One byte count, no
/// parsing; lines too short to hold that many valid members (each is at
/// least `k=`) are not counted at all.
fn may_reach_member_limit<'a>(lines: impl IntoIterator<Item = &'a [u8]>, total: usize) -> bool {
    const MIN_BYTES: usize = MAX_MEMBERS * 3 - 1;
    if total < MIN_BYTES {
        return false;
    }
    let mut elements = 0usize;
    for line in lines {
        elements += 1 + count_commas(line);
        if elements >= MAX_MEMBERS {
            return true;
        }
    }
    false
}

/// The number of `,` in `bytes` (vectorised where the target has SIMD).
fn count_commas(bytes: &[u8]) -> usize {
    memchr::memchr_iter(b',', bytes).count()
}

/// The list elements of all lines, or none past the size limit.
fn elements<'a, I>(lines: I) -> impl Iterator<Item = &'a [u8]>
where
    I: IntoIterator<Item = &'a [u8]> + Clone,
{
    let within_limit = combined_len(lines.clone()) <= MAX_TOTAL_BYTES;
    lines
        .into_iter()
        .filter(move |_| within_limit)
        .flat_map(|line| line.split(|&b| b == b','))
}

/// The key text of a list element as [`parse_member`] would read it
/// (before the first `=` of the part before the first `;`, OWS trimmed),
/// without validating anything. [`names`] is the routing path's form of it.
#[cfg(test)]
fn raw_key(element: &[u8]) -> Option<&[u8]> {
    // Only the key is scanned: the first `=` or `;` ends it, and a `;` first
    // means there is no `=` before the properties (an invalid member).
    let end = element.iter().position(|&b| b == b'=' || b == b';')?;
    match element.get(end) {
        Some(b'=') => Some(trim_ows(element.get(..end)?)),
        _ => None,
    }
}

/// One property as it appears between `;` in a list-member: `name` or
/// `name = value`, OWS allowed around both, the value percent-decoded as a
/// member's value is. `None` if `text` is malformed (the member parser then
/// drops the whole member) or empty (the member parser skips an empty
/// property, as in `k=v;`, and keeps the member).
pub fn parse_property(text: &str) -> Option<Property> {
    let (name, value) = property_parts(trim_ows(text.as_bytes()))?;
    Some(Property {
        name: name.to_owned(),
        value: value.map(|v| percent_decode(v).into_owned()),
    })
}

/// Percent-decodes one value, the text between `=` and the next `;` or `,`
/// with OWS removed, exactly as the member parser does. `None` if it is not a
/// valid value, which makes the member parser drop the member: a byte that is
/// not a baggage-octet, or a `%` not followed by two hex digits. Bytes that
/// are not UTF-8 after decoding become U+FFFD.
pub fn decode_value(text: &str) -> Option<String> {
    let value = text.as_bytes();
    is_value(value).then(|| percent_decode(value).into_owned())
}

/// A syntactically valid list-member, borrowed and not yet decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawMember<'a> {
    pub key: &'a str,
    value: &'a [u8],
    properties: &'a [u8],
}

impl RawMember<'_> {
    pub fn decode(&self) -> Member {
        Member {
            key: self.key.to_owned(),
            value: percent_decode(self.value).into_owned(),
            properties: split_properties(self.properties)
                .filter_map(property_parts)
                .map(|(name, value)| Property {
                    name: name.to_owned(),
                    value: value.map(|v| percent_decode(v).into_owned()),
                })
                .collect(),
        }
    }
}

/// The valid list-members of all lines, in order, within the limits above.
/// Invalid members are skipped one by one; empty list elements are ignored.
pub fn members<'a, I>(lines: I) -> impl Iterator<Item = RawMember<'a>>
where
    I: IntoIterator<Item = &'a [u8]> + Clone,
{
    elements(lines).filter_map(parse_member).take(MAX_MEMBERS)
}

/// Length of the lines joined with `,`, stopping early once over the limit.
fn combined_len<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> usize {
    let mut total = 0usize;
    for (index, line) in lines.into_iter().enumerate() {
        let separator = usize::from(index > 0);
        total = total.saturating_add(line.len()).saturating_add(separator);
        if total > MAX_TOTAL_BYTES {
            break;
        }
    }
    total
}

fn parse_member(element: &[u8]) -> Option<RawMember<'_>> {
    let element = trim_ows(element);
    if element.is_empty() {
        return None;
    }
    let (key_value, properties) = split_once(element, b';').unwrap_or((element, &[]));
    let (key, value) = split_once(key_value, b'=')?;
    let key = token(trim_ows(key))?;
    let value = trim_ows(value);
    if !is_value(value) || !split_properties(properties).all(|p| property_parts(p).is_some()) {
        return None;
    }
    Some(RawMember {
        key,
        value,
        properties,
    })
}

/// Property texts between `;`, trimmed; empty ones (`k=v;`) are ignored.
fn split_properties(properties: &[u8]) -> impl Iterator<Item = &[u8]> {
    properties
        .split(|&b| b == b';')
        .map(trim_ows)
        .filter(|p| !p.is_empty())
}

/// `name` or `name=value`; `None` if malformed.
fn property_parts(property: &[u8]) -> Option<(&str, Option<&[u8]>)> {
    match split_once(property, b'=') {
        None => Some((token(property)?, None)),
        Some((name, value)) => {
            let value = trim_ows(value);
            is_value(value).then_some(())?;
            Some((token(trim_ows(name))?, Some(value)))
        }
    }
}

/// A value is baggage-octets and complete `%XX` escapes.
fn is_value(value: &[u8]) -> bool {
    let mut bytes = value.iter();
    while let Some(&b) = bytes.next() {
        if b == b'%' {
            let high = bytes.next().copied().and_then(hex_digit);
            let low = bytes.next().copied().and_then(hex_digit);
            if high.is_none() || low.is_none() {
                return false;
            }
        } else if !is_baggage_octet(b) {
            return false;
        }
    }
    true
}

/// Percent-decodes a value that passed [`is_value`]; bytes that are not UTF-8
/// after decoding become U+FFFD, as the W3C spec says.
fn percent_decode(value: &[u8]) -> Cow<'_, str> {
    if !value.contains(&b'%') {
        // Baggage-octets are ASCII, so this is always valid UTF-8.
        return String::from_utf8_lossy(value);
    }
    let mut decoded = Vec::with_capacity(value.len());
    let mut bytes = value.iter();
    while let Some(&b) = bytes.next() {
        let escaped = if b == b'%' {
            let high = bytes.next().copied().and_then(hex_digit);
            let low = bytes.next().copied().and_then(hex_digit);
            high.zip(low).map(|(h, l)| h << 4 | l)
        } else {
            None
        };
        decoded.push(escaped.unwrap_or(b));
    }
    Cow::Owned(String::from_utf8_lossy(&decoded).into_owned())
}

/// RFC 9110 `token`, as `&str` (tokens are ASCII).
fn token(bytes: &[u8]) -> Option<&str> {
    if !is_token(bytes) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// Whether `bytes` is a `token`, without making a `&str` of it.
fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|&b| is_tchar(b))
}

pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR.get(usize::from(b)).copied().unwrap_or(false)
}

/// RFC 9110 `tchar`: ALPHA, DIGIT and ``!#$%&'*+-.^_`|~``, by byte (one
/// load per byte instead of a search of the punctuation list). Built at
/// compile time, where an index out of bounds fails the build, not a request.
#[allow(clippy::indexing_slicing)]
static TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

/// `baggage-octet = %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E`
fn is_baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Optional whitespace (SP / HTAB) trimmed from both ends.
pub(crate) fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or_default()
}

fn split_once(bytes: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == separator)?;
    Some((bytes.get(..at)?, bytes.get(at + 1..)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn parse(lines: &[&str]) -> Baggage {
        Baggage::parse(lines.iter().map(|l| l.as_bytes()))
    }

    /// [`find_value`], checked against [`find_member`] (the router's path,
    /// with the substring search first) on every test that uses it.
    fn find(lines: &[&str], key: &str) -> Option<String> {
        let bytes = || lines.iter().map(|l| l.as_bytes());
        let value = find_value(bytes(), key).map(Cow::into_owned);
        let member = find_member(bytes(), &MemberKey::new(key)).map(Cow::into_owned);
        assert_eq!(
            member, value,
            "find_member and find_value differ for {key:?}"
        );
        value
    }

    #[test]
    fn find_member_skips_only_lines_without_the_key() {
        let key = MemberKey::new("sd-routing-key");
        let lines = |text: &'static [&'static str]| text.iter().map(|l| l.as_bytes());
        // No line holds the key's bytes: nothing.
        assert_eq!(find_member(lines(&["a=1,b=2", "c=3"]), &key), None);
        // The key only in a value or a property, or as part of a longer key.
        assert_eq!(
            find_member(lines(&["a=sd-routing-key,b=1;sd-routing-key=2"]), &key),
            None
        );
        assert_eq!(find_member(lines(&["xsd-routing-key=1"]), &key), None);
        // In a later line, with OWS; the last member wins across lines.
        assert_eq!(
            find_member(lines(&["a=1", " sd-routing-key = pr-1 "]), &key).as_deref(),
            Some("pr-1")
        );
        assert_eq!(
            find_member(
                lines(&["sd-routing-key=pr-1", "b=2,sd-routing-key=pr-2"]),
                &key
            )
            .as_deref(),
            Some("pr-2")
        );
        // Percent-encoded values are decoded, as by find_value.
        assert_eq!(
            find_member(lines(&["sd-routing-key=pr%2D1"]), &key).as_deref(),
            Some("pr-1")
        );
        assert_eq!(key, "sd-routing-key");
        assert_eq!(format!("{key}"), "sd-routing-key");
    }

    fn value(b: &Baggage, key: &str) -> Option<String> {
        b.get(key).map(|m| m.value.clone())
    }

    #[test]
    fn simple_member() {
        let b = parse(&["SomeKey=SomeValue"]);
        assert_eq!(value(&b, "SomeKey").as_deref(), Some("SomeValue"));
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn ows_around_every_delimiter() {
        let b = parse(&["k1 \t = \t v1 \t ; \t p1 \t , \t k2 = v2 ; p2 = x"]);
        assert_eq!(value(&b, "k1").as_deref(), Some("v1"));
        assert_eq!(value(&b, "k2").as_deref(), Some("v2"));
        let k2 = b.get("k2").unwrap();
        assert_eq!(k2.properties[0].name, "p2");
        assert_eq!(k2.properties[0].value.as_deref(), Some("x"));
        assert_eq!(b.get("k1").unwrap().properties[0].value, None);
    }

    #[test]
    fn equals_sign_inside_value_is_kept() {
        assert_eq!(find(&["key=name=x,b=1"], "key").as_deref(), Some("name=x"));
    }

    #[test]
    fn all_lines_are_one_list_and_last_duplicate_wins() {
        let lines = ["a=1,k=first", "b=2", "k=second"];
        assert_eq!(find(&lines, "k").as_deref(), Some("second"));
        let b = parse(&lines);
        assert_eq!(b.len(), 3);
        assert_eq!(value(&b, "k").as_deref(), Some("second"));
    }

    #[test]
    fn percent_decoding_of_values_not_keys() {
        let b = parse(&["k%41=v%41,key=value%202%2C3"]);
        assert_eq!(value(&b, "k%41").as_deref(), Some("vA"));
        assert_eq!(value(&b, "key").as_deref(), Some("value 2,3"));
        assert_eq!(find(&["sd=pr%2D42"], "sd").as_deref(), Some("pr-42"));
    }

    #[test]
    fn invalid_utf8_after_decoding_becomes_replacement_char() {
        assert_eq!(find(&["k=a%FFb"], "k").as_deref(), Some("a\u{FFFD}b"));
        assert_eq!(find(&["k=%C3%A9"], "k").as_deref(), Some("é"));
    }

    #[test]
    fn plus_is_literal() {
        assert_eq!(find(&["k=1+1"], "k").as_deref(), Some("1+1"));
    }

    #[test]
    fn bad_escape_drops_only_that_member() {
        let b = parse(&["bad1=va%lue,key1=value1,bad2=value%GG,enc=a%202,bad3=v;m=%GG,bad4=%"]);
        assert_eq!(b.len(), 2);
        assert_eq!(value(&b, "enc").as_deref(), Some("a 2"));
    }

    #[test]
    fn invalid_members_are_skipped_individually() {
        let b = parse(&["key1=val1,a,val3,=x,k y=1,ok=1,sp=a b,q=\"x\",bs=a\\b"]);
        let keys: Vec<_> = b.members().iter().map(|m| m.key.as_str()).collect();
        assert_eq!(keys, ["key1", "ok"]);
    }

    #[test]
    fn non_ascii_bytes_make_a_member_invalid() {
        let line: &[u8] = b"k=\xff\xfe,ok=1";
        let b = Baggage::parse([line]);
        assert_eq!(b.len(), 1);
        assert!(find_value([line], "k").is_none());
    }

    #[test]
    fn empty_value_is_kept_empty_elements_ignored() {
        let b = parse(&[",,k=,,j=1,", ""]);
        assert_eq!(value(&b, "k").as_deref(), Some(""));
        assert_eq!(b.len(), 2);
    }

    #[test]
    fn properties_are_not_part_of_the_value() {
        let lines = ["sd-routing-key=pr-42;ttl=10;flag"];
        assert_eq!(find(&lines, "sd-routing-key").as_deref(), Some("pr-42"));
        let m = parse(&lines).get("sd-routing-key").cloned().unwrap();
        assert_eq!(m.properties.len(), 2);
        assert_eq!(m.properties[1].name, "flag");
    }

    #[test]
    fn malformed_property_drops_the_member() {
        assert!(find(&["k=v;a b"], "k").is_none());
        assert!(find(&["k=v;=x"], "k").is_none());
        assert_eq!(find(&["k=v;"], "k").as_deref(), Some("v"));
    }

    #[test]
    fn key_inside_a_property_is_not_a_member() {
        assert!(find(&["a=1;sd-routing-key=pr-42"], "sd-routing-key").is_none());
    }

    #[test]
    fn total_size_limit_counts_separators_and_drops_everything() {
        let exact = format!("k={}", "v".repeat(MAX_TOTAL_BYTES - 2));
        assert_eq!(parse(&[exact.as_str()]).len(), 1);
        let over = format!("k={}", "v".repeat(MAX_TOTAL_BYTES - 1));
        assert!(parse(&[over.as_str()]).is_empty());
        let half = format!("k={}", "v".repeat(4094));
        let other = format!("y={}", "v".repeat(4093));
        assert_eq!(parse(&[half.as_str(), other.as_str()]).len(), 2);
        assert!(parse(&[half.as_str(), "", other.as_str()]).is_empty());
    }

    #[test]
    fn member_limit_keeps_the_first_members() {
        let line: Vec<String> = (0..MAX_MEMBERS + 20).map(|i| format!("k{i}=v")).collect();
        let line = line.join(",");
        let b = parse(&[line.as_str()]);
        assert_eq!(b.len(), MAX_MEMBERS);
        assert!(b.get("k0").is_some());
        assert!(b.get(&format!("k{}", MAX_MEMBERS)).is_none());
    }

    #[test]
    fn find_agrees_with_parse_on_tricky_inputs() {
        let inputs: &[&[&str]] = &[
            &["k=1,k=2;p", "k=%zz"],
            &["k = a%20b ; p = 1 ,k=c"],
            &["", "k="],
            &[";,=,k=\t"],
        ];
        for lines in inputs {
            let parsed = value(&parse(lines), "k");
            assert_eq!(find(lines, "k"), parsed, "{lines:?}");
        }
    }

    #[test]
    fn parse_property_parses_one_property_as_the_member_parser_does() {
        let property = |name: &str, value: Option<&str>| Property {
            name: name.to_owned(),
            value: value.map(str::to_owned),
        };
        assert_eq!(parse_property("flag"), Some(property("flag", None)));
        assert_eq!(
            parse_property(" \tk = v%20x\t"),
            Some(property("k", Some("v x")))
        );
        assert_eq!(parse_property("k="), Some(property("k", Some(""))));
        assert_eq!(parse_property("k=a=b"), Some(property("k", Some("a=b"))));
        assert_eq!(parse_property("k%41"), Some(property("k%41", None)));
        for malformed in ["=v", "a b", "k=%G0", "k=%", "k=a b", "é"] {
            assert_eq!(parse_property(malformed), None, "{malformed:?}");
            let member = format!("m=1;{malformed}");
            assert!(find(&[member.as_str()], "m").is_none(), "{member:?}");
        }
        // `;` and `,` delimit properties and members, so never in one.
        assert_eq!(parse_property(",;,"), None);
        assert_eq!(parse_property("k;x"), None);
        // Empty: not a property, but the member parser skips it.
        assert_eq!(parse_property(""), None);
        assert_eq!(parse_property(" \t"), None);
        assert_eq!(find(&["m=1; \t;p"], "m").as_deref(), Some("1"));
    }

    #[test]
    fn decode_value_decodes_or_rejects_one_value() {
        assert_eq!(decode_value("a%20b+c").as_deref(), Some("a b+c"));
        assert_eq!(decode_value("").as_deref(), Some(""));
        assert_eq!(decode_value("a%FFb").as_deref(), Some("a\u{FFFD}b"));
        assert_eq!(decode_value("%C3%A9").as_deref(), Some("é"));
        for invalid in [
            "%", "%1", "%G0", "a%zz", "a b", " a", "a,b", "a;b", "\"a\"", "é",
        ] {
            assert_eq!(decode_value(invalid), None, "{invalid:?}");
        }
    }

    #[test]
    fn find_agrees_with_parse_around_the_member_limit() {
        // Invalid members early change which valid members fit in the limit.
        for count in [
            MAX_MEMBERS - 2,
            MAX_MEMBERS - 1,
            MAX_MEMBERS,
            MAX_MEMBERS + 1,
        ] {
            let mut members: Vec<String> = (0..count).map(|i| format!("k{i}=v")).collect();
            members[0] = "bad member".into();
            members[1] = "k=first".into();
            let last = count - 1;
            members[last] = "k=last".into();
            let line = members.join(",");
            let parsed = value(&parse(&[line.as_str()]), "k");
            assert_eq!(find(&[line.as_str()], "k"), parsed, "{count} elements");
        }
    }

    #[test]
    fn names_is_raw_key_for_a_token_key() {
        for element in [
            "k=v",
            " \tk \t= v",
            "k",
            "k;p=1",
            "kk=v",
            "k k=v",
            "=k",
            "k=",
            "k ;=v",
            "xk=v",
            "k\t",
            "",
            " ",
            "k=a=b",
            "k%=v",
        ] {
            for key in ["k", "kk", "k%"] {
                assert_eq!(
                    names(element.as_bytes(), key.as_bytes()),
                    raw_key(element.as_bytes()) == Some(key.as_bytes()),
                    "{element:?} {key:?}"
                );
            }
        }
    }

    #[test]
    fn find_agrees_with_parse_for_keys_that_are_not_tokens() {
        for key in ["", "a b", "k=", "k;"] {
            let line = format!("{key}=1,x=2");
            assert_eq!(
                find(&[line.as_str()], key),
                value(&parse(&[line.as_str()]), key)
            );
        }
    }

    #[test]
    fn tchar_table_is_rfc_9110s_tchar() {
        for b in 0..=255u8 {
            let tchar = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_tchar(b), tchar, "{b}");
        }
    }

    #[test]
    fn the_member_limit_shortcut_is_conservative() {
        // 181 valid members are at least 181 * 2 + 180 bytes.
        let line: Vec<String> = (0..MAX_MEMBERS + 1)
            .map(|i| format!("{}=", char::from(b'a' + (i % 26) as u8)))
            .collect();
        let line = line.join(",");
        assert!(line.len() >= MAX_MEMBERS * 3 - 1);
        assert!(may_reach_member_limit([line.as_bytes()], line.len()));
    }

    #[test]
    fn count_commas_counts_every_comma() {
        let mut text = Vec::new();
        for i in 0..200u8 {
            text.push(if i % 3 == 0 { b',' } else { i });
            let slice = text.as_slice();
            let want = slice.iter().filter(|&&b| b == b',').count();
            assert_eq!(count_commas(slice), want, "{slice:?}");
        }
        assert_eq!(count_commas(&[0xAC; 16]), 0);
        assert_eq!(count_commas(&[b','; 17]), 17);
    }

    #[test]
    fn trim_ows_edge_cases() {
        assert_eq!(trim_ows(b""), b"");
        assert_eq!(trim_ows(b" \t "), b"");
        assert_eq!(trim_ows(b" a b\t"), b"a b");
    }
}
