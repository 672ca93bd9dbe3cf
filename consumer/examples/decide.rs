//! Asks the client library what a consumer would do with a message.
//!
//! ```sh
//! cargo run -p sandbox-router-consumer --example decide -- \
//!   http://127.0.0.1:8080 catalog.demo.svc.cluster.local pr-42 'sd-routing-key=pr-42'
//! # table version 1: process=true reason=forked-by:pr-42 (from Table)
//! ```
//!
//! Arguments: RouteService URL, workload FQDN, sandbox (`-` for the
//! baseline consumer), then the message's `baggage` (optional).

use std::error::Error;

use sandbox_router_consumer::{ClientConfig, RouteClient};

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [server, workload, sandbox, rest @ ..] = args.as_slice() else {
        return Err(
            "usage: decide <routeservice-url> <workload-fqdn> <sandbox|-> [baggage]".into(),
        );
    };
    let sandbox = Some(sandbox.as_str()).filter(|s| *s != "-");
    let client = RouteClient::new(ClientConfig::new(server, workload, sandbox)?);
    client.refresh()?;
    let headers: Vec<(&str, &str)> = rest
        .first()
        .map(|b| ("baggage", b.as_str()))
        .into_iter()
        .collect();
    let decision = client.decide(headers);
    println!(
        "table version {}: process={} reason={} (from {:?})",
        client
            .version()
            .map_or_else(|| "-".to_owned(), |v| v.to_string()),
        decision.verdict.process,
        decision.verdict.reason,
        decision.source
    );
    Ok(())
}
