//! The client's errors. None of them stops a decision: a consumer always
//! gets a [`crate::Verdict`] (from the last good table, failing open to
//! baseline); these say why a sync or a wait did not do what was asked.

use std::time::Duration;

use sandbox_router_core::routes_api::BadAnswer;

/// A configuration value that is wrong, with its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ConfigError {
    pub field: &'static str,
    pub problem: String,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, problem: impl Into<String>) -> Self {
        ConfigError {
            field,
            problem: problem.into(),
        }
    }
}

/// Why a RouteService answer was not used. The last good table stays.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// No HTTP answer: connection refused, timeout, reset.
    #[error("RouteService {url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    /// An answer that is not a routes document, or not a usable status.
    #[error("RouteService {url}: {problem}")]
    BadAnswer { url: String, problem: BadAnswer },
}

/// [`crate::RouteClient::wait_for_version`] ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("table version {wanted} not reached after {waited:?} (have {have:?})")]
pub struct WaitTimeout {
    pub wanted: u64,
    pub have: Option<u64>,
    pub waited: Duration,
}
