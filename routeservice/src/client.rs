//! A small blocking client of the API (the CLI's, and usable from tests and
//! tools). Plain HTTP only; errors carry the server's own message.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::model::{RouteList, Sandbox, SandboxList, SandboxSpec};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer (connection refused, timeout, bad URL).
    #[error("cannot reach {server}: {reason}")]
    Unreachable { server: String, reason: String },
    /// The server answered with an error status.
    #[error("server answered {status}: {message}")]
    Server { status: u16, message: String },
    /// The server answered something this client does not understand.
    #[error("unexpected answer from the server: {0}")]
    BadResponse(String),
}

/// Whether a PUT created the sandbox or replaced one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Created,
    Replaced,
}

/// A client of one server.
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    server: String,
    token: Option<String>,
}

impl Client {
    /// `server` like `http://127.0.0.1:8080`; `token` is sent on writes.
    pub fn new(server: &str, token: Option<String>) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build();
        Client {
            agent: config.into(),
            server: server.trim_end_matches('/').to_owned(),
            token,
        }
    }

    pub fn list(&self) -> Result<SandboxList, ClientError> {
        self.call("GET", "/v1/sandboxes", None)
            .and_then(|(_, body)| parse(&body))
    }

    pub fn get(&self, name: &str) -> Result<Sandbox, ClientError> {
        let path = format!("/v1/sandboxes/{}", encode(name));
        self.call("GET", &path, None)
            .and_then(|(_, body)| parse(&body))
    }

    pub fn routes(&self, routing_key: Option<&str>) -> Result<RouteList, ClientError> {
        let path = match routing_key {
            Some(key) => format!("/v1/routes?routingKey={}", encode(key)),
            None => "/v1/routes".to_owned(),
        };
        self.call("GET", &path, None)
            .and_then(|(_, body)| parse(&body))
    }

    /// Creates or replaces sandbox `name`.
    pub fn put(&self, name: &str, spec: &SandboxSpec) -> Result<(Stored, Sandbox), ClientError> {
        let path = format!("/v1/sandboxes/{}", encode(name));
        let body = serde_json::to_vec(spec).map_err(|e| ClientError::BadResponse(e.to_string()))?;
        let (status, text) = self.call("PUT", &path, Some(body))?;
        let stored = if status == 201 {
            Stored::Created
        } else {
            Stored::Replaced
        };
        Ok((stored, parse(&text)?))
    }

    pub fn delete(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/v1/sandboxes/{}", encode(name));
        self.call("DELETE", &path, None).map(|_| ())
    }

    /// One call; `Ok((status, body))` for 2xx.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, String), ClientError> {
        let url = format!("{}{path}", self.server);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let result = match (method, body) {
            ("PUT", Some(body)) => {
                let mut request = self.agent.put(&url).content_type("application/json");
                if let Some(auth) = &auth {
                    request = request.header("authorization", auth);
                }
                request.send(body)
            }
            ("DELETE", _) => {
                let mut request = self.agent.delete(&url);
                if let Some(auth) = &auth {
                    request = request.header("authorization", auth);
                }
                request.call()
            }
            _ => self.agent.get(&url).call(),
        };
        let mut response = result.map_err(|e| ClientError::Unreachable {
            server: self.server.clone(),
            reason: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| ClientError::BadResponse(e.to_string()))?;
        if (200..300).contains(&status) {
            Ok((status, text))
        } else {
            let message = serde_json::from_str::<ErrorOwned>(&text)
                .map(|e| e.error)
                .unwrap_or_else(|_| text.trim().to_owned());
            Err(ClientError::Server { status, message })
        }
    }
}

/// The server's error body, `{"error": "..."}`.
#[derive(serde::Deserialize)]
struct ErrorOwned {
    error: String,
}

fn parse<T: DeserializeOwned>(body: &str) -> Result<T, ClientError> {
    serde_json::from_str(body).map_err(|e| ClientError::BadResponse(e.to_string()))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode("pr-42"), "pr-42");
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }
}
