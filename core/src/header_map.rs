//! A header map as the proxy-wasm host hands it over
//! (`proxy_get_header_map_pairs`): one buffer, read in place.
//!
//! The filter reads a request's headers with one host call, whatever the
//! configuration names: every value the host hands back costs about 9,000
//! Envoy instructions (the host allocates it inside the VM, a second entry
//! into V8), so one buffer with every header is cheaper than reading
//! `baggage`, the route header and the legacy carriers one by one
//! (docs/performance.md, "One read of the header map"). The SDK's own reader
//! copies each name and value into a `String` and a `Vec` (and panics on a
//! name that is not UTF-8); this one borrows them from the buffer.
//!
//! The serialization (proxy-wasm ABI, little endian): the number of headers
//! `n` as a `u32`; `n` pairs of `u32` (name length, value length); then
//! each name and each value in that order, each followed by a NUL byte.

/// Why a buffer is not a header map. The host always writes a well-formed
/// one; this is for the filter to treat anything else as no headers at all,
/// and say so, rather than read past what it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MalformedMap {
    /// The buffer ends before what its lengths announce.
    Truncated,
    /// A name or value is not followed by its NUL byte.
    MissingNul,
    /// Bytes are left after the last value.
    TrailingBytes,
}

impl std::fmt::Display for MalformedMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MalformedMap::Truncated => "the buffer ends before the lengths it announces",
            MalformedMap::MissingNul => "a name or value is not followed by a NUL byte",
            MalformedMap::TrailingBytes => "bytes follow the last value",
        })
    }
}

/// A header as read from the host's buffer: its name (lower case, as Envoy
/// holds it) and its value, both bytes borrowed from the buffer.
pub type Header<'b> = (&'b [u8], &'b [u8]);

/// The headers of `buffer` in the host's order, borrowed from it. An empty
/// buffer is an empty map (what the host answers for a map with no headers).
/// Names stay bytes: they are only compared with the names the filter looks
/// for (ASCII), so checking each for UTF-8 would be work for nothing (it
/// was a fifth of a no-key request's own work, docs/performance.md).
pub fn pairs(buffer: &[u8]) -> Result<Vec<Header<'_>>, MalformedMap> {
    if buffer.is_empty() {
        return Ok(Vec::new());
    }
    let count = word(buffer, 0)?;
    // Each header takes 8 bytes of lengths and at least 2 NULs: a count the
    // buffer cannot hold is refused before anything is reserved for it.
    if count > buffer.len().saturating_sub(4) / 10 {
        return Err(MalformedMap::Truncated);
    }
    let mut headers = Vec::with_capacity(count);
    let mut at = 4 + count * 8;
    for index in 0..count {
        let lengths = 4 + index * 8;
        let name_len = word(buffer, lengths)?;
        let value_len = word(buffer, lengths + 4)?;
        let name = field(buffer, &mut at, name_len)?;
        let value = field(buffer, &mut at, value_len)?;
        headers.push((name, value));
    }
    if at != buffer.len() {
        return Err(MalformedMap::TrailingBytes);
    }
    Ok(headers)
}

/// The little-endian `u32` at `at`.
fn word(buffer: &[u8], at: usize) -> Result<usize, MalformedMap> {
    let bytes: [u8; 4] = buffer
        .get(at..at.saturating_add(4))
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(MalformedMap::Truncated)?;
    usize::try_from(u32::from_le_bytes(bytes)).map_err(|_| MalformedMap::Truncated)
}

/// The `len` bytes at `*at`, which must be followed by a NUL; moves `*at`
/// past the NUL.
fn field<'b>(buffer: &'b [u8], at: &mut usize, len: usize) -> Result<&'b [u8], MalformedMap> {
    let end = at.checked_add(len).ok_or(MalformedMap::Truncated)?;
    let bytes = buffer.get(*at..end).ok_or(MalformedMap::Truncated)?;
    match buffer.get(end) {
        Some(0) => {}
        Some(_) => return Err(MalformedMap::MissingNul),
        None => return Err(MalformedMap::Truncated),
    }
    *at = end + 1;
    Ok(bytes)
}

/// The host's serialization of `headers`: how the filter hands the headers
/// of a `dispatch_http_call` to the host (and how tests and the fuzz target
/// build a map to read).
pub fn serialize<K: AsRef<[u8]>, V: AsRef<[u8]>>(headers: &[(K, V)]) -> Vec<u8> {
    let mut buffer = Vec::new();
    buffer.extend_from_slice(&len_of(headers.len()));
    for (name, value) in headers {
        buffer.extend_from_slice(&len_of(name.as_ref().len()));
        buffer.extend_from_slice(&len_of(value.as_ref().len()));
    }
    for (name, value) in headers {
        buffer.extend_from_slice(name.as_ref());
        buffer.push(0);
        buffer.extend_from_slice(value.as_ref());
        buffer.push(0);
    }
    buffer
}

/// A count or length as the serialization's `u32`.
fn len_of(count: usize) -> [u8; 4] {
    u32::try_from(count).unwrap_or(u32::MAX).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_host_writes() {
        let headers: [(&[u8], &[u8]); 4] = [
            (b":authority", b"catalog.demo.svc.cluster.local"),
            (b"baggage", b"sd-routing-key=pr-42"),
            (b"baggage", b""),
            (b"x-binary", b"\xff\x00\x01"),
        ];
        let buffer = serialize(&headers);
        assert_eq!(pairs(&buffer), Ok(headers.to_vec()));
    }

    #[test]
    fn an_empty_buffer_or_count_is_an_empty_map() {
        assert_eq!(pairs(&[]), Ok(Vec::new()));
        assert_eq!(pairs(&0u32.to_le_bytes()), Ok(Vec::new()));
    }

    #[test]
    fn a_name_that_is_not_utf8_is_kept_as_it_is_and_matches_nothing() {
        let headers: [(&[u8], &[u8]); 2] = [(b"\xffx", b"1"), (b"baggage", b"k=v")];
        let buffer = serialize(&headers);
        let read = pairs(&buffer);
        assert_eq!(read, Ok(headers.to_vec()));
        let read = read.unwrap_or_default();
        let carriers = crate::carrier::KeyCarriers::default();
        assert_eq!(carriers.extract(&read), None);
    }

    #[test]
    fn malformed_buffers_are_refused() {
        let buffer = serialize(&[("baggage", "k=v")]);
        // Every truncation.
        for end in 1..buffer.len() {
            let truncated = buffer.get(..end).unwrap_or_default();
            assert!(pairs(truncated).is_err(), "{end} of {} bytes", buffer.len());
        }
        let mut extra = buffer.clone();
        extra.push(0);
        assert_eq!(pairs(&extra), Err(MalformedMap::TrailingBytes));
        let mut no_nul = buffer.clone();
        if let Some(last) = no_nul.last_mut() {
            *last = b'x';
        }
        assert_eq!(pairs(&no_nul), Err(MalformedMap::MissingNul));
        // A count no buffer of this size can hold: refused, nothing reserved.
        let mut huge = buffer;
        huge.splice(0..4, u32::MAX.to_le_bytes());
        assert_eq!(pairs(&huge), Err(MalformedMap::Truncated));
        // Lengths that overflow.
        let mut long = serialize(&[("a", "b")]);
        long.splice(4..8, u32::MAX.to_le_bytes());
        assert_eq!(pairs(&long), Err(MalformedMap::Truncated));
    }
}
