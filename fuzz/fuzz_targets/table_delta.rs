//! Fuzz the table delta (`GET /v1/routes?since=V` bodies) and the shared-data
//! delta log the filter's workers read.
//!
//! Invariants, for every input:
//! - `parse_delta` never panics; an accepted delta, applied to a table,
//!   leaves every upsert findable and every other delete gone, whatever the table
//!   held, and the table's length is its number of routes;
//! - `DeltaLog::decode` never panics; a log it accepts encodes back to the
//!   same bytes, and its records chain to its end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandbox_router_core::route_table::{Route, RouteTable};
use sandbox_router_core::routes_api::parse_delta;
use sandbox_router_core::table_sync::DeltaLog;

fuzz_target!(|data: &[u8]| {
    if let Ok(delta) = parse_delta(data, 7) {
        let held = Route {
            routing_key: "pr-42".into(),
            sandbox: "pr-42".into(),
            baseline: "catalog.demo.svc.cluster.local".into(),
            target: "catalog-pr-42.demo.svc.cluster.local".into(),
        };
        let mut table = RouteTable::new(&[held]).expect("a valid route");
        delta.apply_to(&mut table);
        for route in &delta.upserts {
            let found = table.lookup(&route.routing_key, &route.baseline);
            assert_eq!(
                found.map(|t| t.target.as_str()),
                Some(route.target.as_str())
            );
        }
        for gone in &delta.deletes {
            let upserted = delta
                .upserts
                .iter()
                .any(|r| r.routing_key == gone.routing_key && r.baseline == gone.baseline);
            if !upserted {
                assert!(table.lookup(&gone.routing_key, &gone.baseline).is_none());
            }
        }
        assert_eq!(table.len(), table.routes().count());
        let mut body = Vec::new();
        table.write_json(delta.version, &mut body);
        let again = sandbox_router_core::routes_api::parse_routes(&body).expect("own body");
        assert_eq!(again.table.sorted_routes(), table.sorted_routes());
    }
    if let Some(log) = DeltaLog::decode(data) {
        assert_eq!(log.encode(), data);
        assert_eq!(log.after(log.end).map(<[_]>::len), Some(0));
        if let Some(first) = log.records.first() {
            assert!(log.after(first.from).is_some());
        }
    }
});
