//! A raw HTTP/1.1 client: the test writes the request bytes itself.
//!
//! Real clients normalise what they send (merge or refuse duplicate headers,
//! reject non-UTF-8 values, cap sizes). The end-to-end tests need to send
//! exactly what a hostile or sloppy caller might, so this client writes the
//! head byte for byte and only parses the answer.

use std::io::{BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};

/// How long to wait for an answer before calling it a failure.
const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// A request as it goes on the wire. Headers keep their order and duplicates.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Request {
    /// A `GET` of `target` (for example `/`), with no headers yet.
    pub fn get(target: &str) -> Self {
        Self::new("GET", target)
    }

    /// A request with any method.
    pub fn new(method: &str, target: &str) -> Self {
        Self {
            method: method.to_owned(),
            target: target.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds one header line; a repeated name adds another line.
    #[must_use]
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body and its `content-length`.
    #[must_use]
    pub fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        self.body = body.as_ref().to_vec();
        self
    }

    /// The exact bytes this request puts on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target).into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        if !self.body.is_empty() {
            out.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// Sends the request on a new connection and reads the response.
    pub fn send(&self, to: SocketAddr) -> Result<Response> {
        send_raw(to, &self.to_bytes(), self.method == "HEAD")
    }
}

/// Sends `bytes` as they are on a new connection and reads one response.
pub fn send_raw(to: SocketAddr, bytes: &[u8], head_request: bool) -> Result<Response> {
    let mut stream = TcpStream::connect_timeout(&to, IO_TIMEOUT)
        .with_context(|| format!("connecting to {to}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(bytes).context("writing the request")?;
    let mut reader = BufReader::new(stream);
    Response::read(&mut reader, head_request)
        .with_context(|| format!("reading the response from {to}"))
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code, e.g. 200.
    pub status: u16,
    /// Header lines in order; names as received.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// Reads one response from `reader`.
    pub fn read(reader: &mut impl std::io::BufRead, head_request: bool) -> Result<Self> {
        let status = parse_status_line(&read_line(reader)?)?;
        let headers = read_header_block(reader)?;
        let mut response = Self {
            status,
            headers,
            body: Vec::new(),
        };
        if !head_request && response.may_have_body() {
            response.body = read_body(reader, &response.headers)?;
        }
        Ok(response)
    }

    /// The first value of header `name` (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<String> {
        header_value(&self.headers, name).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The header lines as `name: value` text (lossy), for messages.
    pub fn headers_text(&self) -> String {
        self.headers
            .iter()
            .map(|(name, value)| format!("{name}: {}", String::from_utf8_lossy(value)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("response body is not JSON: {}", self.text()))
    }

    fn may_have_body(&self) -> bool {
        !(self.status < 200 || self.status == 204 || self.status == 304)
    }
}

/// The first value of header `name` in `headers`, compared case-insensitively.
pub fn header_value<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// Reads one CRLF- (or LF-) terminated line, without the terminator.
pub fn read_line(reader: &mut impl std::io::BufRead) -> Result<Vec<u8>> {
    let mut line = Vec::new();
    let read = reader.read_until(b'\n', &mut line)?;
    if read == 0 {
        bail!("connection closed");
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(line)
}

/// Reads header lines up to the blank line that ends the head.
pub fn read_header_block(reader: &mut impl std::io::BufRead) -> Result<Vec<(String, Vec<u8>)>> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            return Ok(headers);
        }
        let colon = line.iter().position(|&b| b == b':').ok_or_else(|| {
            anyhow!(
                "header line without ':': {}",
                String::from_utf8_lossy(&line)
            )
        })?;
        let (name, value) = line.split_at(colon);
        let value = value.get(1..).unwrap_or_default().trim_ascii();
        headers.push((String::from_utf8_lossy(name).into_owned(), value.to_vec()));
    }
}

/// Reads a message body framed by `content-length`, chunked encoding, or
/// (for responses) the end of the connection.
pub fn read_body(
    reader: &mut impl std::io::BufRead,
    headers: &[(String, Vec<u8>)],
) -> Result<Vec<u8>> {
    let chunked = header_value(headers, "transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case(b"chunked"));
    if chunked {
        return read_chunked(reader);
    }
    let mut body = Vec::new();
    match header_value(headers, "content-length") {
        Some(length) => {
            let length: u64 = std::str::from_utf8(length)?.trim().parse()?;
            reader.take(length).read_to_end(&mut body)?;
            if body.len() as u64 != length {
                bail!("body ended after {} of {length} bytes", body.len());
            }
        }
        None => {
            reader.read_to_end(&mut body)?;
        }
    }
    Ok(body)
}

fn read_chunked(reader: &mut impl std::io::BufRead) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let size_line = read_line(reader)?;
        let size = String::from_utf8_lossy(&size_line);
        let size = size.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size, 16).with_context(|| format!("chunk size {size:?}"))?;
        if size == 0 {
            // Trailers, then the blank line.
            read_header_block(reader)?;
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(body.get_mut(start..).unwrap_or_default())?;
        read_line(reader)?;
    }
}

fn parse_status_line(line: &[u8]) -> Result<u16> {
    let text = String::from_utf8_lossy(line);
    let mut parts = text.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1.x status line: {text:?}");
    }
    let code = parts.next().unwrap_or_default();
    code.parse()
        .with_context(|| format!("status code in {text:?}"))
}
