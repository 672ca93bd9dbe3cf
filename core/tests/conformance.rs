//! Conformance of the core's W3C baggage and legacy-carrier parsers against
//! the peer corpus in `fixtures/conformance/` (see its README; the files are
//! copies and stay unchanged).
//!
//! Every case (294 W3C baggage, 34 legacy, 12 unit) is run through our parser
//! and compared with the expectation that peer's own test asserts. Peers
//! disagree with each other, so we cannot agree with all of them: where we
//! differ, the case is listed in [`DIFFERENCES`] with the policy point of
//! `docs/baggage.md` that explains it. The test fails if a case differs and
//! is not listed, and also if a listed case agrees, so the table stays exact.
//! It prints (under `--nocapture`) the agreement per peer, which
//! `docs/baggage.md` quotes verbatim.
//!
//! # What "agree" means, per expectation field
//!
//! Our parser has no error channel: an invalid member is dropped and the rest
//! is kept. So a case agrees when every expectation field it carries holds
//! for what we keep; a case with no comparable field fails (none is vacuous).
//!
//! W3C baggage cases (`cases.json`), our result is `Baggage::parse(headers)`:
//! - `expect`: the decoded key → value map we keep equals it exactly. With
//!   `expect_error` it is the peer's partial result (the members it kept
//!   besides reporting an error) and is compared the same way.
//! - `expect_error`: not compared by itself (we never fail a header); it
//!   always comes with `expect` or `expect_count`, which are.
//! - `expect_properties`: for each key listed, the member is kept and its
//!   properties (name, decoded value or none), in order, equal the list.
//! - `expect_metadata_raw`: peers that keep the text after the first `;` as
//!   one opaque string. Our equivalent is the parsed form: the member is kept
//!   and its properties equal what our property parser makes of that text
//!   (split on `;`, empty ones skipped, each one `baggage::parse_property`).
//!   So `"p1;p2"` and `" p1 ; p2 "` are the same metadata; text we would
//!   reject as a property cannot match, since we would have dropped the member.
//! - `expect_count`: the number of members we keep.
//! - `expect_keys`: our kept keys, in order, begin with these (the peers'
//!   tests assert "the first key is ..." or list the keys in order).
//! - `expect_absent`: none of these keys is kept.
//! - `expect_subset`: each of these keys is kept with this value.
//! - `expect_reinjected_header`: what the peer writes back out after
//!   extracting. The router does not rewrite `baggage` (it forwards the
//!   header untouched), so our equivalent is the set of members we keep:
//!   parsing the peer's output with our parser gives exactly our members
//!   (keys, values and properties, in order). `""` means we keep nothing.
//! - `expect_serialized_len`: the length of the peer's serialisation. Ours
//!   is the canonical form of what we keep: `key=value[;name[=value]]...`
//!   joined by `,`, values percent-encoded wherever a byte is not a
//!   baggage-octet or is `%`.
//!
//! Legacy cases (`legacy_cases.json`): the headers go to `legacy::items` and
//! the key → value map it returns equals `expect` exactly. We read
//! `uberctx-*` and `ot-baggage-*` only (never `jaeger-baggage`), with no
//! `ot-tracer-*` span context required.
//!
//! Unit cases (`unit_cases.json`, which have no ids: they are named
//! `unit-01`..`unit-12` here, by position):
//! - `kind: property` → `baggage::parse_property(input)`.
//!   `expect_property: [name, value|null]` must equal our property;
//!   `expect_property: null` (Go's zero Property: nothing there, no error)
//!   agrees with our `None` for empty text, which the member parser skips;
//!   `expect_error` agrees with our `None`.
//! - `kind: value_decode` → `baggage::decode_value(input)`.
//!   `expect_decoded` must equal our decoded value; `expect_error` agrees
//!   with our `None` (a bad escape, for which we drop the member).
//!
//! Separately, the routing path must read what these parsers read: for every
//! W3C case, `baggage::find_value` agrees with `Baggage::parse(..).get(..)`
//! for every key we keep and every key any expectation mentions; for every
//! legacy case, `carrier::KeyCarriers::extract` finds each non-empty item
//! that `legacy::items` lists.
//!
//! `docs/baggage.md` is checked too: it must quote the printed summary, have
//! a section per policy point, name in each section's "Differ" paragraph the
//! cases listed under that point, and name in "Agree" only cases that agree.

// Test code: a bad fixture or a failed check should fail loudly. clippy.toml
// allows these lints only inside `#[test]` functions and `#[cfg(test)]`
// modules, not in the helper functions of an integration-test crate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;

use sandbox_router_core::baggage::{self, Baggage, Member, Property};
use sandbox_router_core::carrier::{Carrier, KeyCarriers};
use sandbox_router_core::legacy;
use serde::{Deserialize, Deserializer};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const CASES_JSON: &str = include_str!("fixtures/conformance/cases.json");
const LEGACY_JSON: &str = include_str!("fixtures/conformance/legacy_cases.json");
const UNIT_JSON: &str = include_str!("fixtures/conformance/unit_cases.json");
const DOCS: &str = include_str!("../../docs/baggage.md");

/// `println!` natively; the browser/Node console under wasm-bindgen-test,
/// where stdout goes nowhere.
macro_rules! say {
    ($($arg:tt)*) => {{
        #[cfg(not(target_arch = "wasm32"))]
        println!($($arg)*);
        #[cfg(target_arch = "wasm32")]
        wasm_bindgen_test::console_log!($($arg)*);
    }};
}

// ---------------------------------------------------------------------------
// Policy points and the cases where we differ from the peer
// ---------------------------------------------------------------------------

/// The policy points of `docs/baggage.md`, one `##` section each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Policy {
    InvalidMember,
    BadEscape,
    Plus,
    KeyDecoding,
    Ows,
    EmptyValue,
    Properties,
    SizeLimit,
    MemberLimit,
    PerMemberSize,
    DuplicateKeys,
    SeveralHeaders,
    NonAscii,
    JaegerBaggageNotRead,
    OtBaggageWithoutSpanContext,
    UberctxDecodeErrors,
}

impl Policy {
    const ALL: [Policy; 16] = [
        Policy::InvalidMember,
        Policy::BadEscape,
        Policy::Plus,
        Policy::KeyDecoding,
        Policy::Ows,
        Policy::EmptyValue,
        Policy::Properties,
        Policy::SizeLimit,
        Policy::MemberLimit,
        Policy::PerMemberSize,
        Policy::DuplicateKeys,
        Policy::SeveralHeaders,
        Policy::NonAscii,
        Policy::JaegerBaggageNotRead,
        Policy::OtBaggageWithoutSpanContext,
        Policy::UberctxDecodeErrors,
    ];

    /// The heading of its section in `docs/baggage.md`.
    fn heading(self) -> &'static str {
        match self {
            Policy::InvalidMember => "Invalid members",
            Policy::BadEscape => "Bad `%` escapes",
            Policy::Plus => "`+` in a value",
            Policy::KeyDecoding => "Keys are not percent-decoded",
            Policy::Ows => "Whitespace (OWS)",
            Policy::EmptyValue => "Empty values",
            Policy::Properties => "Properties",
            Policy::SizeLimit => "Size limit",
            Policy::MemberLimit => "Member limit",
            Policy::PerMemberSize => "No per-member size limit",
            Policy::DuplicateKeys => "Duplicate keys",
            Policy::SeveralHeaders => "Several `baggage` headers",
            Policy::NonAscii => "Non-ASCII and control bytes",
            Policy::JaegerBaggageNotRead => "`jaeger-baggage` is not read",
            Policy::OtBaggageWithoutSpanContext => "`ot-baggage-*` without a span context",
            Policy::UberctxDecodeErrors => "`uberctx-*` decode errors",
        }
    }
}

/// Every case where our result differs from the peer's expectation, with the
/// policy point(s) that explain it (more than one when the case differs on
/// several points at once).
const DIFFERENCES: &[(&str, &[Policy])] = &[
    // Go <= v1.40 rejected the whole header for one invalid member.
    ("bg-085", &[Policy::InvalidMember]),
    ("bg-088", &[Policy::InvalidMember]),
    // .NET maps a malformed escape to U+FFFD; Java's codec drops it.
    ("bg-265", &[Policy::BadEscape]),
    ("bg-266", &[Policy::BadEscape]),
    ("bg-267", &[Policy::BadEscape]),
    ("bg-268", &[Policy::BadEscape]),
    ("unit-10", &[Policy::BadEscape]),
    ("unit-11", &[Policy::BadEscape]),
    // Python (unquote_plus) and C++ decode `+` as a space.
    ("bg-151", &[Policy::Plus]),
    ("bg-273", &[Policy::KeyDecoding, Policy::Plus]),
    // Python and C++ percent-decode keys.
    ("bg-150", &[Policy::KeyDecoding]),
    ("bg-282", &[Policy::KeyDecoding]),
    ("bg-283", &[Policy::KeyDecoding]),
    // Python rejects OWS around `=`.
    ("bg-136", &[Policy::Ows]),
    // JS drops a member with an empty value.
    ("bg-178", &[Policy::EmptyValue]),
    // Python and C++ keep the properties inside the value.
    ("bg-137", &[Policy::Properties]),
    ("bg-271", &[Policy::Properties]),
    ("bg-272", &[Policy::Properties]),
    // Java keeps the headers before the running total passes 8192 bytes;
    // JS and .NET truncate; we drop all baggage past 8192 bytes in total.
    ("bg-133", &[Policy::SizeLimit]),
    ("bg-166", &[Policy::SizeLimit]),
    ("bg-181", &[Policy::SizeLimit]),
    ("bg-191", &[Policy::SizeLimit]),
    // Java's Jaeger and OT propagators cap legacy items by size; we do not.
    ("legacy-025", &[Policy::SizeLimit]),
    ("legacy-034", &[Policy::SizeLimit]),
    // Go, Java and Rust keep 64 members; Go <= v1.40 rejected 181; Python
    // counts invalid members toward 180; we keep the first 180 valid ones.
    ("bg-050", &[Policy::MemberLimit]),
    ("bg-074", &[Policy::MemberLimit]),
    ("bg-075", &[Policy::MemberLimit]),
    ("bg-087", &[Policy::MemberLimit]),
    ("bg-130", &[Policy::MemberLimit]),
    ("bg-131", &[Policy::MemberLimit]),
    ("bg-148", &[Policy::MemberLimit]),
    ("bg-161", &[Policy::MemberLimit]),
    // Java's Jaeger and OT propagators keep 64 legacy items; we keep all.
    ("legacy-023", &[Policy::MemberLimit]),
    ("legacy-033", &[Policy::MemberLimit]),
    // Python, JS and C++ keep the old 4096-byte per-member limit.
    ("bg-146", &[Policy::PerMemberSize]),
    ("bg-147", &[Policy::PerMemberSize]),
    ("bg-167", &[Policy::PerMemberSize]),
    ("bg-168", &[Policy::PerMemberSize]),
    ("bg-285", &[Policy::PerMemberSize]),
    ("bg-294", &[Policy::PerMemberSize]),
    // C++ rejects a value that decodes to a control character.
    ("bg-284", &[Policy::NonAscii]),
    // We do not read `jaeger-baggage`.
    ("legacy-001", &[Policy::JaegerBaggageNotRead]),
    ("legacy-002", &[Policy::JaegerBaggageNotRead]),
    ("legacy-003", &[Policy::JaegerBaggageNotRead]),
    ("legacy-004", &[Policy::JaegerBaggageNotRead]),
    ("legacy-005", &[Policy::JaegerBaggageNotRead]),
    ("legacy-009", &[Policy::JaegerBaggageNotRead]),
    ("legacy-010", &[Policy::JaegerBaggageNotRead]),
    ("legacy-011", &[Policy::JaegerBaggageNotRead]),
    ("legacy-015", &[Policy::JaegerBaggageNotRead]),
    ("legacy-016", &[Policy::JaegerBaggageNotRead]),
    ("legacy-021", &[Policy::JaegerBaggageNotRead]),
    ("legacy-022", &[Policy::JaegerBaggageNotRead]),
    ("legacy-024", &[Policy::JaegerBaggageNotRead]),
    ("legacy-027", &[Policy::JaegerBaggageNotRead]),
    ("legacy-028", &[Policy::JaegerBaggageNotRead]),
    // Java's OT propagator reads `ot-baggage-*` only with a valid span context.
    ("legacy-032", &[Policy::OtBaggageWithoutSpanContext]),
];

// ---------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------

type Properties = Vec<(String, Option<String>)>;

/// One `cases.json` case. Unknown fields are an error, so a new kind of
/// expectation cannot be silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // provenance fields are declared for `deny_unknown_fields`; not all are read
struct BaggageCase {
    id: String,
    peer: String,
    source: String,
    commit: String,
    test: String,
    name: String,
    notes: Option<String>,
    headers: Vec<String>,
    expect: Option<BTreeMap<String, String>>,
    #[serde(default)]
    expect_error: bool,
    expect_properties: Option<BTreeMap<String, Properties>>,
    expect_metadata_raw: Option<BTreeMap<String, String>>,
    expect_count: Option<usize>,
    expect_keys: Option<Vec<String>>,
    expect_absent: Option<Vec<String>>,
    expect_subset: Option<BTreeMap<String, String>>,
    expect_reinjected_header: Option<String>,
    expect_serialized_len: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct LegacyCase {
    id: String,
    peer: String,
    source: String,
    commit: String,
    test: String,
    notes: Option<String>,
    format: String,
    headers: Vec<(String, String)>,
    expect: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct UnitCase {
    peer: String,
    source: String,
    commit: String,
    test: String,
    notes: Option<String>,
    kind: String,
    input: String,
    /// Absent, `null` (no property, no error) or `[name, value|null]`.
    #[serde(default, deserialize_with = "present")]
    expect_property: Option<Option<(String, Option<String>)>>,
    expect_decoded: Option<String>,
    #[serde(default)]
    expect_error: bool,
}

/// Tells a present `null` (`Some(None)`) from an absent field (`None`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

fn baggage_cases() -> Vec<BaggageCase> {
    serde_json::from_str(CASES_JSON).expect("cases.json")
}

fn legacy_cases() -> Vec<LegacyCase> {
    serde_json::from_str(LEGACY_JSON).expect("legacy_cases.json")
}

fn unit_cases() -> Vec<(String, UnitCase)> {
    let cases: Vec<UnitCase> = serde_json::from_str(UNIT_JSON).expect("unit_cases.json");
    cases
        .into_iter()
        .enumerate()
        .map(|(i, case)| (format!("unit-{:02}", i + 1), case))
        .collect()
}

// ---------------------------------------------------------------------------
// Running one case
// ---------------------------------------------------------------------------

/// The result of one case: what differs from the peer (empty: we agree).
struct Outcome {
    id: String,
    peer: String,
    /// Where the peer asserts it: `repo:path test`.
    origin: String,
    file: &'static str,
    mismatches: Vec<String>,
}

fn lines(headers: &[String]) -> Vec<&[u8]> {
    headers.iter().map(String::as_bytes).collect()
}

fn parse(headers: &[String]) -> Baggage {
    Baggage::parse(lines(headers))
}

fn value_map(baggage: &Baggage) -> BTreeMap<String, String> {
    baggage
        .members()
        .iter()
        .map(|m| (m.key.clone(), m.value.clone()))
        .collect()
}

fn property_list(properties: &[Property]) -> Properties {
    properties
        .iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect()
}

/// Our parsed form of a peer's opaque metadata text (`expect_metadata_raw`),
/// `None` if we would reject it.
fn parse_metadata(raw: &str) -> Option<Properties> {
    raw.split(';')
        .filter(|p| !p.trim_matches([' ', '\t']).is_empty())
        .map(|p| baggage::parse_property(p).map(|p| (p.name, p.value)))
        .collect()
}

/// Our canonical serialisation of the members we keep.
fn serialize(members: &[Member]) -> String {
    fn encode(out: &mut String, value: &str) {
        for &b in value.as_bytes() {
            let octet = matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E);
            if octet && b != b'%' {
                out.push(char::from(b));
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    let mut out = String::new();
    for (i, member) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&member.key);
        out.push('=');
        encode(&mut out, &member.value);
        for property in &member.properties {
            out.push(';');
            out.push_str(&property.name);
            if let Some(value) = &property.value {
                out.push('=');
                encode(&mut out, value);
            }
        }
    }
    out
}

/// `Debug` text, cut short: some cases carry 8 KiB values.
fn show(value: &impl std::fmt::Debug) -> String {
    let text = format!("{value:?}");
    match text.char_indices().nth(160) {
        Some((cut, _)) => format!("{}… ({} chars)", &text[..cut], text.chars().count()),
        None => text,
    }
}

fn run_baggage_case(case: &BaggageCase) -> Outcome {
    let ours = parse(&case.headers);
    let members = ours.members();
    let values = value_map(&ours);
    let keys: Vec<&str> = members.iter().map(|m| m.key.as_str()).collect();
    let mut mismatches = Vec::new();
    let mut compared = 0;
    let mut differ = |field: &str, peer: String, ours: String| {
        mismatches.push(format!("{field}: peer {peer}, ours {ours}"));
    };

    if let Some(expect) = &case.expect {
        compared += 1;
        if *expect != values {
            differ("expect", show(expect), show(&values));
        }
    }
    if let Some(expect) = &case.expect_properties {
        compared += 1;
        for (key, properties) in expect {
            let got = ours.get(key).map(|m| property_list(&m.properties));
            if got.as_ref() != Some(properties) {
                differ(
                    &format!("expect_properties[{key}]"),
                    show(properties),
                    show(&got),
                );
            }
        }
    }
    if let Some(expect) = &case.expect_metadata_raw {
        compared += 1;
        for (key, raw) in expect {
            let wanted = parse_metadata(raw);
            let got = ours.get(key).map(|m| property_list(&m.properties));
            if wanted.is_none() || got != wanted {
                differ(
                    &format!("expect_metadata_raw[{key}]"),
                    format!("{} (parsed: {})", show(raw), show(&wanted)),
                    show(&got),
                );
            }
        }
    }
    if let Some(count) = case.expect_count {
        compared += 1;
        if ours.len() != count {
            differ("expect_count", count.to_string(), ours.len().to_string());
        }
    }
    if let Some(expect) = &case.expect_keys {
        compared += 1;
        if !keys.starts_with(&expect.iter().map(String::as_str).collect::<Vec<_>>()) {
            differ("expect_keys", show(expect), show(&keys));
        }
    }
    if let Some(absent) = &case.expect_absent {
        compared += 1;
        let present: Vec<&String> = absent.iter().filter(|k| ours.get(k).is_some()).collect();
        if !present.is_empty() {
            differ(
                "expect_absent",
                show(absent),
                format!("kept {}", show(&present)),
            );
        }
    }
    if let Some(subset) = &case.expect_subset {
        compared += 1;
        for (key, value) in subset {
            let got = ours.get(key).map(|m| m.value.as_str());
            if got != Some(value.as_str()) {
                differ(&format!("expect_subset[{key}]"), show(value), show(&got));
            }
        }
    }
    if let Some(header) = &case.expect_reinjected_header {
        compared += 1;
        let theirs = Baggage::parse([header.as_bytes()]);
        if theirs.members() != members {
            differ(
                "expect_reinjected_header",
                format!("{} ({} members)", show(header), theirs.len()),
                format!("{} ({} members)", show(&serialize(members)), members.len()),
            );
        }
    }
    if let Some(len) = case.expect_serialized_len {
        compared += 1;
        let ours = serialize(members).len();
        if ours != len {
            differ("expect_serialized_len", len.to_string(), ours.to_string());
        }
    }
    if compared == 0 {
        mismatches.push("no expectation field that we compare".to_owned());
    }
    Outcome {
        id: case.id.clone(),
        peer: case.peer.clone(),
        origin: format!("{} {} ({})", case.source, case.test, case.name),
        file: "cases.json",
        mismatches,
    }
}

fn run_legacy_case(case: &LegacyCase) -> Outcome {
    let ours: BTreeMap<String, String> = legacy::items(&case.headers).into_iter().collect();
    let mut mismatches = Vec::new();
    if ours != case.expect {
        mismatches.push(format!(
            "expect: peer {}, ours {}",
            show(&case.expect),
            show(&ours)
        ));
    }
    Outcome {
        id: case.id.clone(),
        peer: case.peer.clone(),
        origin: format!("{} {}", case.source, case.test),
        file: "legacy_cases.json",
        mismatches,
    }
}

fn run_unit_case(id: &str, case: &UnitCase) -> Outcome {
    let mismatch = match case.kind.as_str() {
        "property" => {
            let ours = baggage::parse_property(&case.input).map(|p| (p.name, p.value));
            match (&case.expect_property, case.expect_error) {
                (Some(expected), false) if *expected == ours => None,
                (None, true) if ours.is_none() => None,
                (Some(expected), false) => Some(format!(
                    "expect_property: peer {}, ours {}",
                    show(expected),
                    show(&ours)
                )),
                (None, true) => Some(format!("expect_error: peer error, ours {}", show(&ours))),
                _ => Some("neither expect_property nor expect_error".to_owned()),
            }
        }
        "value_decode" => {
            let ours = baggage::decode_value(&case.input);
            match (&case.expect_decoded, case.expect_error) {
                (Some(expected), false) if Some(expected) == ours.as_ref() => None,
                (None, true) if ours.is_none() => None,
                (Some(expected), false) => Some(format!(
                    "expect_decoded: peer {}, ours {}",
                    show(expected),
                    show(&ours)
                )),
                (None, true) => Some(format!("expect_error: peer error, ours {}", show(&ours))),
                _ => Some("neither expect_decoded nor expect_error".to_owned()),
            }
        }
        other => Some(format!("unknown kind {other:?}")),
    };
    Outcome {
        id: id.to_owned(),
        peer: case.peer.clone(),
        origin: format!("{} {}", case.source, case.test),
        file: "unit_cases.json",
        mismatches: mismatch.into_iter().collect(),
    }
}

fn all_outcomes() -> Vec<Outcome> {
    let mut outcomes: Vec<Outcome> = baggage_cases().iter().map(run_baggage_case).collect();
    outcomes.extend(legacy_cases().iter().map(run_legacy_case));
    outcomes.extend(
        unit_cases()
            .iter()
            .map(|(id, case)| run_unit_case(id, case)),
    );
    outcomes
}

fn listed(id: &str) -> Option<&'static [Policy]> {
    DIFFERENCES
        .iter()
        .find(|(listed, _)| *listed == id)
        .map(|(_, policies)| *policies)
}

/// The agreement per peer (in corpus order), per file, and the listed
/// differences per policy point: printed by the test, quoted by the docs.
fn summary(outcomes: &[Outcome]) -> String {
    let mut peers: Vec<(&str, usize, usize)> = Vec::new();
    for outcome in outcomes {
        let agrees = usize::from(outcome.mismatches.is_empty());
        match peers.iter_mut().find(|(peer, _, _)| *peer == outcome.peer) {
            Some(entry) => {
                entry.1 += agrees;
                entry.2 += 1;
            }
            None => peers.push((&outcome.peer, agrees, 1)),
        }
    }
    let width = peers
        .iter()
        .map(|(peer, _, _)| peer.len())
        .max()
        .unwrap_or(0)
        + 1;
    let mut out = String::new();
    for (peer, agree, total) in &peers {
        let _ = writeln!(
            out,
            "{:<width$} {agree:>3}/{total:<3} agree",
            format!("{peer}:")
        );
    }
    for file in [
        "cases.json",
        "legacy_cases.json",
        "unit_cases.json",
        "total",
    ] {
        let of_file: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| file == "total" || o.file == file)
            .collect();
        let agree = of_file.iter().filter(|o| o.mismatches.is_empty()).count();
        let _ = writeln!(
            out,
            "{:<width$} {agree:>3}/{:<3} agree",
            format!("{file}:"),
            of_file.len()
        );
    }
    out.push('\n');
    for policy in Policy::ALL {
        let count = DIFFERENCES
            .iter()
            .filter(|(_, policies)| policies.contains(&policy))
            .count();
        let _ = writeln!(out, "{:<width$} {count:>3} listed", format!("{policy:?}:"));
    }
    out
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn the_corpus_is_complete_and_unchanged_in_size() {
    assert_eq!(baggage_cases().len(), 294);
    assert_eq!(legacy_cases().len(), 34);
    assert_eq!(unit_cases().len(), 12);
    let mut ids: Vec<String> = baggage_cases().into_iter().map(|c| c.id).collect();
    ids.extend(legacy_cases().into_iter().map(|c| c.id));
    let count = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), count, "duplicate case ids");
}

#[test]
fn the_differences_table_is_well_formed() {
    let outcomes = all_outcomes();
    for (i, (id, policies)) in DIFFERENCES.iter().enumerate() {
        assert!(
            outcomes.iter().any(|o| o.id == *id),
            "{id} is listed but not in the corpus"
        );
        assert!(
            !policies.is_empty(),
            "{id} is listed without a policy point"
        );
        assert!(
            !DIFFERENCES[..i].iter().any(|(earlier, _)| earlier == id),
            "{id} is listed twice"
        );
    }
}

#[test]
fn every_case_agrees_with_its_peer_or_is_a_listed_difference() {
    let outcomes = all_outcomes();
    let mut failures = Vec::new();
    for outcome in &outcomes {
        match (outcome.mismatches.is_empty(), listed(&outcome.id)) {
            (true, None) | (false, Some(_)) => {}
            (false, None) => failures.push(format!(
                "{} ({}, {}) differs and is not listed in DIFFERENCES:\n    {}",
                outcome.id,
                outcome.peer,
                outcome.origin,
                outcome.mismatches.join("\n    ")
            )),
            (true, Some(policies)) => failures.push(format!(
                "{} ({}) is listed under {policies:?} but agrees: remove it from DIFFERENCES",
                outcome.id, outcome.peer
            )),
        }
    }
    say!(
        "W3C baggage conformance, agreement per peer:\n{}",
        summary(&outcomes)
    );
    assert!(
        failures.is_empty(),
        "{} case(s) out of step with DIFFERENCES:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The text of the `## heading` section of the docs.
fn docs_section(heading: &str) -> Option<&'static str> {
    let start = DOCS.find(&format!("\n## {heading}\n"))? + 1;
    let rest = &DOCS[start..];
    Some(rest.find("\n## ").map_or(rest, |end| &rest[..end]))
}

/// The paragraph of a section that starts with `**label`, if any.
fn docs_paragraph<'a>(section: &'a str, label: &str) -> Option<&'a str> {
    let start = section.find(&format!("\n**{label}"))? + 1;
    let rest = &section[start..];
    Some(rest.find("\n\n**").map_or(rest, |end| &rest[..end]))
}

/// The case ids a text mentions, with ranges (`bg-040 to bg-043`) expanded.
fn ids_in(text: &str) -> Vec<String> {
    fn id(word: &str) -> Option<(&str, usize, usize)> {
        let (prefix, number) = word.rsplit_once('-')?;
        let known = ["bg", "legacy", "unit"].contains(&prefix);
        let digits = !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
        (known && digits).then(|| (prefix, number.parse().unwrap(), number.len()))
    }
    let words: Vec<&str> = text
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-'))
        .collect();
    let mut ids = Vec::new();
    let mut i = 0;
    while i < words.len() {
        if let Some((prefix, first, width)) = id(words[i]) {
            let last = match (words.get(i + 1), words.get(i + 2).and_then(|w| id(w))) {
                (Some(&"to"), Some((p, last, _))) if p == prefix && last >= first => {
                    i += 2;
                    last
                }
                _ => first,
            };
            ids.extend((first..=last).map(|n| format!("{prefix}-{n:0width$}")));
        }
        i += 1;
    }
    ids
}

#[test]
fn ids_in_expands_ranges() {
    assert_eq!(
        ids_in("Go (bg-040 to\nbg-042, unit-10). See legacy-009 to legacy-010."),
        [
            "bg-040",
            "bg-041",
            "bg-042",
            "unit-10",
            "legacy-009",
            "legacy-010"
        ]
    );
}

/// `docs/baggage.md` is kept in step with this test: it quotes the summary,
/// has a section per policy point, and each section's "Differ" paragraph
/// names exactly the cases listed under that point (plus, at most, cases
/// listed under another point that it points to), while every case named
/// in an "Agree" paragraph does agree.
#[test]
fn the_docs_quote_the_summary_and_name_the_differences_per_policy_point() {
    let outcomes = all_outcomes();
    let summary = summary(&outcomes);
    assert!(
        DOCS.contains(&summary),
        "docs/baggage.md does not quote the current summary:\n{summary}"
    );
    for policy in Policy::ALL {
        let heading = policy.heading();
        let section = docs_section(heading)
            .unwrap_or_else(|| panic!("docs/baggage.md has no section \"## {heading}\""));
        let named = docs_paragraph(section, "Differ")
            .map(ids_in)
            .unwrap_or_default();
        for (id, policies) in DIFFERENCES {
            if policies.contains(&policy) {
                assert!(
                    named.iter().any(|n| n == id),
                    "{id} differs under {policy:?} but \"## {heading}\" does not name it"
                );
            }
        }
        for id in &named {
            assert!(
                listed(id).is_some(),
                "\"## {heading}\" names {id} as a difference, but it agrees"
            );
        }
        for id in docs_paragraph(section, "Agree")
            .map(ids_in)
            .unwrap_or_default()
        {
            assert!(
                outcomes
                    .iter()
                    .any(|o| o.id == id && o.mismatches.is_empty()),
                "\"## {heading}\" names {id} as agreeing, but it does not (or does not exist)"
            );
        }
    }
}

#[test]
fn find_value_agrees_with_parse_on_every_case() {
    for case in baggage_cases() {
        let ours = parse(&case.headers);
        let mut keys: Vec<String> = ours.members().iter().map(|m| m.key.clone()).collect();
        let maps = [&case.expect, &case.expect_subset, &case.expect_metadata_raw];
        keys.extend(maps.into_iter().flatten().flat_map(|m| m.keys().cloned()));
        keys.extend(
            case.expect_properties
                .iter()
                .flat_map(|m| m.keys().cloned()),
        );
        let lists = [&case.expect_keys, &case.expect_absent];
        keys.extend(lists.into_iter().flatten().flatten().cloned());
        keys.push("sd-routing-key".to_owned());
        for key in keys {
            let found = baggage::find_value(lines(&case.headers), &key);
            assert_eq!(
                found.as_deref(),
                ours.get(&key).map(|m| m.value.as_str()),
                "{}: find_value({key:?})",
                case.id
            );
        }
    }
}

#[test]
fn the_router_reads_every_legacy_item_that_legacy_items_lists() {
    for case in legacy_cases() {
        for (key, value) in legacy::items(&case.headers) {
            if value.is_empty() {
                continue; // an empty value is "no key": the next carrier is tried
            }
            let carriers = KeyCarriers {
                baggage_keys: vec![key.clone().into()],
                ..KeyCarriers::default()
            };
            let found = carriers.extract(&case.headers);
            assert!(
                matches!(
                    &found,
                    Some(c) if c.value == value.as_str() && matches!(c.carrier, Carrier::Legacy(_))
                ),
                "{}: item {key:?}={value:?}, router read {found:?}",
                case.id
            );
        }
    }
}
