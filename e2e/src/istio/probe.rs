//! What the local-mesh tests ask of the mesh: who served a request through
//! a proxy, how long until a routing change shows on every Envoy worker,
//! and the Sandbox objects they apply.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::client::{Request, Response};

/// `GET /` with `host` and `headers`, through `to`.
pub fn get(to: SocketAddr, host: &str, headers: &[(&str, &str)]) -> Result<Response> {
    let mut request = Request::get("/").header("host", host);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request
        .send(to)
        .with_context(|| format!("GET {host} via {to}"))
}

/// A `200` response to [`get`], or an error saying what came instead.
pub fn get_ok(to: SocketAddr, host: &str, headers: &[(&str, &str)]) -> Result<Response> {
    let response = get(to, host, headers)?;
    if response.status != 200 {
        bail!(
            "GET {host} via {to} with {headers:?}: {} {}",
            response.status,
            response.text()
        );
    }
    Ok(response)
}

/// Who served the request (`x-served-by`: `<service>/<variant>`).
pub fn served_by(to: SocketAddr, host: &str, headers: &[(&str, &str)]) -> Result<String> {
    Ok(get_ok(to, host, headers)?
        .header("x-served-by")
        .unwrap_or_default())
}

/// `baggage: sd-routing-key=<key>`'s value.
pub fn baggage(key: &str) -> String {
    format!("sd-routing-key={key}")
}

/// Requests in a row that must agree before a change counts as seen: each
/// is a new connection, and every Envoy worker keeps its own table.
pub const SETTLED: usize = 12;

/// Polls each proxy until `host` with routing key `key` is served by
/// `expected` on [`SETTLED`] requests in a row; for each proxy, how long
/// after `since` the first request of that run was sent. Fails after
/// `timeout` (counted from `since`).
pub fn wait_served_by_all(
    proxies: &[SocketAddr],
    host: &str,
    key: &str,
    expected: &str,
    since: Instant,
    timeout: Duration,
) -> Result<Vec<Duration>> {
    let key_baggage = baggage(key);
    let mut first: Vec<Option<Duration>> = vec![None; proxies.len()];
    let mut in_a_row = vec![0; proxies.len()];
    loop {
        for ((to, first), in_a_row) in proxies.iter().zip(&mut first).zip(&mut in_a_row) {
            if *in_a_row >= SETTLED {
                continue;
            }
            let sent = since.elapsed();
            let got = served_by(*to, host, &[("baggage", &key_baggage)])?;
            if got == expected {
                first.get_or_insert(sent);
                *in_a_row += 1;
            } else {
                *in_a_row = 0;
                *first = None;
                if since.elapsed() >= timeout {
                    bail!("{host} with key {key} via {to}: still {got} after {timeout:?}, wanted {expected}");
                }
            }
        }
        if in_a_row.iter().all(|n| *n >= SETTLED) {
            return Ok(first.into_iter().map(Option::unwrap_or_default).collect());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `check` every 5 ms until it is true; how long that took. Fails
/// after `timeout`, naming `what`.
pub fn wait(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if check() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(anyhow!("{what}: not after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A Sandbox object as `kubectl apply` takes it; `extra` is more of its
/// spec (`"  ttl: 30s\n"`).
pub fn sandbox_yaml(name: &str, key: &str, routes: &[(&str, &str)], extra: &str) -> String {
    let mut yaml = format!(
        "apiVersion: sandbox-router.dev/v1alpha1\nkind: Sandbox\nmetadata:\n  name: {name}\nspec:\n  routingKey: {key}\n{extra}  routes:\n"
    );
    for (baseline, target) in routes {
        yaml.push_str(&format!(
            "    - baseline: {baseline}\n      target: {target}\n"
        ));
    }
    yaml
}
