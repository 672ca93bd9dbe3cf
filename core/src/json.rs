//! The JSON reader of the filter: the plugin configuration and the
//! RouteService's answers, read the way `serde_json` reads them (same
//! grammar, same limits, shapes read as their serde derives read them), in
//! a fraction of its size in the `.wasm`.
//!
//! Why not `serde_json` itself: its error type formats a float whenever a
//! value has the wrong type (`<f64 as Display>` and its tables, ~17 KB of a
//! ~300 KB filter, for values no field of ours can hold), its `Value` is a
//! `BTreeMap`, and its parser is generic over readers we do not use. What
//! this module keeps from it, so that no configuration or answer is read
//! differently:
//!
//! - the grammar (RFC 8259), string escapes including surrogate pairs, a
//!   nesting limit of 128, numbers as `u64`, negative `i64` or else float,
//!   floats beyond `f64`'s range refused ("number out of range");
//! - [`Value`]: an object keeps the *last* of duplicate keys and iterates
//!   its keys in byte order, as `serde_json::Value` (a `BTreeMap`) does, so
//!   the configuration reports the same first error;
//! - [`from_value`]: the serde data model as `serde_json`'s `&Value`
//!   deserializer drives it (structs from maps or arrays, enums from a
//!   string or a one-key map), and its messages ("invalid type: integer
//!   `7`, expected a string"); the reference for [`At`];
//! - [`At`]: a [`Value`] read by code that knows its shape, with the
//!   answers and messages serde's derives give through [`from_value`]; the
//!   configuration is read through it (`config::read`);
//! - [`Pull`]: a document read as it streams by code that knows its shape,
//!   the way serde's derives read it through `serde_json::from_slice`
//!   (ignored values skipped without validating their UTF-8, "trailing
//!   characters at line 1 column 4"); the RouteService's answers are read
//!   through it, a full table straight into the index.
//!
//! One difference in messages: a float is quoted as written (`1e2`), where
//! `serde_json` printed it re-formatted (`100.0`).
//!
//! [`from_value`] and [`At`] also say where an error is
//! (`routes[3].target`), so the configuration names the field without a
//! second pass.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Unexpected, Visitor};

/// How deep arrays and objects may nest (`serde_json`'s limit).
const MAX_DEPTH: usize = 128;

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
    /// Line and column (1-based) in the document, for errors of the text.
    position: Option<(usize, usize)>,
    /// Where in a [`Value`] the error is, for [`from_value`].
    path: Option<String>,
}

impl Error {
    /// The message without its position.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where in the value the error is (`routeService.timeoutMs`,
    /// `routes[3].x`), or `.` for the value as a whole.
    pub fn path(&self) -> &str {
        self.path.as_deref().unwrap_or(".")
    }

    #[inline(never)]
    fn at_path(mut self, path: &Path<'_>) -> Self {
        if self.path.is_none() {
            self.path = Some(path.to_string());
        }
        self
    }

    /// `invalid type: <what>, expected <exp>` with `what` already written.
    #[inline(never)]
    fn invalid_type_text(what: &str, exp: &dyn de::Expected) -> Self {
        de::Error::custom(format_args!("invalid type: {what}, expected {exp}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => {
                write!(f, "{} at line {line} column {column}", self.message)
            }
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(message: T) -> Self {
        Error {
            message: message.to_string(),
            position: None,
            path: None,
        }
    }

    // serde's own versions format `Unexpected` with its `Display`, which
    // holds `f64` formatting; ours writes it by hand.
    #[inline(never)]
    fn invalid_type(unexpected: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Error::invalid_type_text(&describe(unexpected), exp)
    }

    #[inline(never)]
    fn invalid_value(unexpected: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        de::Error::custom(format_args!(
            "invalid value: {}, expected {exp}",
            describe(unexpected)
        ))
    }
}

/// serde's wording of an unexpected value (`serde_json`'s for null), with a
/// float named, not printed: we never hand a visitor a float (see
/// [`Number::Float`]), so none reaches a message through here.
fn describe(unexpected: Unexpected<'_>) -> String {
    match unexpected {
        Unexpected::Bool(b) => format!("boolean `{b}`"),
        Unexpected::Unsigned(n) => format!("integer `{n}`"),
        Unexpected::Signed(n) => format!("integer `{n}`"),
        Unexpected::Float(_) => "floating point number".to_owned(),
        Unexpected::Char(c) => format!("character `{c}`"),
        Unexpected::Str(s) => format!("string {}", quoted(s)),
        Unexpected::Bytes(_) => "byte array".to_owned(),
        Unexpected::Unit => "null".to_owned(),
        Unexpected::Option => "Option value".to_owned(),
        Unexpected::NewtypeStruct => "newtype struct".to_owned(),
        Unexpected::Seq => "sequence".to_owned(),
        Unexpected::Map => "map".to_owned(),
        Unexpected::Enum => "enum".to_owned(),
        Unexpected::UnitVariant => "unit variant".to_owned(),
        Unexpected::NewtypeVariant => "newtype variant".to_owned(),
        Unexpected::TupleVariant => "tuple variant".to_owned(),
        Unexpected::StructVariant => "struct variant".to_owned(),
        Unexpected::Other(other) => other.to_owned(),
    }
}

/// `s` in double quotes with quotes, backslashes and control characters
/// escaped, as `{:?}` writes ASCII (a string from the network goes into a
/// log line: no raw newline). Other characters are written as they are,
/// which keeps `char::escape_debug`'s Unicode tables out of the `.wasm`.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if c.is_ascii_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

// ---------------------------------------------------------------- the text

/// A JSON number as `serde_json` classifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Number {
    /// A non-negative integer that fits `u64`.
    U64(u64),
    /// A negative integer that fits `i64`.
    I64(i64),
    /// Anything else (a fraction, an exponent, `-0`, a larger integer), as
    /// written. No field of ours takes one, so it is kept as text and never
    /// converted (which would bring float parsing into the `.wasm`).
    Float(String),
}

/// The bytes of a document and where the reader is.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader {
            bytes,
            pos: 0,
            depth: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Skips whitespace; the next byte, not consumed.
    fn skip_ws(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
        self.peek()
    }

    /// Line and column after the first `consumed` bytes, as `serde_json`
    /// counts them (the column is the bytes of the line up to there).
    fn position_at(&self, consumed: usize) -> (usize, usize) {
        let upto = self.bytes.get(..consumed).unwrap_or(self.bytes);
        let line = 1 + upto.iter().filter(|&&b| b == b'\n').count();
        let line_start = upto
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |newline| newline + 1);
        (line, consumed - line_start)
    }

    fn position(&self) -> (usize, usize) {
        self.position_at(self.pos)
    }

    /// An error found at what was just consumed.
    fn error(&self, message: &str) -> Error {
        Error {
            message: message.to_owned(),
            position: Some(self.position()),
            path: None,
        }
    }

    /// An error found at the next byte, not consumed.
    fn peek_error(&self, message: &str) -> Error {
        Error {
            message: message.to_owned(),
            position: Some(self.position_at((self.pos + 1).min(self.bytes.len()))),
            path: None,
        }
    }

    /// Consumes `byte` (after whitespace) or fails with `message` (`eof`
    /// at the end).
    fn expect(&mut self, byte: u8, message: &str, eof: &str) -> Result<()> {
        match self.skip_ws() {
            Some(b) if b == byte => {
                self.pos += 1;
                Ok(())
            }
            Some(_) => Err(self.peek_error(message)),
            None => Err(self.error(eof)),
        }
    }

    /// The rest of `null`, `true` or `false` after its first byte.
    fn literal(&mut self, rest: &[u8]) -> Result<()> {
        for &want in rest {
            match self.peek() {
                Some(b) if b == want => self.pos += 1,
                Some(_) => {
                    self.pos += 1;
                    return Err(self.error("expected ident"));
                }
                None => return Err(self.error("EOF while parsing a value")),
            }
        }
        Ok(())
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth >= MAX_DEPTH {
            return Err(self.error("recursion limit exceeded"));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// A string, the reader just past its opening quote. Borrowed from the
    /// document unless it has escapes.
    fn string(&mut self) -> Result<Cow<'a, str>> {
        let start = self.pos;
        let mut owned: Option<Vec<u8>> = None;
        let mut run = start;
        loop {
            let Some(b) = self.peek() else {
                return Err(self.error("EOF while parsing a string"));
            };
            match b {
                b'"' => {
                    let tail = self.bytes.get(run..self.pos).unwrap_or_default();
                    self.pos += 1;
                    return match owned {
                        None => std::str::from_utf8(tail)
                            .map(Cow::Borrowed)
                            .map_err(|_| self.error("invalid unicode code point")),
                        Some(mut buf) => {
                            buf.extend_from_slice(tail);
                            String::from_utf8(buf)
                                .map(Cow::Owned)
                                .map_err(|_| self.error("invalid unicode code point"))
                        }
                    };
                }
                b'\\' => {
                    let buf = owned.get_or_insert_with(Vec::new);
                    buf.extend_from_slice(self.bytes.get(run..self.pos).unwrap_or_default());
                    self.pos += 1;
                    self.escape(Some(buf))?;
                    run = self.pos;
                }
                0..=0x1f => {
                    self.pos += 1;
                    return Err(self.error(
                        "control character (\\u0000-\\u001F) found while parsing a string",
                    ));
                }
                _ => self.pos += 1,
            }
        }
    }

    /// Skips a string whose value is not wanted: its escapes are checked,
    /// its UTF-8 and surrogates are not (as `serde_json` ignores a value).
    fn skip_string(&mut self) -> Result<()> {
        loop {
            let Some(b) = self.peek() else {
                return Err(self.error("EOF while parsing a string"));
            };
            self.pos += 1;
            match b {
                b'"' => return Ok(()),
                b'\\' => self.escape(None)?,
                0..=0x1f => {
                    return Err(self
                        .error("control character (\\u0000-\\u001F) found while parsing a string"))
                }
                _ => {}
            }
        }
    }

    /// One escape, the reader just past its backslash; its character is
    /// appended to `out`, or only checked when `out` is `None`.
    fn escape(&mut self, out: Option<&mut Vec<u8>>) -> Result<()> {
        let Some(b) = self.peek() else {
            return Err(self.error("EOF while parsing a string"));
        };
        self.pos += 1;
        let simple = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let unit = self.hex4()?;
                let Some(out) = out else { return Ok(()) };
                let code = match unit {
                    0xdc00..=0xdfff => {
                        return Err(self.error("lone leading surrogate in hex escape"))
                    }
                    0xd800..=0xdbff => {
                        if self.peek() != Some(b'\\') {
                            self.pos += 1;
                            return Err(self.error("unexpected end of hex escape"));
                        }
                        self.pos += 1;
                        if self.peek() != Some(b'u') {
                            self.pos += 1;
                            return Err(self.error("unexpected end of hex escape"));
                        }
                        self.pos += 1;
                        let low = self.hex4()?;
                        if !(0xdc00..=0xdfff).contains(&low) {
                            return Err(self.error("lone leading surrogate in hex escape"));
                        }
                        (((unit - 0xd800) << 10) | (low - 0xdc00)) + 0x1_0000
                    }
                    unit => unit,
                };
                let c =
                    char::from_u32(code).ok_or_else(|| self.error("invalid unicode code point"))?;
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                return Ok(());
            }
            _ => return Err(self.error("invalid escape")),
        };
        if let Some(out) = out {
            out.push(simple);
        }
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32> {
        if self.bytes.len().saturating_sub(self.pos) < 4 {
            self.pos = self.bytes.len();
            return Err(self.error("EOF while parsing a string"));
        }
        let mut unit = 0;
        for _ in 0..4 {
            let Some(b) = self.peek() else {
                return Err(self.error("EOF while parsing a string"));
            };
            self.pos += 1;
            let digit = char::from(b)
                .to_digit(16)
                .ok_or_else(|| self.error("invalid escape"))?;
            unit = unit * 16 + digit;
        }
        Ok(unit)
    }

    /// Skips the digits at the reader; whether there was one.
    fn digits(&mut self) -> bool {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos > start
    }

    /// Checks the grammar of a number at the reader and consumes it: its
    /// text, and whether it is an integer.
    fn scan_number(&mut self) -> Result<(&'a str, bool)> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.peek_error("invalid number"));
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            Some(_) => {
                self.pos += 1;
                return Err(self.error("invalid number"));
            }
            None => return Err(self.error("EOF while parsing a value")),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            integer = false;
            if !self.digits() {
                return Err(self.number_end_error());
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !self.digits() {
                return Err(self.number_end_error());
            }
        }
        let text = self.bytes.get(start..self.pos).unwrap_or_default();
        // Digits, signs, `.` and `e` only: always UTF-8.
        let text = std::str::from_utf8(text).map_err(|_| self.error("invalid number"))?;
        Ok((text, integer))
    }

    fn number_end_error(&self) -> Error {
        if self.peek().is_none() {
            self.error("EOF while parsing a value")
        } else {
            self.peek_error("invalid number")
        }
    }

    /// A number, classified as `serde_json` does.
    fn number(&mut self) -> Result<Number> {
        let (text, integer) = self.scan_number()?;
        if integer {
            let (negative, digits) = match text.strip_prefix('-') {
                Some(digits) => (true, digits),
                None => (false, text),
            };
            let magnitude = digits.bytes().try_fold(0u64, |n, b| {
                n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
            });
            match (negative, magnitude) {
                (false, Some(n)) => return Ok(Number::U64(n)),
                // -1 ..= -2^63; `-0` is a float in serde_json.
                (true, Some(n)) if (1..=1 << 63).contains(&n) => {
                    return Ok(Number::I64((n as i64).wrapping_neg()))
                }
                _ => {}
            }
        }
        if beyond_f64(text) {
            return Err(self.error("number out of range"));
        }
        Ok(Number::Float(text.to_owned()))
    }

    /// Skips one value whatever it holds (no nesting limit: iterative),
    /// checking its grammar as `serde_json` does for an ignored value.
    fn skip_value(&mut self) -> Result<()> {
        // The open brackets, innermost last.
        let mut open: Vec<u8> = Vec::new();
        loop {
            // A value.
            match self.skip_ws() {
                Some(b'n') => {
                    self.pos += 1;
                    self.literal(b"ull")?;
                }
                Some(b't') => {
                    self.pos += 1;
                    self.literal(b"rue")?;
                }
                Some(b'f') => {
                    self.pos += 1;
                    self.literal(b"alse")?;
                }
                Some(b'"') => {
                    self.pos += 1;
                    self.skip_string()?;
                }
                Some(b'-' | b'0'..=b'9') => {
                    self.scan_number()?;
                }
                Some(b'[') => {
                    self.pos += 1;
                    if self.skip_ws() == Some(b']') {
                        self.pos += 1;
                    } else {
                        open.push(b']');
                        continue;
                    }
                }
                Some(b'{') => {
                    self.pos += 1;
                    match self.skip_ws() {
                        Some(b'}') => self.pos += 1,
                        _ => {
                            self.skip_key()?;
                            open.push(b'}');
                            continue;
                        }
                    }
                }
                Some(_) => return Err(self.peek_error("expected value")),
                None => return Err(self.error("EOF while parsing a value")),
            }
            // After a value: close what ends here, or go on to the next.
            loop {
                let Some(&close) = open.last() else {
                    return Ok(());
                };
                let eof = if close == b']' {
                    "EOF while parsing a list"
                } else {
                    "EOF while parsing an object"
                };
                match self.skip_ws() {
                    Some(b',') => {
                        self.pos += 1;
                        if close == b'}' {
                            if self.skip_ws() == Some(b'}') {
                                return Err(self.peek_error("trailing comma"));
                            }
                            self.skip_key()?;
                        } else if self.skip_ws() == Some(b']') {
                            return Err(self.peek_error("trailing comma"));
                        }
                        break;
                    }
                    Some(b) if b == close => {
                        self.pos += 1;
                        open.pop();
                    }
                    Some(_) if close == b']' => return Err(self.peek_error("expected `,` or `]`")),
                    Some(_) => return Err(self.peek_error("expected `,` or `}`")),
                    None => return Err(self.error(eof)),
                }
            }
        }
    }

    /// An object's key and its `:`, skipped.
    fn skip_key(&mut self) -> Result<()> {
        match self.skip_ws() {
            Some(b'"') => {
                self.pos += 1;
                self.skip_string()?;
            }
            Some(_) => return Err(self.peek_error("key must be a string")),
            None => return Err(self.error("EOF while parsing a value")),
        }
        self.expect(b':', "expected `:`", "EOF while parsing an object")
    }

    /// After the document's value: only whitespace may follow.
    fn end(&mut self) -> Result<()> {
        match self.skip_ws() {
            None => Ok(()),
            Some(_) => Err(self.peek_error("trailing characters")),
        }
    }
}

/// Whether a float's text is beyond `f64`'s range (rounds to infinity).
/// `serde_json` refuses those ("number out of range"); tiny ones are 0.
fn beyond_f64(text: &str) -> bool {
    let text = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (
            text.get(..at).unwrap_or_default(),
            text.get(at + 1..).unwrap_or_default(),
        ),
        None => (text, "0"),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: Vec<u8> = int_part.bytes().chain(frac_part.bytes()).collect();
    let Some(first) = digits.iter().position(|&d| d != b'0') else {
        return false; // zero, whatever its exponent
    };
    let (exp_negative, exp_digits) = match exponent.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, exponent.strip_prefix('+').unwrap_or(exponent)),
    };
    let exp = exp_digits.bytes().fold(0i64, |n, b| {
        n.saturating_mul(10).saturating_add(i64::from(b - b'0'))
    });
    let exp = if exp_negative { -exp } else { exp };
    // The power of ten of the first significant digit.
    let lead = int_part.len() as i64 - 1 - first as i64;
    let magnitude = lead.saturating_add(exp);
    match magnitude.cmp(&308) {
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Greater => true,
        // f64::MAX is 1.7976931348623157e308; half an ulp above it rounds up.
        std::cmp::Ordering::Equal => {
            let significant = digits.get(first..).unwrap_or_default();
            let significant = match significant.iter().rposition(|&d| d != b'0') {
                Some(last) => significant.get(..=last).unwrap_or_default(),
                None => significant,
            };
            significant >= b"17976931348623158079".as_slice()
        }
    }
}

// --------------------------------------------------------------- the value

/// A JSON document in memory, as `serde_json::Value` holds it: object keys
/// in byte order, the last of duplicate keys kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Value>),
    /// Sorted by key, keys unique.
    Object(Vec<(String, Value)>),
}

impl Value {
    /// Reads a whole document.
    pub fn from_slice(bytes: &[u8]) -> Result<Value> {
        let mut reader = Reader::new(bytes);
        let value = reader.value()?;
        reader.end()?;
        Ok(value)
    }

    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(members) => members
                .binary_search_by(|(k, _)| k.as_str().cmp(key))
                .ok()
                .and_then(|at| members.get(at))
                .map(|(_, value)| value),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Vec<Value>> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Value::Object(_))
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    fn unexpected(&self) -> Unexpected<'_> {
        match self {
            Value::Null => Unexpected::Unit,
            Value::Bool(b) => Unexpected::Bool(*b),
            Value::Number(Number::U64(n)) => Unexpected::Unsigned(*n),
            Value::Number(Number::I64(n)) => Unexpected::Signed(*n),
            Value::Number(Number::Float(_)) => Unexpected::Float(0.0),
            Value::String(s) => Unexpected::Str(s),
            Value::Array(_) => Unexpected::Seq,
            Value::Object(_) => Unexpected::Map,
        }
    }
}

impl<'a> Reader<'a> {
    fn value(&mut self) -> Result<Value> {
        match self.skip_ws() {
            Some(b'n') => {
                self.pos += 1;
                self.literal(b"ull")?;
                Ok(Value::Null)
            }
            Some(b't') => {
                self.pos += 1;
                self.literal(b"rue")?;
                Ok(Value::Bool(true))
            }
            Some(b'f') => {
                self.pos += 1;
                self.literal(b"alse")?;
                Ok(Value::Bool(false))
            }
            Some(b'"') => {
                self.pos += 1;
                Ok(Value::String(self.string()?.into_owned()))
            }
            Some(b'-' | b'0'..=b'9') => Ok(Value::Number(self.number()?)),
            Some(b'[') => {
                self.pos += 1;
                self.enter()?;
                let mut items = Vec::new();
                while self.next_element(items.is_empty())? {
                    items.push(self.value()?);
                }
                self.leave();
                Ok(Value::Array(items))
            }
            Some(b'{') => {
                self.pos += 1;
                self.enter()?;
                let mut members = Vec::new();
                while let Some(key) = self.next_key(members.is_empty())? {
                    members.push((key.into_owned(), self.value()?));
                }
                self.leave();
                // Sorted by key, the last of duplicates kept: reversed so
                // that the stable sort puts the last first, and dedup keeps
                // the first of a run.
                members.reverse();
                members.sort_by(|(a, _), (b, _)| a.cmp(b));
                members.dedup_by(|(later, _), (kept, _)| later == kept);
                Ok(Value::Object(members))
            }
            Some(_) => Err(self.peek_error("expected value")),
            None => Err(self.error("EOF while parsing a value")),
        }
    }

    /// In an array, before an element: whether there is one (the `,` before
    /// it consumed), or the array ended (its `]` consumed).
    fn next_element(&mut self, first: bool) -> Result<bool> {
        match self.skip_ws() {
            // `[]`, or the end after an element (`, ]` is caught below).
            Some(b']') => {
                self.pos += 1;
                Ok(false)
            }
            Some(b',') if !first => {
                self.pos += 1;
                match self.skip_ws() {
                    Some(b']') => Err(self.peek_error("trailing comma")),
                    _ => Ok(true),
                }
            }
            Some(_) if first => Ok(true),
            Some(_) => Err(self.peek_error("expected `,` or `]`")),
            None => Err(self.error("EOF while parsing a list")),
        }
    }

    /// In an object, before a member: its key (and `:` consumed), or `None`
    /// when the object ended (its `}` consumed).
    fn next_key(&mut self, first: bool) -> Result<Option<Cow<'a, str>>> {
        match self.skip_ws() {
            Some(b'}') => {
                self.pos += 1;
                return Ok(None);
            }
            Some(b',') if !first => {
                self.pos += 1;
                if self.skip_ws() == Some(b'}') {
                    return Err(self.peek_error("trailing comma"));
                }
            }
            Some(_) if first => {}
            Some(_) => return Err(self.peek_error("expected `,` or `}`")),
            None => return Err(self.error("EOF while parsing an object")),
        }
        match self.skip_ws() {
            Some(b'"') => {
                self.pos += 1;
                let key = self.string()?;
                self.expect(b':', "expected `:`", "EOF while parsing an object")?;
                Ok(Some(key))
            }
            Some(_) => Err(self.peek_error("key must be a string")),
            None => Err(self.error("EOF while parsing a value")),
        }
    }
}

// ------------------------------------------------- serde from a `&Value`

/// Where in a [`Value`] the deserializer is.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => f.write_str("."),
            Path::Key(Path::Root, key) => f.write_str(key),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(Path::Root, index) => write!(f, "[{index}]"),
            Path::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

/// `T` from `value`, as `serde_json::from_value(value.clone())` would give
/// it; an error says where it is ([`Error::path`]).
pub fn from_value<'de, T: de::Deserialize<'de>>(value: &'de Value) -> Result<T> {
    T::deserialize(ValueDeserializer {
        value,
        path: &Path::Root,
    })
}

struct ValueDeserializer<'de, 'p> {
    value: &'de Value,
    path: &'p Path<'p>,
}

impl<'de> de::Deserializer<'de> for ValueDeserializer<'de, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(Number::U64(n)) => visitor.visit_u64(*n),
            Value::Number(Number::I64(n)) => visitor.visit_i64(*n),
            Value::Number(Number::Float(text)) => Err(Error::invalid_type_text(
                &format!("floating point `{text}`"),
                &visitor,
            )),
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => {
                let mut seq = SeqDeserializer {
                    items: items.iter(),
                    index: 0,
                    path: self.path,
                };
                let value = visitor.visit_seq(&mut seq)?;
                if seq.items.len() == 0 {
                    Ok(value)
                } else {
                    Err(de::Error::invalid_length(
                        items.len(),
                        &"fewer elements in array",
                    ))
                }
            }
            Value::Object(members) => {
                let mut map = MapDeserializer {
                    members: members.iter(),
                    value: None,
                    path: self.path,
                };
                let value = visitor.visit_map(&mut map)?;
                if map.members.len() == 0 {
                    Ok(value)
                } else {
                    Err(de::Error::invalid_length(
                        members.len(),
                        &"fewer elements in map",
                    ))
                }
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        let (variant, value) = match self.value {
            Value::String(variant) => (variant, None),
            Value::Object(members) => match members.as_slice() {
                [(variant, value)] => (variant, Some(value)),
                _ => {
                    return Err(de::Error::invalid_value(
                        Unexpected::Map,
                        &"map with a single key",
                    ))
                }
            },
            other => {
                return Err(de::Error::invalid_type(
                    other.unexpected(),
                    &"string or map",
                ))
            }
        };
        visitor.visit_enum(EnumDeserializer {
            variant,
            value,
            path: self.path,
        })
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier
    }
}

struct SeqDeserializer<'de, 'p> {
    items: std::slice::Iter<'de, Value>,
    index: usize,
    path: &'p Path<'p>,
}

impl<'de> de::SeqAccess<'de> for SeqDeserializer<'de, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        let Some(value) = self.items.next() else {
            return Ok(None);
        };
        let path = Path::Index(self.path, self.index);
        self.index += 1;
        seed.deserialize(ValueDeserializer { value, path: &path })
            .map(Some)
            .map_err(|e| e.at_path(&path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDeserializer<'de, 'p> {
    members: std::slice::Iter<'de, (String, Value)>,
    /// The member whose key was just read.
    value: Option<(&'de str, &'de Value)>,
    path: &'p Path<'p>,
}

impl<'de> de::MapAccess<'de> for MapDeserializer<'de, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        let Some((key, value)) = self.members.next() else {
            return Ok(None);
        };
        self.value = Some((key, value));
        let key_deserializer: de::value::BorrowedStrDeserializer<'de, Error> =
            de::value::BorrowedStrDeserializer::new(key);
        // An unknown field is where its key is.
        seed.deserialize(key_deserializer)
            .map(Some)
            .map_err(|e| e.at_path(&Path::Key(self.path, key)))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        let Some((key, value)) = self.value.take() else {
            return Err(de::Error::custom("value is missing"));
        };
        let path = Path::Key(self.path, key);
        seed.deserialize(ValueDeserializer { value, path: &path })
            .map_err(|e| e.at_path(&path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.members.len())
    }
}

struct EnumDeserializer<'de, 'p> {
    variant: &'de str,
    value: Option<&'de Value>,
    path: &'p Path<'p>,
}

impl<'de, 'p> de::EnumAccess<'de> for EnumDeserializer<'de, 'p> {
    type Error = Error;
    type Variant = VariantDeserializer<'de, 'p>;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self::Variant)> {
        let variant = self.variant.into_deserializer();
        let variant: de::value::StrDeserializer<'_, Error> = variant;
        let tag = seed.deserialize(variant)?;
        Ok((
            tag,
            VariantDeserializer {
                value: self.value,
                path: self.path,
            },
        ))
    }
}

struct VariantDeserializer<'de, 'p> {
    value: Option<&'de Value>,
    path: &'p Path<'p>,
}

impl<'de> de::VariantAccess<'de> for VariantDeserializer<'de, '_> {
    type Error = Error;

    fn unit_variant(self) -> Result<()> {
        match self.value {
            Some(value) => de::Deserialize::deserialize(ValueDeserializer {
                value,
                path: self.path,
            }),
            None => Ok(()),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        match self.value {
            Some(value) => seed.deserialize(ValueDeserializer {
                value,
                path: self.path,
            }),
            None => Err(de::Error::invalid_type(
                Unexpected::UnitVariant,
                &"newtype variant",
            )),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        match self.value {
            Some(value @ Value::Array(_)) => de::Deserializer::deserialize_any(
                ValueDeserializer {
                    value,
                    path: self.path,
                },
                visitor,
            ),
            Some(other) => Err(de::Error::invalid_type(
                other.unexpected(),
                &"tuple variant",
            )),
            None => Err(de::Error::invalid_type(
                Unexpected::UnitVariant,
                &"tuple variant",
            )),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.value {
            Some(value @ Value::Object(_)) => de::Deserializer::deserialize_any(
                ValueDeserializer {
                    value,
                    path: self.path,
                },
                visitor,
            ),
            Some(other) => Err(de::Error::invalid_type(
                other.unexpected(),
                &"struct variant",
            )),
            None => Err(de::Error::invalid_type(
                Unexpected::UnitVariant,
                &"struct variant",
            )),
        }
    }
}

// ------------------------------------------- a `&Value` read by hand

/// A [`Value`] and where it is in its document, read by code that knows
/// its shape (the plugin configuration), with the answers, messages and
/// paths that serde's derives give through [`from_value`]: a struct from an
/// object (unknown keys refused, required fields missing named after all
/// keys) or from an array of its fields in order, an enum of unit variants
/// from a string or a one-key object. Not generic, so the `.wasm` holds one
/// copy, where each derive instantiated for [`from_value`] held its own
/// (~30 KB for the configuration).
#[derive(Clone, Copy)]
pub struct At<'v, 'p> {
    value: &'v Value,
    path: &'p Path<'p>,
}

impl<'v> At<'v, 'static> {
    /// The document as a whole (its path is `.`).
    pub fn root(value: &'v Value) -> Self {
        At {
            value,
            path: &Path::Root,
        }
    }
}

impl<'v> At<'v, '_> {
    pub fn is_null(&self) -> bool {
        self.value.is_null()
    }

    /// An error about this value, saying where it is.
    #[inline(never)]
    fn error(&self, message: String) -> Error {
        Error {
            message,
            position: None,
            path: Some(self.path.to_string()),
        }
    }

    /// `invalid type: <this value>, expected <expected>`.
    #[inline(never)]
    fn invalid_type(&self, expected: &str) -> Error {
        let what = match self.value {
            Value::Null => "null".to_owned(),
            Value::Bool(b) => format!("boolean `{b}`"),
            Value::Number(Number::U64(n)) => format!("integer `{n}`"),
            Value::Number(Number::I64(n)) => format!("integer `{n}`"),
            Value::Number(Number::Float(text)) => format!("floating point `{text}`"),
            Value::String(s) => format!("string {}", quoted(s)),
            Value::Array(_) => "sequence".to_owned(),
            Value::Object(_) => "map".to_owned(),
        };
        self.error(format!("invalid type: {what}, expected {expected}"))
    }

    pub fn string(&self) -> Result<String> {
        match self.value {
            Value::String(s) => Ok(s.clone()),
            _ => Err(self.invalid_type("a string")),
        }
    }

    pub fn bool(&self) -> Result<bool> {
        match self.value {
            Value::Bool(b) => Ok(*b),
            _ => Err(self.invalid_type("a boolean")),
        }
    }

    pub fn u64(&self) -> Result<u64> {
        match self.value {
            Value::Number(Number::U64(n)) => Ok(*n),
            Value::Number(Number::I64(n)) => {
                Err(self.error(format!("invalid value: integer `{n}`, expected u64")))
            }
            _ => Err(self.invalid_type("u64")),
        }
    }

    /// The elements of an array, each read by `element` (`Vec`'s derive:
    /// "a sequence").
    pub fn elements(&self, element: &mut dyn FnMut(At<'v, '_>) -> Result<()>) -> Result<()> {
        let Value::Array(items) = self.value else {
            return Err(self.invalid_type("a sequence"));
        };
        for (index, value) in items.iter().enumerate() {
            element(At {
                value,
                path: &Path::Index(self.path, index),
            })?;
        }
        Ok(())
    }

    /// An array of strings.
    pub fn strings(&self) -> Result<Vec<String>> {
        let mut strings = Vec::new();
        self.elements(&mut |at| {
            strings.push(at.string()?);
            Ok(())
        })?;
        Ok(strings)
    }

    /// Which of `variants` (an enum of unit variants) this value names.
    pub fn variant(&self, variants: &[&str]) -> Result<usize> {
        let (name, value) = match self.value {
            Value::String(name) => (name, None),
            Value::Object(members) => match members.as_slice() {
                [(name, value)] => (name, Some(value)),
                _ => {
                    return Err(
                        self.error("invalid value: map, expected map with a single key".into())
                    )
                }
            },
            // serde's `&Value` deserializer names no float here.
            Value::Number(Number::Float(_)) => {
                return Err(self
                    .error("invalid type: floating point number, expected string or map".into()))
            }
            _ => return Err(self.invalid_type("string or map")),
        };
        let Some(index) = variants.iter().position(|v| *v == name) else {
            return Err(self.error(unknown_name("variant", name, variants)));
        };
        // `{"header": null}` is the unit variant `header`, as in serde.
        match value {
            Some(value) if !value.is_null() => Err(At {
                value,
                path: self.path,
            }
            .invalid_type("unit")),
            _ => Ok(index),
        }
    }

    /// A struct named `name` whose fields are `fields` (as serde names
    /// them, in their order), each read by `field` from its value and its
    /// name: from an object (an unknown key refused where it is, then the
    /// first of the `required` fields missing, in the order of `fields`),
    /// or from an array of the values in order (a missing one that is
    /// required is an `invalid length`, as is one too many). A field that
    /// is not read keeps the caller's default.
    pub fn fields(
        &self,
        name: &str,
        fields: &[&'static str],
        required: &[&str],
        field: &mut dyn FnMut(At<'v, '_>, &'static str) -> Result<()>,
    ) -> Result<()> {
        match self.value {
            Value::Object(members) => {
                for (key, value) in members {
                    let at = At {
                        value,
                        path: &Path::Key(self.path, key),
                    };
                    let Some(&name) = fields.iter().find(|f| **f == key) else {
                        return Err(at.error(unknown_name("field", key, fields)));
                    };
                    field(at, name)?;
                }
                // Keys are unique in a `Value`: a field is there or not.
                let missing = fields
                    .iter()
                    .filter(|f| required.contains(f))
                    .find(|f| self.value.get(f).is_none());
                match missing {
                    Some(name) => Err(self.error(format!("missing field `{name}`"))),
                    None => Ok(()),
                }
            }
            Value::Array(items) => {
                for (index, &field_name) in fields.iter().enumerate() {
                    match items.get(index) {
                        Some(value) => field(
                            At {
                                value,
                                path: &Path::Index(self.path, index),
                            },
                            field_name,
                        )?,
                        None if !required.contains(&field_name) => {}
                        None => {
                            return Err(self.error(format!(
                                "invalid length {index}, expected struct {name} with {} elements",
                                fields.len()
                            )))
                        }
                    }
                }
                if items.len() > fields.len() {
                    return Err(self.error(format!(
                        "invalid length {}, expected fewer elements in array",
                        items.len()
                    )));
                }
                Ok(())
            }
            _ => Err(self.invalid_type(&format!("struct {name}"))),
        }
    }
}

/// serde's message for a name not among `expected` (`kind`: "field" or
/// "variant"): "unknown field `x`, expected `a`", "... `a` or `b`",
/// "... one of `a`, `b`, `c`", or "..., there are no fields".
#[inline(never)]
fn unknown_name(kind: &str, name: &str, expected: &[&str]) -> String {
    let quoted: Vec<String> = expected.iter().map(|n| format!("`{n}`")).collect();
    let expected = match quoted.as_slice() {
        [] => format!("there are no {kind}s"),
        [one] => format!("expected {one}"),
        [first, second] => format!("expected {first} or {second}"),
        _ => format!("expected one of {}", quoted.join(", ")),
    };
    format!("unknown {kind} `{name}`, {expected}")
}

// ------------------------------------------------ serde from the text

/// A document read as it streams, value by value, by code that knows its
/// shape (the RouteService's answers: a full table is read straight into
/// the index, with no tree in between). Not generic, so the `.wasm` holds
/// one copy. Shapes are read the way serde's derives read them through
/// `serde_json::from_slice` ([`Pull::fields`]).
pub struct Pull<'a> {
    reader: Reader<'a>,
}

/// What a struct does with a key it does not know.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    /// `deny_unknown_fields`: an error.
    Refuse,
    /// Skipped.
    Skip,
}

impl<'a> Pull<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Pull {
            reader: Reader::new(bytes),
        }
    }

    /// After the document's value: only whitespace may follow.
    pub fn end(&mut self) -> Result<()> {
        self.reader.end()
    }

    /// An error about what was just read, with its position.
    pub fn error(&self, message: &str) -> Error {
        self.reader.error(message)
    }

    /// `invalid type: <the value at the reader>, expected <expected>`; the
    /// value's first token is consumed.
    fn invalid_type(&mut self, expected: &str) -> Error {
        let what = match self.reader.skip_ws() {
            Some(b'n') => self.reader.literal_at(b"null").map(|()| "null".to_owned()),
            Some(b't') => self
                .reader
                .literal_at(b"true")
                .map(|()| "boolean `true`".to_owned()),
            Some(b'f') => self
                .reader
                .literal_at(b"false")
                .map(|()| "boolean `false`".to_owned()),
            Some(b'"') => {
                self.reader.pos += 1;
                self.reader
                    .string()
                    .map(|s| format!("string {}", quoted(&s)))
            }
            Some(b'-' | b'0'..=b'9') => self.reader.number().map(|n| match n {
                Number::U64(n) => format!("integer `{n}`"),
                Number::I64(n) => format!("integer `{n}`"),
                Number::Float(text) => format!("floating point `{text}`"),
            }),
            Some(b'[') => {
                self.reader.pos += 1;
                Ok("sequence".to_owned())
            }
            Some(b'{') => {
                self.reader.pos += 1;
                Ok("map".to_owned())
            }
            Some(_) => Err(self.reader.peek_error("expected value")),
            None => Err(self.reader.error("EOF while parsing a value")),
        };
        match what {
            Ok(what) => self
                .reader
                .error(&format!("invalid type: {what}, expected {expected}")),
            Err(e) => e,
        }
    }

    /// A string (`expected` names it in the error).
    pub fn string(&mut self, expected: &str) -> Result<String> {
        if self.reader.skip_ws() != Some(b'"') {
            return Err(self.invalid_type(expected));
        }
        self.reader.pos += 1;
        Ok(self.reader.string()?.into_owned())
    }

    /// A `u64`.
    pub fn u64(&mut self) -> Result<u64> {
        match self.reader.skip_ws() {
            Some(b'-' | b'0'..=b'9') => {}
            _ => return Err(self.invalid_type("u64")),
        }
        match self.reader.number()? {
            Number::U64(n) => Ok(n),
            Number::I64(n) => Err(self
                .reader
                .error(&format!("invalid value: integer `{n}`, expected u64"))),
            Number::Float(text) => Err(self.reader.error(&format!(
                "invalid type: floating point `{text}`, expected u64"
            ))),
        }
    }

    /// Skips a value, whatever it is.
    pub fn skip(&mut self) -> Result<()> {
        self.reader.skip_value()
    }

    /// The elements of an array (`expected` names it in the error), each
    /// read by `element`.
    pub fn array(
        &mut self,
        expected: &str,
        element: &mut dyn FnMut(&mut Self, usize) -> Result<()>,
    ) -> Result<()> {
        if self.reader.skip_ws() != Some(b'[') {
            return Err(self.invalid_type(expected));
        }
        self.reader.pos += 1;
        self.reader.enter()?;
        let mut index = 0;
        while self.reader.next_element(index == 0)? {
            element(self, index)?;
            index += 1;
        }
        self.reader.leave();
        Ok(())
    }

    /// The members of an object (`expected` names it in the error), each
    /// read by `member` from its key; the last of duplicate keys is read
    /// last.
    pub fn object(
        &mut self,
        expected: &str,
        member: &mut dyn FnMut(&mut Self, &str) -> Result<()>,
    ) -> Result<()> {
        if self.reader.skip_ws() != Some(b'{') {
            return Err(self.invalid_type(expected));
        }
        self.reader.pos += 1;
        self.reader.enter()?;
        let mut first = true;
        while let Some(key) = self.reader.next_key(first)? {
            first = false;
            member(self, &key)?;
        }
        self.reader.leave();
        Ok(())
    }

    /// A struct as serde's derive reads one: an object whose keys are
    /// `fields` (a duplicate refused, an unknown one as `unknown` says), or
    /// an array of them in order. `field` reads the value of field `i`.
    /// Fields missing at the end are refused in the order of `fields`
    /// unless `optional` says they may be.
    pub fn fields(
        &mut self,
        name: &str,
        fields: &[&str],
        unknown: Unknown,
        optional: &dyn Fn(usize) -> bool,
        field: &mut dyn FnMut(&mut Self, usize) -> Result<()>,
    ) -> Result<()> {
        let mut seen = vec![false; fields.len()];
        match self.reader.skip_ws() {
            Some(b'[') => {
                self.reader.pos += 1;
                self.reader.enter()?;
                for (index, seen) in seen.iter_mut().enumerate() {
                    if !self.reader.next_element(index == 0)? {
                        return Err(self.reader.error(&format!(
                            "invalid length {index}, expected struct {name} with {} elements",
                            fields.len()
                        )));
                    }
                    field(self, index)?;
                    *seen = true;
                }
                // More elements than fields.
                if self.reader.next_element(fields.is_empty())? {
                    return Err(self.reader.peek_error("trailing characters"));
                }
                self.reader.leave();
                return Ok(());
            }
            Some(b'{') => {}
            _ => return Err(self.invalid_type(&format!("struct {name}"))),
        }
        self.reader.pos += 1;
        self.reader.enter()?;
        let mut first = true;
        while let Some(key) = self.reader.next_key(first)? {
            first = false;
            match fields.iter().position(|f| **f == *key) {
                Some(index) => {
                    let Some(seen) = seen.get_mut(index) else {
                        return Err(self.reader.error("field out of range"));
                    };
                    if std::mem::replace(seen, true) {
                        return Err(self.reader.error(&format!("duplicate field `{key}`")));
                    }
                    field(self, index)?;
                }
                None if unknown == Unknown::Skip => self.reader.skip_value()?,
                None => return Err(self.reader.error(&unknown_name("field", &key, fields))),
            }
        }
        self.reader.leave();
        for (index, (name, seen)) in fields.iter().zip(&seen).enumerate() {
            if !seen && !optional(index) {
                return Err(self.reader.error(&format!("missing field `{name}`")));
            }
        }
        Ok(())
    }
}

impl Reader<'_> {
    /// The literal `word` at the reader, whole.
    fn literal_at(&mut self, word: &[u8]) -> Result<()> {
        self.pos += 1;
        self.literal(word.get(1..).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde::Deserialize;

    /// Documents of every kind, valid and not, each read by both readers.
    const DOCUMENTS: &[&str] = &[
        "null",
        "true",
        "false",
        "0",
        "-0",
        "7",
        "-7",
        "1.5",
        "-1.5e3",
        "1E+2",
        "1e-400",
        "1e400",
        "-1e400",
        "1.7976931348623157e308",
        "1.8e308",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "123456789012345678901234567890",
        "01",
        "-",
        "1.",
        "1.e5",
        ".5",
        "+1",
        "1e",
        "1e+",
        "\"\"",
        "\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"",
        "\"\\u00e9\\ud83d\\ude00\"",
        "\"\\ud83d\"",
        "\"\\ud83dx\"",
        "\"\\ud83d\\u0041\"",
        "\"\\ude00\"",
        "\"\\x\"",
        "\"\\u12\"",
        "\"\\u12g4\"",
        "\"a\u{1}b\"",
        "\"é\"",
        "\"unterminated",
        "[]",
        "[1,2]",
        "[1,]",
        "[1 2]",
        "[",
        "[1",
        "{}",
        "{\"a\":1}",
        "{\"a\":1,}",
        "{\"a\" 1}",
        "{\"a\":1 \"b\":2}",
        "{1:2}",
        "{",
        "{\"a\"",
        "{\"a\":",
        "{\"b\":1,\"a\":2,\"b\":3}",
        "  {\"a\" : [ true , null ] }  ",
        "{} {}",
        "[] x",
        "nul",
        "nulx",
        "tru",
        "x",
        "",
        "   ",
        "\"\\u0000\"",
    ];

    fn as_serde_json(value: &Value) -> serde_json::Value {
        match value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(Number::U64(n)) => (*n).into(),
            Value::Number(Number::I64(n)) => (*n).into(),
            Value::Number(Number::Float(text)) => serde_json::from_str(text).unwrap(),
            Value::String(s) => s.clone().into(),
            Value::Array(items) => items.iter().map(as_serde_json).collect(),
            Value::Object(members) => members
                .iter()
                .map(|(k, v)| (k.clone(), as_serde_json(v)))
                .collect(),
        }
    }

    #[test]
    fn values_read_as_serde_json_reads_them() {
        for doc in DOCUMENTS {
            let ours = Value::from_slice(doc.as_bytes());
            let theirs = serde_json::from_str::<serde_json::Value>(doc);
            match (&ours, &theirs) {
                (Ok(ours), Ok(theirs)) => {
                    assert_eq!(&as_serde_json(ours), theirs, "{doc}");
                    // Same classification of numbers.
                    if let (Value::Number(n), serde_json::Value::Number(t)) = (ours, theirs) {
                        assert_eq!(matches!(n, Number::U64(_)), t.is_u64(), "{doc}");
                        assert_eq!(
                            matches!(n, Number::I64(_)),
                            t.is_i64() && !t.is_u64(),
                            "{doc}"
                        );
                    }
                }
                (Err(ours), Err(theirs)) => {
                    let theirs = theirs.to_string();
                    let code = theirs.split(" at line").next().unwrap();
                    assert_eq!(ours.message(), code, "{doc}: {ours} / {theirs}");
                }
                _ => panic!("{doc}: ours {ours:?}, serde_json {theirs:?}"),
            }
        }
    }

    #[test]
    fn nesting_is_limited_as_in_serde_json() {
        for depth in [127, 128] {
            let doc = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let ours = Value::from_slice(doc.as_bytes()).is_ok();
            let theirs = serde_json::from_str::<serde_json::Value>(&doc).is_ok();
            assert_eq!((ours, theirs), (depth < 128, depth < 128), "{depth}");
        }
    }

    #[test]
    fn positions_are_serde_jsons() {
        for doc in ["{", "{} {}", "[1,\n 2 x]", "\n\n  \"\\q\"", "[1,]"] {
            let ours = Value::from_slice(doc.as_bytes()).unwrap_err().to_string();
            let theirs = serde_json::from_str::<serde_json::Value>(doc)
                .unwrap_err()
                .to_string();
            assert_eq!(ours, theirs, "{doc:?}");
        }
    }

    #[test]
    fn objects_keep_the_last_duplicate_in_key_order() {
        let value =
            Value::from_slice(br#"{"b": 1, "a": 2, "b": 3, "c": {"x": 1, "x": 2}}"#).unwrap();
        assert_eq!(value.get("b"), Some(&Value::Number(Number::U64(3))));
        assert_eq!(
            value.get("c").and_then(|c| c.get("x")),
            Some(&Value::Number(Number::U64(2)))
        );
        let Value::Object(members) = &value else {
            panic!()
        };
        let keys: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Inner {
        name: String,
        #[serde(default)]
        count: u64,
        flag: Option<bool>,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        One,
        Two,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        items: Vec<Inner>,
        #[serde(default)]
        kind: Option<Kind>,
    }

    /// [`from_value`] gives what `serde_json::from_value` gives, or an
    /// error with its message.
    #[test]
    fn typed_reads_match_serde_json() {
        let docs = [
            r#"{"items": []}"#,
            r#"{"items": [{"name": "a"}, {"name": "b", "count": 3, "flag": true}]}"#,
            r#"{"items": [{"name": "a", "flag": null}], "kind": "two"}"#,
            r#"{"items": [["a", 3, false]]}"#,
            r#"{"items": [["a", 3, false, 4]]}"#,
            r#"{"items": [["a"]]}"#,
            r#"{"items": [{"name": 7}]}"#,
            r#"{"items": [{"name": "a", "count": -1}]}"#,
            r#"{"items": [{"name": "a", "count": 1.5}]}"#,
            r#"{"items": [{"name": "a", "count": "1"}]}"#,
            r#"{"items": [{"name": "a", "x": 1}]}"#,
            r#"{"items": [{"count": 1}]}"#,
            r#"{"items": [{"name": "a", "name": "b"}]}"#,
            r#"{"items": {}}"#,
            r#"{"items": [], "kind": "three"}"#,
            r#"{"items": [], "kind": {"one": null}}"#,
            r#"{"items": [], "kind": {"one": 1}}"#,
            r#"{"items": [], "kind": {}}"#,
            r#"{"items": [], "kind": 5}"#,
            r#"{"items": [], "other": 1}"#,
            r#"{"items": [{"name": "a\nb\"c", "flag": "yes"}]}"#,
            r#"{}"#,
            r#"[]"#,
            r#"[[]]"#,
            r#"null"#,
            r#""items""#,
        ];
        for doc in docs {
            // Through a value: serde_json's `from_value`, where duplicates
            // are resolved before the types see them.
            let value = Value::from_slice(doc.as_bytes()).unwrap();
            let ours = from_value::<Outer>(&value).map_err(|e| e.message().to_owned());
            let theirs = serde_json::from_str::<serde_json::Value>(doc)
                .and_then(serde_json::from_value::<Outer>)
                .map_err(|e| e.to_string());
            match (&ours, &theirs) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{doc}"),
                (Err(a), Err(b)) => assert_eq!(a, b, "{doc}"),
                _ => panic!("{doc}: ours {ours:?}, serde_json {theirs:?}"),
            }
        }
    }

    #[test]
    fn value_errors_say_where_they_are() {
        let path = |doc: &str| {
            let value = Value::from_slice(doc.as_bytes()).unwrap();
            from_value::<Outer>(&value).unwrap_err().path().to_owned()
        };
        assert_eq!(
            path(r#"{"items": [{"name": "a"}, {"name": 7}]}"#),
            "items[1].name"
        );
        assert_eq!(path(r#"{"items": [{"name": "a", "x": 1}]}"#), "items[0].x");
        assert_eq!(path(r#"{"items": [{"count": 1}]}"#), "items[0]");
        assert_eq!(path(r#"{"items": [], "kind": "three"}"#), "kind");
        assert_eq!(path(r#"{"kind": "one"}"#), ".");
        assert_eq!(path(r#"{"items": 1}"#), "items");
    }

    #[test]
    fn ignored_values_are_skipped_as_serde_json_skips_them() {
        #[derive(Debug, PartialEq, Deserialize)]
        struct Open {
            a: u64,
        }
        let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));
        let docs = [
            r#"{"a": 1, "x": 1e400}"#.to_owned(),
            r#"{"a": 1, "x": "\ud800"}"#.to_owned(),
            "{\"a\": 1, \"x\": \"\u{1}\"}".to_owned(),
            r#"{"a": 1, "x": "\q"}"#.to_owned(),
            r#"{"a": 1, "x": [1, {"y": [true, null, "s"]}, {}], "z": {}}"#.to_owned(),
            r#"{"a": 1, "x": [1,]}"#.to_owned(),
            r#"{"a": 1, "x": {"y": 1,}}"#.to_owned(),
            r#"{"a": 1, "x": {"y" 1}}"#.to_owned(),
            r#"{"a": 1, "x": {1: 1}}"#.to_owned(),
            r#"{"a": 1, "x": [1 2]}"#.to_owned(),
            r#"{"a": 1, "x": 01}"#.to_owned(),
            r#"{"a": 1, "x": [}"#.to_owned(),
            r#"{"a": 1, "x": "#.to_owned(),
            format!(r#"{{"a": 1, "x": {deep}}}"#),
        ];
        for doc in &docs {
            let mut pull = Pull::new(doc.as_bytes());
            let mut a = 0;
            let ours = pull
                .fields("Open", &["a"], Unknown::Skip, &|_| false, &mut |pull, _| {
                    a = pull.u64()?;
                    Ok(())
                })
                .and_then(|()| pull.end())
                .map(|()| Open { a })
                .map_err(|e| e.message().to_owned());
            let theirs = serde_json::from_str::<Open>(doc)
                .map_err(|e| e.to_string().split(" at line").next().unwrap().to_owned());
            assert_eq!(
                ours.ok(),
                theirs.as_ref().ok().map(|o| Open { a: o.a }),
                "{doc}"
            );
        }
    }

    #[test]
    fn messages_quote_strings_without_raw_control_characters() {
        assert_eq!(quoted("a\"b\\c\nd\u{1b}é"), r#""a\"b\\c\nd\u{1b}é""#);
        assert_eq!(
            format!("{:?}", "a\"b\\c\nd\u{1b}"),
            quoted("a\"b\\c\nd\u{1b}")
        );
    }
}
