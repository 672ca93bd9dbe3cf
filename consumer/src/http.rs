//! The RouteService calls a consumer makes, over blocking plain HTTP: what
//! changed since the version held (`GET /v1/routes?since=V`), the whole
//! table with `If-None-Match` (`GET /v1/routes`), and one key on a miss
//! (`GET /v1/routes?routingKey=K`). Answers are read with the core's
//! defensive parser: a size limit, every route validated, an answer for a
//! foreign key refused.

use std::time::Duration;

use sandbox_router_core::routes_api::{
    self, check_delta_status, check_status, parse_delta, parse_key_routes, parse_routes, BadAnswer,
    Delta, DeltaStatus, RoutesAnswer, MAX_BODY_BYTES, ROUTES_PATH,
};
use sandbox_router_core::routing_key::RoutingKey;

use crate::error::FetchError;

/// What a table sync got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableFetch {
    /// `304`: the table at the `ETag` sent is current.
    NotModified,
    /// `200`: a validated table.
    Changed(RoutesAnswer),
}

/// What a delta sync got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaFetch {
    /// `304`: the table at `V` is current.
    NotModified,
    /// `410`: the server does not know `V`; take the full table.
    Gone,
    /// `200`: a validated delta from `V`.
    Changed(Delta),
}

/// A blocking client of one RouteService.
#[derive(Debug, Clone)]
pub struct RouteServiceHttp {
    agent: ureq::Agent,
    server: String,
}

impl RouteServiceHttp {
    /// `server` is `http://host:port`; every call is limited to `timeout`.
    pub fn new(server: &str, timeout: Duration) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .build();
        RouteServiceHttp {
            agent: config.into(),
            server: server.to_owned(),
        }
    }

    /// `GET /v1/routes`, conditional on `version` when one is held.
    pub fn table(&self, version: Option<u64>) -> Result<TableFetch, FetchError> {
        let etag = version.map(routes_api::etag);
        let (url, status, body) = self.get(ROUTES_PATH, etag.as_deref())?;
        let has_body = check_status(Some(status)).map_err(|problem| bad(&url, problem))?;
        if !has_body {
            return Ok(TableFetch::NotModified);
        }
        parse_routes(&body)
            .map(TableFetch::Changed)
            .map_err(|problem| bad(&url, problem))
    }

    /// `GET /v1/routes?since=V`: what changed after `version`.
    pub fn since(&self, version: u64) -> Result<DeltaFetch, FetchError> {
        let path = routes_api::routes_since_path(version);
        let (url, status, body) = self.get(&path, None)?;
        match check_delta_status(Some(status)).map_err(|problem| bad(&url, problem))? {
            DeltaStatus::NotModified => Ok(DeltaFetch::NotModified),
            DeltaStatus::Gone => Ok(DeltaFetch::Gone),
            DeltaStatus::Body => parse_delta(&body, version)
                .map(DeltaFetch::Changed)
                .map_err(|problem| bad(&url, problem)),
        }
    }

    /// `GET /v1/routes?routingKey=K`: the routes of one key (an empty table
    /// when no sandbox has it).
    pub fn key(&self, key: &RoutingKey) -> Result<RoutesAnswer, FetchError> {
        let path = routes_api::routes_for_key_path(key);
        let (url, status, body) = self.get(&path, None)?;
        match check_status(Some(status)) {
            Ok(true) => parse_key_routes(&body, key.as_str()).map_err(|problem| bad(&url, problem)),
            // Nothing was sent to match: a 304 here is a broken server.
            Ok(false) => Err(bad(&url, BadAnswer::Status(status))),
            Err(problem) => Err(bad(&url, problem)),
        }
    }

    fn get(
        &self,
        path: &str,
        if_none_match: Option<&str>,
    ) -> Result<(String, u16, Vec<u8>), FetchError> {
        let url = format!("{}{path}", self.server);
        let mut request = self.agent.get(&url);
        if let Some(etag) = if_none_match {
            request = request.header("if-none-match", etag);
        }
        let unreachable = |e: ureq::Error| FetchError::Unreachable {
            url: url.clone(),
            reason: e.to_string(),
        };
        let mut response = request.call().map_err(unreachable)?;
        let status = response.status().as_u16();
        let limit = u64::try_from(MAX_BODY_BYTES).unwrap_or(u64::MAX);
        let body = response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => bad(&url, BadAnswer::TooLarge),
                other => unreachable(other),
            })?;
        Ok((url, status, body))
    }
}

fn bad(url: &str, problem: BadAnswer) -> FetchError {
    FetchError::BadAnswer {
        url: url.to_owned(),
        problem,
    }
}
