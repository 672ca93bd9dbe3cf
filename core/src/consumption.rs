//! Selective consumption: which consumer of a message queue processes a
//! message, so that a sandboxed request's asynchronous hop reaches the
//! sandbox's fork of the consumer and nothing else (INTERFACES section 5).
//!
//! A consumer knows its workload (the baseline service FQDN it is, or forks)
//! and its sandbox, if it is a fork. The rule:
//! - a baseline consumer processes a message unless its routing key belongs
//!   to a sandbox that forks this workload;
//! - the consumer of sandbox `S` processes a message only if its routing key
//!   is `S`'s and `S` forks this workload;
//! - a missing, invalid or unknown key is baseline's.
//!
//! Exactly one of the baseline consumer and the forks' consumers takes each
//! message, provided they decide from the same route table.
//!
//! They do not, for a moment, after a sandbox change: each consumer syncs
//! on its own. A consumer that has seen the change first would drop a
//! message the other one, still on the old table, drops too. So a
//! consumer keeps taking a key's messages for a grace after the key
//! stopped being its own ([`crate::handover`]): the fork after its
//! sandbox is deleted, the baseline after a sandbox forks it. Such a
//! message may then be processed twice, never by nobody
//! ([`Reason::Handover`]).

use std::fmt;

use crate::carrier::KeyCarriers;
use crate::route_table::{RouteTable, SandboxTarget};
use crate::routing_key;

/// Who is asking: a workload's baseline consumer or a sandbox's fork of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    /// FQDN of the baseline workload (`orders.shop.svc.cluster.local`).
    pub workload: String,
    /// `None` for the baseline consumer.
    pub sandbox: Option<String>,
}

/// Why a consumer processes a message or leaves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// No routing key in the message: baseline's.
    NoKey,
    /// A routing key that fails validation: baseline's.
    InvalidKey,
    /// No sandbox forks this workload for the key: baseline's.
    NotForked,
    /// Sandbox `0` forks this workload for the key: that sandbox's.
    ForkedBy(String),
    /// The table says `0`, which makes the message another consumer's,
    /// but the key was this consumer's until a moment ago: it keeps the
    /// message during the hand-over grace, in case the other consumer
    /// has not seen the change yet ([`crate::handover::Handover`]).
    Handover(Box<Reason>),
}

impl Reason {
    /// The stable machine-readable form (`no-key`, `forked-by:pr-42`, ...).
    pub fn code(&self) -> String {
        match self {
            Reason::NoKey => "no-key".to_owned(),
            Reason::InvalidKey => "invalid-key".to_owned(),
            Reason::NotForked => "not-forked".to_owned(),
            Reason::ForkedBy(sandbox) => format!("forked-by:{sandbox}"),
            Reason::Handover(now) => format!("handover:{}", now.code()),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code())
    }
}

/// Whether this consumer processes the message, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub process: bool,
    pub reason: Reason,
}

/// The routing key state of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKey<'a> {
    Missing,
    Invalid,
    Valid(&'a str),
}

impl<'a> MessageKey<'a> {
    /// Classifies a candidate value (already extracted from a carrier).
    pub fn classify(candidate: Option<&'a str>) -> Self {
        match candidate {
            None => MessageKey::Missing,
            Some(value) => match routing_key::validate(value) {
                Ok(key) => MessageKey::Valid(key),
                Err(_) => MessageKey::Invalid,
            },
        }
    }
}

/// Applies the rule, given who forks `consumer.workload` for the message's key.
pub fn decide(consumer: &Consumer, key: MessageKey<'_>, fork: Option<&SandboxTarget>) -> Verdict {
    let reason = match (key, fork) {
        (MessageKey::Missing, _) => Reason::NoKey,
        (MessageKey::Invalid, _) => Reason::InvalidKey,
        (MessageKey::Valid(_), None) => Reason::NotForked,
        (MessageKey::Valid(_), Some(target)) => Reason::ForkedBy(target.sandbox.clone()),
    };
    Verdict {
        process: reason.owner() == consumer.sandbox.as_deref(),
        reason,
    }
}

impl Reason {
    /// The owner the table names: the forking sandbox, or `None`
    /// (baseline's). For [`Reason::Handover`], the new owner.
    pub fn owner(&self) -> Option<&str> {
        match self {
            Reason::ForkedBy(sandbox) => Some(sandbox),
            Reason::Handover(now) => now.owner(),
            Reason::NoKey | Reason::InvalidKey | Reason::NotForked => None,
        }
    }
}

/// The whole rule for one message: extract the key from its headers (any
/// string map: Kafka headers, Redis Stream fields, AMQP properties), look
/// the workload up in `table`, decide.
pub fn decide_message<K, V>(
    consumer: &Consumer,
    carriers: &KeyCarriers,
    table: &RouteTable,
    headers: &[(K, V)],
) -> Verdict
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let candidate = carriers.extract(headers);
    let key = MessageKey::classify(candidate.as_ref().map(|c| c.value.as_ref()));
    let fork = match key {
        MessageKey::Valid(k) => table.lookup(k, &consumer.workload),
        _ => None,
    };
    decide(consumer, key, fork)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route_table::Route;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const ORDERS: &str = "orders.shop.svc.cluster.local";

    fn table() -> RouteTable {
        RouteTable::new(&[
            Route {
                routing_key: "pr-42".into(),
                sandbox: "pr-42".into(),
                baseline: ORDERS.into(),
                target: "orders-pr-42.shop.svc.cluster.local".into(),
            },
            Route {
                routing_key: "pr-7".into(),
                sandbox: "pr-7".into(),
                baseline: "billing.shop.svc.cluster.local".into(),
                target: "billing-pr-7.shop.svc.cluster.local".into(),
            },
        ])
        .unwrap()
    }

    fn consumer(sandbox: Option<&str>) -> Consumer {
        Consumer {
            workload: ORDERS.into(),
            sandbox: sandbox.map(str::to_owned),
        }
    }

    fn verdict(sandbox: Option<&str>, baggage: Option<&str>) -> (bool, String) {
        let headers: Vec<(&str, &str)> = baggage.map(|b| ("baggage", b)).into_iter().collect();
        let v = decide_message(
            &consumer(sandbox),
            &KeyCarriers::default(),
            &table(),
            &headers,
        );
        (v.process, v.reason.code())
    }

    #[test]
    fn exactly_one_consumer_takes_each_message() {
        let consumers = [None, Some("pr-42"), Some("pr-7"), Some("other")];
        let messages = [
            None,
            Some("sd-routing-key=pr-42"),
            Some("sd-routing-key=pr-7"),
            Some("sd-routing-key=unknown"),
            Some("sd-routing-key=bad%20key"),
            Some("x=1"),
        ];
        for message in messages {
            let takers: Vec<_> = consumers
                .iter()
                .filter(|c| verdict(**c, message).0)
                .collect();
            assert_eq!(takers.len(), 1, "{message:?} taken by {takers:?}");
        }
    }

    #[test]
    fn reasons() {
        assert_eq!(verdict(None, None), (true, "no-key".into()));
        assert_eq!(verdict(Some("pr-42"), None), (false, "no-key".into()));
        assert_eq!(
            verdict(None, Some("sd-routing-key=bad%20key")),
            (true, "invalid-key".into())
        );
        assert_eq!(
            verdict(None, Some("sd-routing-key=pr-7")),
            (true, "not-forked".into())
        );
        assert_eq!(
            verdict(Some("pr-7"), Some("sd-routing-key=pr-7")),
            (false, "not-forked".into())
        );
        assert_eq!(
            verdict(None, Some("sd-routing-key=pr-42")),
            (false, "forked-by:pr-42".into())
        );
        assert_eq!(
            verdict(Some("pr-42"), Some("sd-routing-key=pr-42")),
            (true, "forked-by:pr-42".into())
        );
        assert_eq!(
            verdict(Some("pr-7"), Some("sd-routing-key=pr-42")),
            (false, "forked-by:pr-42".into())
        );
    }

    #[test]
    fn legacy_carriers_work_in_messages_too() {
        let headers = [("uberctx-sd-routing-key", "pr-42")];
        let v = decide_message(
            &consumer(Some("pr-42")),
            &KeyCarriers::default(),
            &table(),
            &headers,
        );
        assert!(v.process);
    }
}
