//! Core micro-benchmarks (issue 5, item 4), natively: `make bench-core`.
//!
//! - `parse_decide/{300B,2KB,8KB}`: `decision::inspect` + `decision::decide`
//!   on a request's headers as the host hands them over (name/value pairs),
//!   the routing key last in the baggage, against a 10,000-route table;
//! - `key_cache/lookup_10k`: a hit in a key cache holding 10,000 keys.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use sandbox_router_core::config::FilterConfig;
use sandbox_router_core::decision::{self, Decision};
use sandbox_router_core::destination::RouteBefore;
use sandbox_router_core::key_cache::{CachePolicy, KeyCache};
use sandbox_router_core::route_table::{Route, RouteTable};

const HOST: &str = "catalog.demo.svc.cluster.local";

fn table(count: usize) -> RouteTable {
    let mut routes = vec![Route {
        routing_key: "pr-421".into(),
        sandbox: "pr-421".into(),
        baseline: HOST.into(),
        target: "catalog-pr-421.demo.svc.cluster.local".into(),
    }];
    for i in 1..count {
        routes.push(Route {
            routing_key: format!("sb-{i:05}"),
            sandbox: format!("sb-{i:05}"),
            baseline: format!("svc-{}.demo.svc.cluster.local", i % 50),
            target: format!("svc-{}-sb-{i:05}.demo.svc.cluster.local", i % 50),
        });
    }
    RouteTable::new(&routes).unwrap()
}

/// A baggage of about `len` bytes, `sd-routing-key=pr-421` last: at most
/// 64 members (W3C allows 180), the values as long as needed.
fn baggage(len: usize) -> String {
    let key = "sd-routing-key=pr-421";
    let members = (len / 40).clamp(1, 64);
    let value_len = ((len - key.len()) / members).saturating_sub(6).max(1);
    let mut text = String::new();
    for i in 0..members {
        text.push_str(&format!("m{i:03}={},", "v".repeat(value_len)));
    }
    text.push_str(key);
    text
}

fn headers(baggage: &str) -> Vec<(String, Vec<u8>)> {
    [
        (":authority", HOST),
        (":path", "/api/v1/items?limit=10"),
        (":method", "GET"),
        (":scheme", "http"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "*/*"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("x-request-id", "5c5a1b1e-1f1e-4b1e-9f1e-1b1e1f1e1b1e"),
        ("baggage", baggage),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v.as_bytes().to_vec()))
    .collect()
}

fn parse_decide(c: &mut Criterion) {
    let config = FilterConfig {
        namespace: "demo".into(),
        static_routes: table(10_000),
        ..FilterConfig::default()
    };
    let mut group = c.benchmark_group("parse_decide");
    for (name, len) in [("300B", 300), ("2KB", 2048), ("8KB", 8000)] {
        let headers = headers(&baggage(len));
        let authority = HOST.as_bytes();
        // Make sure it routes, or the bench measures the wrong path.
        let inspection = decision::inspect(&config, &headers);
        let d = decision::decide(
            &config,
            &config.static_routes,
            inspection,
            RouteBefore::NotSaid,
            Some(authority),
        );
        assert!(matches!(d, Decision::Routed(_)), "{name}: {d:?}");
        group.bench_function(name, |b| {
            b.iter(|| {
                let inspection = decision::inspect(&config, black_box(&headers));
                let d = decision::decide(
                    &config,
                    &config.static_routes,
                    inspection,
                    RouteBefore::NotSaid,
                    Some(black_box(authority)),
                );
                black_box(matches!(d, Decision::Routed(_)))
            })
        });
    }
    group.finish();
}

fn key_cache(c: &mut Criterion) {
    let mut cache = KeyCache::new(CachePolicy {
        ttl_ms: 30_000,
        negative_ttl_ms: 2_000,
        max_entries: 10_000,
    });
    for i in 0..10_000 {
        let key = format!("k-{i:05}");
        let routes = RouteTable::new(&[Route {
            routing_key: key.clone(),
            sandbox: key.clone(),
            baseline: HOST.into(),
            target: format!("catalog-{key}.demo.svc.cluster.local"),
        }])
        .unwrap();
        cache.insert(&key, routes, 0);
    }
    assert_eq!(cache.len(), 10_000);
    c.bench_function("key_cache/lookup_10k", |b| {
        b.iter(|| {
            let hit = cache.lookup(black_box("k-05000"), black_box(HOST), 1);
            black_box(matches!(
                hit,
                sandbox_router_core::key_cache::CacheLookup::Hit(Some(_))
            ))
        })
    });
}

criterion_group!(benches, parse_decide, key_cache);
criterion_main!(benches);
