//! What flows through the system: the test's messages, their routing keys,
//! and the producer's view of who should process each.
//!
//! Every message is one HTTP request to the producer, carrying a `baggage`
//! header (or none) and test tags (`x-test-*`); the producer copies both
//! into a stream entry, and the relay copies them back into HTTP headers.
//! The tags are the ground truth the analysis compares against; the
//! consumers and the filter never read them.

use std::collections::HashMap;

/// The workload the messages are for (consumer group and push target).
pub const WORKLOAD: &str = "orders-worker";
/// The producer's service.
pub const PRODUCER: &str = "orders-api";
/// The namespace of every service of the flows.
pub const NAMESPACE: &str = "shop";
/// The sandbox created and deleted in the middle of a run (its routing key
/// is its name); it forks [`WORKLOAD`].
pub const SANDBOX: &str = "pr-42";
/// A sandbox that exists throughout and forks another service only.
pub const OTHER_SANDBOX: &str = "pr-7";
/// The service [`OTHER_SANDBOX`] forks.
pub const OTHER_SERVICE: &str = "billing";

/// `<service>.shop.svc.cluster.local`.
pub fn fqdn(service: &str) -> String {
    format!("{service}.{NAMESPACE}.svc.cluster.local")
}

/// The kinds of routing key a message carries, in equal shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// No baggage at all, or baggage without the routing key.
    NoKey,
    /// [`SANDBOX`]'s key: the only kind whose owner changes during a run.
    Sandbox,
    /// [`OTHER_SANDBOX`]'s key: a sandbox, but not of this workload.
    OtherSandbox,
    /// A valid key no sandbox has.
    Unknown,
    /// A value that fails key validation.
    Invalid,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::NoKey,
        Kind::Sandbox,
        Kind::OtherSandbox,
        Kind::Unknown,
        Kind::Invalid,
    ];

    /// The kind of message number `seq`: the kinds in turn.
    pub fn of(seq: u64) -> Kind {
        match seq % 5 {
            0 => Kind::NoKey,
            1 => Kind::Sandbox,
            2 => Kind::OtherSandbox,
            3 => Kind::Unknown,
            _ => Kind::Invalid,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::NoKey => "no-key",
            Kind::Sandbox => "sandbox",
            Kind::OtherSandbox => "other-sandbox",
            Kind::Unknown => "unknown",
            Kind::Invalid => "invalid",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The `baggage` header of message `seq`, in a few shapes (other
    /// members, properties, several unknown keys).
    pub fn baggage(self, seq: u64) -> Option<String> {
        let variant = (seq / 5) % 3;
        match (self, variant) {
            (Kind::NoKey, 0) => None,
            (Kind::NoKey, _) => Some(format!("userId={seq},tenant=acme")),
            (Kind::Sandbox, 0) => Some(format!("sd-routing-key={SANDBOX}")),
            (Kind::Sandbox, _) => Some(format!("userId={seq},sd-routing-key={SANDBOX};ttl=30")),
            (Kind::OtherSandbox, _) => Some(format!("sd-routing-key={OTHER_SANDBOX}")),
            (Kind::Unknown, _) => Some(format!("sd-routing-key=pr-gone-{variant}")),
            (Kind::Invalid, 0) => Some("sd-routing-key=bad%20key".to_owned()),
            (Kind::Invalid, _) => Some("sd-routing-key=a%2Fb,userId=1".to_owned()),
        }
    }

    /// The reason every consumer must give for this kind, except
    /// [`Kind::Sandbox`] (whose reason depends on the table).
    pub fn fixed_reason(self) -> Option<&'static str> {
        match self {
            Kind::NoKey => Some("no-key"),
            Kind::Invalid => Some("invalid-key"),
            Kind::OtherSandbox | Kind::Unknown => Some("not-forked"),
            Kind::Sandbox => None,
        }
    }
}

/// Who processes a message: the baseline consumer or [`SANDBOX`]'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    Baseline,
    Sandbox,
}

impl Owner {
    pub fn name(self) -> &'static str {
        match self {
            Owner::Baseline => "baseline",
            Owner::Sandbox => SANDBOX,
        }
    }

    pub fn parse(name: &str) -> Option<Owner> {
        [Owner::Baseline, Owner::Sandbox]
            .into_iter()
            .find(|o| o.name() == name)
    }

    /// The owner of a message of `kind` while the sandbox does or does not exist.
    pub fn expected(kind: Kind, sandbox_exists: bool) -> Owner {
        if kind == Kind::Sandbox && sandbox_exists {
            Owner::Sandbox
        } else {
            Owner::Baseline
        }
    }
}

/// The test tags of one message, as request headers and stream fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tags {
    pub seq: u64,
    pub kind: Kind,
    /// The producer's view: the owner when the message was produced.
    pub expected: Owner,
    /// Index of the run phase it was produced in.
    pub phase: usize,
}

/// Header names of the tags (the stream fields drop the `x-` prefix).
pub const SEQ: &str = "x-test-seq";
pub const KIND: &str = "x-test-kind";
pub const EXPECTED: &str = "x-test-expected";
pub const PHASE: &str = "x-test-phase";
pub const TAG_HEADERS: [&str; 4] = [SEQ, KIND, EXPECTED, PHASE];

impl Tags {
    /// `(header, value)` pairs.
    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            (SEQ, self.seq.to_string()),
            (KIND, self.kind.name().to_owned()),
            (EXPECTED, self.expected.name().to_owned()),
            (PHASE, self.phase.to_string()),
        ]
    }

    /// Reads the tags back from headers or stream fields (names with or
    /// without the `x-` prefix).
    pub fn parse(fields: &HashMap<String, Vec<u8>>) -> Result<Tags, String> {
        let get = |name: &str| {
            let bare = name.trim_start_matches("x-");
            fields
                .get(name)
                .or_else(|| fields.get(bare))
                .and_then(|v| std::str::from_utf8(v).ok())
                .ok_or_else(|| format!("no {name}"))
        };
        Ok(Tags {
            seq: get(SEQ)?.parse().map_err(|e| format!("{SEQ}: {e}"))?,
            kind: Kind::parse(get(KIND)?).ok_or_else(|| format!("{KIND}: unknown"))?,
            expected: Owner::parse(get(EXPECTED)?).ok_or_else(|| format!("{EXPECTED}: unknown"))?,
            phase: get(PHASE)?.parse().map_err(|e| format!("{PHASE}: {e}"))?,
        })
    }
}

/// The stream field name of a tag header: `x-test-seq` → `test-seq`.
pub fn field_name(header: &str) -> &str {
    header.trim_start_matches("x-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_through_headers_and_fields() {
        let tags = Tags {
            seq: 12,
            kind: Kind::Sandbox,
            expected: Owner::Sandbox,
            phase: 1,
        };
        let as_headers: HashMap<String, Vec<u8>> = tags
            .headers()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into_bytes()))
            .collect();
        assert_eq!(Tags::parse(&as_headers).unwrap(), tags);
        let as_fields: HashMap<String, Vec<u8>> = tags
            .headers()
            .into_iter()
            .map(|(k, v)| (field_name(k).to_owned(), v.into_bytes()))
            .collect();
        assert_eq!(Tags::parse(&as_fields).unwrap(), tags);
    }

    #[test]
    fn kinds_take_turns_and_only_the_sandbox_key_moves() {
        let kinds: Vec<Kind> = (0..5).map(Kind::of).collect();
        assert_eq!(kinds, Kind::ALL);
        for kind in Kind::ALL {
            assert_eq!(kind.fixed_reason().is_none(), kind == Kind::Sandbox);
            assert_eq!(Kind::parse(kind.name()), Some(kind));
        }
        assert_eq!(Owner::expected(Kind::Sandbox, true), Owner::Sandbox);
        assert_eq!(Owner::expected(Kind::Unknown, true), Owner::Baseline);
        assert_eq!(
            Kind::of(5).baggage(5).as_deref(),
            Some("userId=5,tenant=acme")
        );
    }
}
