//! Producers: put the current context's W3C `baggage` on a message, as
//! OpenTelemetry's messaging instrumentations do (`TextMapPropagator::inject`
//! into the broker's header map), so the routing key rides along to every
//! consumer.
//!
//! In a service without an OpenTelemetry SDK, the "current baggage" is the
//! `baggage` of the request being handled: [`inject_baggage`] takes its
//! header lines, combines them into one list as HTTP does (RFC 9110: lines
//! of a list-valued header joined with `,`) and sets the message's
//! `baggage` header through an [`Injector`]. Each broker module implements
//! [`Injector`] for its client's header type (Kafka `OwnedHeaders`, AMQP
//! `FieldTable`, NATS `HeaderMap`, Redis Stream fields).
//!
//! ```
//! use sandbox_router_consumer::propagation::inject_baggage;
//!
//! // The `baggage` lines of the incoming request:
//! let lines: [&[u8]; 2] = [b"sd-routing-key=pr-42", b"userId=7"];
//! let mut fields: Vec<(String, Vec<u8>)> = Vec::new();
//! assert!(inject_baggage(lines, &mut fields));
//! assert_eq!(fields, [("baggage".to_owned(), b"sd-routing-key=pr-42,userId=7".to_vec())]);
//! ```

use std::collections::HashMap;

/// The header every carrier of the W3C context uses.
pub const BAGGAGE: &str = "baggage";

/// W3C Baggage's limit on a whole `baggage` value; a longer one is not
/// propagated (receivers may drop it anyway).
pub const MAX_BAGGAGE_BYTES: usize = 8192;

/// A broker's header map, seen as OpenTelemetry's `Injector`: set one
/// text header.
pub trait Injector {
    fn set(&mut self, key: &str, value: String);
}

/// Stream fields, or any list of byte-valued headers.
impl Injector for Vec<(String, Vec<u8>)> {
    fn set(&mut self, key: &str, value: String) {
        self.retain(|(name, _)| !name.eq_ignore_ascii_case(key));
        self.push((key.to_owned(), value.into_bytes()));
    }
}

/// SQS or Pub/Sub attributes, or any string map.
impl Injector for HashMap<String, String> {
    fn set(&mut self, key: &str, value: String) {
        self.insert(key.to_owned(), value);
    }
}

/// The one `baggage` value of a request's `baggage` header lines: the
/// non-empty lines joined with `,`. `None` when there is nothing to carry,
/// a line is not text (W3C baggage is ASCII), or the whole is over
/// [`MAX_BAGGAGE_BYTES`].
pub fn combined_baggage<'a, I>(lines: I) -> Option<String>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut combined = String::new();
    for line in lines {
        let text = std::str::from_utf8(line).ok()?.trim();
        if text.is_empty() {
            continue;
        }
        if !combined.is_empty() {
            combined.push(',');
        }
        combined.push_str(text);
    }
    (!combined.is_empty() && combined.len() <= MAX_BAGGAGE_BYTES).then_some(combined)
}

/// Sets the message's `baggage` header from the request's `baggage` lines
/// (see [`combined_baggage`]). Returns whether a header was set; a message
/// without baggage simply has none (it is baseline's).
pub fn inject_baggage<'a, I, J>(lines: I, injector: &mut J) -> bool
where
    I: IntoIterator<Item = &'a [u8]>,
    J: Injector + ?Sized,
{
    match combined_baggage(lines) {
        Some(value) => {
            injector.set(BAGGAGE, value);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_one_list_and_empty_ones_carry_nothing() {
        let lines: [&[u8]; 3] = [b" a=1 ", b"", b"sd-routing-key=pr-42;ttl=3"];
        assert_eq!(
            combined_baggage(lines).as_deref(),
            Some("a=1,sd-routing-key=pr-42;ttl=3")
        );
        let none: [&[u8]; 1] = [b"  "];
        assert_eq!(combined_baggage(none), None);
        let binary: [&[u8]; 1] = [b"\xff"];
        assert_eq!(combined_baggage(binary), None);
        let long = vec![b'a'; MAX_BAGGAGE_BYTES + 1];
        assert_eq!(combined_baggage([long.as_slice()]), None);
    }

    #[test]
    fn injecting_replaces_a_baggage_header_already_there() {
        let mut fields = vec![("Baggage".to_owned(), b"old=1".to_vec())];
        assert!(inject_baggage([&b"new=2"[..]], &mut fields));
        assert_eq!(fields, [("baggage".to_owned(), b"new=2".to_vec())]);
        let mut attributes = HashMap::new();
        assert!(!inject_baggage(std::iter::empty(), &mut attributes));
        assert!(attributes.is_empty());
    }

    #[test]
    fn what_is_injected_is_what_the_consumer_reads() {
        let carriers = sandbox_router_core::carrier::KeyCarriers::default();
        let mut fields: Vec<(String, Vec<u8>)> = Vec::new();
        inject_baggage([&b"userId=1"[..], b"sd-routing-key=pr-42"], &mut fields);
        let found = carriers.extract(&fields).map(|c| c.value.into_owned());
        assert_eq!(found.as_deref(), Some("pr-42"));
    }
}
