//! The client against the real RouteService (in-process, real loopback
//! HTTP) and a scripted fake: sync with `If-None-Match`, lookup on a miss,
//! negative caching, the last good table on errors, the background thread,
//! waiting for a version, and the rule for every kind of message.

// A test crate: its helpers, like its tests, fail loudly (clippy.toml allows
// that only inside `#[test]` functions themselves).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Fake, Server, WORKLOAD};
use sandbox_router_consumer::CachePolicy;
use sandbox_router_consumer::{sync, ClientConfig, FetchError, Refresh, RouteClient, Source};

type Message = (Vec<(&'static str, &'static str)>, &'static str, usize);

fn client(url: &str, sandbox: Option<&str>) -> RouteClient {
    RouteClient::new(config(url, sandbox))
}

fn config(url: &str, sandbox: Option<&str>) -> ClientConfig {
    ClientConfig::new(url, WORKLOAD, sandbox)
        .unwrap()
        .with_cache(CachePolicy {
            ttl_ms: 30_000,
            negative_ttl_ms: 300,
            max_entries: 100,
        })
        .with_timeout(Duration::from_millis(500))
        .unwrap()
}

fn baggage(key: &str) -> [(&'static str, String); 1] {
    [("baggage", format!("userId=7,sd-routing-key={key}"))]
}

fn decide(client: &RouteClient, key: &str) -> (bool, String, Source) {
    let d = client.decide(baggage(key));
    (d.verdict.process, d.verdict.reason.code(), d.source)
}

#[test]
fn syncs_the_table_with_if_none_match() {
    let server = Server::start();
    let client = client(&server.url, None);
    assert_eq!(client.version(), None);
    assert_eq!(
        client.refresh().unwrap(),
        Refresh::Updated { from: None, to: 0 }
    );
    assert_eq!(client.refresh().unwrap(), Refresh::Unchanged(0));
    let v = server.put("pr-42", "pr-42", &["orders"]);
    assert_eq!(
        client.refresh().unwrap(),
        Refresh::Updated {
            from: Some(0),
            to: v
        }
    );
    assert_eq!(client.version(), Some(v));
    let stats = client.stats();
    assert_eq!((stats.tables_adopted, stats.not_modified), (2, 1));
}

#[test]
fn the_rule_for_every_kind_of_message() {
    let server = Server::start();
    server.put("pr-42", "pr-42", &["orders"]);
    server.put("pr-7", "pr-7", &["billing"]);
    let consumers = [None, Some("pr-42"), Some("pr-7")];
    let clients: Vec<RouteClient> = consumers
        .iter()
        .map(|sandbox| {
            let c = client(&server.url, *sandbox);
            c.refresh().unwrap();
            c
        })
        .collect();
    // (headers, reason, index of the one client that processes it)
    let messages: [Message; 10] = [
        (vec![], "no-key", 0),
        (vec![("baggage", "userId=7")], "no-key", 0),
        (
            vec![("baggage", "sd-routing-key=pr-42")],
            "forked-by:pr-42",
            1,
        ),
        (
            vec![("Baggage", "sd-routing-key=pr-42;prop=1")],
            "forked-by:pr-42",
            1,
        ),
        (
            vec![("uberctx-sd-routing-key", "pr-42")],
            "forked-by:pr-42",
            1,
        ),
        (
            vec![("ot-baggage-sd-routing-key", "pr-42")],
            "forked-by:pr-42",
            1,
        ),
        (vec![("baggage", "sd-routing-key=pr-7")], "not-forked", 0),
        (vec![("baggage", "sd-routing-key=pr-99")], "not-forked", 0),
        (
            vec![("baggage", "sd-routing-key=bad%20key")],
            "invalid-key",
            0,
        ),
        (vec![("baggage", "sd-routing-key=a%2Fb")], "invalid-key", 0),
    ];
    for (headers, reason, taker) in messages {
        for (index, client) in clients.iter().enumerate() {
            let verdict = client.should_process(headers.iter().copied());
            assert_eq!(verdict.reason.code(), reason, "{headers:?}");
            assert_eq!(verdict.process, index == taker, "{headers:?} {index}");
        }
    }
    // Any string map: a Kafka-style map of byte values.
    let kafka: HashMap<String, Vec<u8>> =
        HashMap::from([("baggage".to_owned(), b"sd-routing-key=pr-42".to_vec())]);
    assert!(clients[1].should_process(&kafka).process);
    assert!(!clients[0].should_process(&kafka).process);
}

#[test]
fn a_sandbox_newer_than_the_table_is_seen_at_once_by_lookup() {
    let server = Server::start();
    let fork = client(&server.url, Some("pr-9"));
    fork.refresh().unwrap();
    server.put("pr-9", "pr-9", &["orders"]);
    let forked = (true, "forked-by:pr-9".to_owned());
    let (process, reason, source) = decide(&fork, "pr-9");
    assert_eq!(
        ((process, reason), source),
        (forked.clone(), Source::Lookup)
    );
    let (process, reason, source) = decide(&fork, "pr-9");
    assert_eq!(((process, reason), source), (forked, Source::Cache));
    assert_eq!(fork.stats().lookups, 1);
    // Once the table has it, the table answers.
    fork.refresh().unwrap();
    assert_eq!(decide(&fork, "pr-9").2, Source::Table);
}

#[test]
fn unknown_keys_are_cached_negatively_for_the_negative_ttl() {
    let server = Server::start();
    let fork = client(&server.url, Some("pr-5"));
    fork.refresh().unwrap();
    assert_eq!(decide(&fork, "pr-5").2, Source::Lookup);
    let created = Instant::now();
    server.put("pr-5", "pr-5", &["orders"]);
    // The cached "no such key" answers until it expires (300 ms here).
    let (process, _, source) = decide(&fork, "pr-5");
    assert_eq!((process, source), (false, Source::Cache));
    let seen = loop {
        let (process, _, source) = decide(&fork, "pr-5");
        if process {
            assert_eq!(source, Source::Lookup);
            break created.elapsed();
        }
        assert!(created.elapsed() < Duration::from_secs(2), "never seen");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(seen >= Duration::from_millis(250), "{seen:?}");
    assert_eq!(fork.stats().lookups, 2);
}

#[test]
fn a_deleted_sandbox_is_seen_at_the_next_sync() {
    let server = Server::start();
    server.put("pr-42", "pr-42", &["orders"]);
    let fork = client(&server.url, Some("pr-42"));
    fork.refresh().unwrap();
    let deleted = server.delete("pr-42");
    assert_eq!(
        decide(&fork, "pr-42"),
        (true, "forked-by:pr-42".into(), Source::Table)
    );
    fork.refresh().unwrap();
    assert_eq!(fork.version(), Some(deleted));
    // The fork has seen the deletion, the baseline may not have yet: the
    // fork keeps the sandbox's messages for the hand-over grace.
    assert_eq!(
        decide(&fork, "pr-42"),
        (true, "handover:not-forked".into(), Source::Lookup)
    );
    assert_eq!(fork.handover_pending(), 1);
    assert_eq!(fork.stats().handover, 1);
}

#[test]
fn the_forks_handover_grace_ends() {
    let server = Server::start();
    server.put("pr-42", "pr-42", &["orders"]);
    let grace = Duration::from_millis(300);
    let fork = RouteClient::new(config(&server.url, Some("pr-42")).with_handover_grace(grace));
    fork.refresh().unwrap();
    server.delete("pr-42");
    fork.refresh().unwrap();
    let seen = Instant::now();
    assert!(decide(&fork, "pr-42").0, "kept during the grace");
    // Other keys are not affected.
    assert_eq!(
        decide(&fork, "pr-7"),
        (false, "not-forked".into(), Source::Lookup)
    );
    std::thread::sleep(grace.saturating_sub(seen.elapsed()) + Duration::from_millis(20));
    assert_eq!(fork.handover_pending(), 0);
    assert_eq!(decide(&fork, "pr-42").1, "not-forked");
    assert!(!decide(&fork, "pr-42").0);
}

#[test]
fn no_handover_grace_is_the_bare_rule() {
    let server = Server::start();
    server.put("pr-42", "pr-42", &["orders"]);
    let config = config(&server.url, Some("pr-42")).with_handover_grace(Duration::ZERO);
    let fork = RouteClient::new(config);
    fork.refresh().unwrap();
    server.delete("pr-42");
    fork.refresh().unwrap();
    assert_eq!(
        decide(&fork, "pr-42"),
        (false, "not-forked".into(), Source::Lookup)
    );
    assert_eq!(fork.stats().handover, 0);
}

#[test]
fn the_baseline_keeps_a_new_sandboxs_messages_for_its_grace() {
    let server = Server::start();
    let base = client(&server.url, None);
    base.refresh().unwrap();
    assert_eq!(decide(&base, "pr-42").1, "not-forked");
    std::thread::sleep(Duration::from_millis(350)); // the "no such key" expires
    server.put("pr-42", "pr-42", &["orders"]);
    // Seen at once (lookup on miss); the fork may still hold its cached
    // "no such key": the baseline keeps the message.
    assert_eq!(
        decide(&base, "pr-42"),
        (true, "handover:forked-by:pr-42".into(), Source::Lookup)
    );
    base.refresh().unwrap();
    assert_eq!(
        decide(&base, "pr-42"),
        (true, "handover:forked-by:pr-42".into(), Source::Table)
    );
    // A consumer that starts while the sandbox exists takes none of its
    // messages: no grace from a first table.
    let late = client(&server.url, None);
    late.refresh().unwrap();
    assert_eq!(
        decide(&late, "pr-42"),
        (false, "forked-by:pr-42".into(), Source::Table)
    );
    assert_eq!(late.handover_pending(), 0);
}

#[test]
fn the_last_good_table_is_kept_when_the_service_goes_away() {
    let mut server = Server::start();
    let v = server.put("pr-42", "pr-42", &["orders"]);
    let fork = client(&server.url, Some("pr-42"));
    fork.refresh().unwrap();
    server.stop();
    assert!(matches!(
        fork.refresh(),
        Err(FetchError::Unreachable { .. })
    ));
    assert_eq!(fork.version(), Some(v));
    assert_eq!(
        decide(&fork, "pr-42"),
        (true, "forked-by:pr-42".into(), Source::Table)
    );
    // A key the table does not know: baseline's, and after a few failures
    // the breaker stops asking.
    for _ in 0..20 {
        assert_eq!(
            decide(&fork, "pr-77"),
            (false, "not-forked".into(), Source::FailOpen)
        );
    }
    let stats = fork.stats();
    assert_eq!((stats.fail_open, stats.sync_errors), (20, 1));
    assert!(stats.lookups < 10, "{stats:?}");
}

#[test]
fn bad_answers_are_refused_and_the_last_good_table_kept() {
    let good = r#"{"version":3,"routes":[{"routingKey":"pr-42","sandbox":"pr-42","baseline":"orders.shop.svc.cluster.local","target":"orders-pr-42.shop.svc.cluster.local"}]}"#;
    let bad_routes = "{\"version\":4,\"routes\":[{\"routingKey\":\"a b\",\"sandbox\":\"s\",\"baseline\":\"x.y\",\"target\":\"z.y\"}]}";
    let bad_delta = "{\"version\":4,\"since\":3,\"upserts\":[{\"routingKey\":\"a b\",\"sandbox\":\"s\",\"baseline\":\"x.y\",\"target\":\"z.y\"}],\"deletes\":[]}";
    let fake = Fake::start(vec![
        (200, "etag: \"3\"\r\n", good.to_owned()),
        // since=3: a server error is a failed sync (no second call).
        (500, "", "{\"error\":\"internal error\"}".to_owned()),
        // since=3: a delta that cannot be applied: the full table, bad too.
        (200, "", bad_delta.to_owned()),
        (200, "", bad_routes.to_owned()),
        // since=3: not JSON, then the full table: not JSON either.
        (200, "", "not json".to_owned()),
        (200, "", "not json".to_owned()),
        (304, "etag: \"3\"\r\n", String::new()),
    ]);
    let fork = client(&fake.url(), Some("pr-42"));
    assert_eq!(
        fork.refresh().unwrap(),
        Refresh::Updated { from: None, to: 3 }
    );
    assert!(!fake
        .request(0)
        .to_ascii_lowercase()
        .contains("if-none-match"));
    for _ in 0..3 {
        let error = fork.refresh().unwrap_err();
        assert!(matches!(error, FetchError::BadAnswer { .. }), "{error}");
        assert_eq!(fork.version(), Some(3));
        assert!(fork.should_process(baggage("pr-42")).process);
    }
    let asked: Vec<String> = (1..6)
        .map(|i| fake.request(i).lines().next().unwrap().to_owned())
        .collect();
    assert_eq!(
        asked,
        [
            "GET /v1/routes?since=3 HTTP/1.1",
            "GET /v1/routes?since=3 HTTP/1.1",
            "GET /v1/routes HTTP/1.1",
            "GET /v1/routes?since=3 HTTP/1.1",
            "GET /v1/routes HTTP/1.1",
        ]
    );
    let conditional = fake.request(3).to_ascii_lowercase();
    assert!(
        conditional.contains("if-none-match: \"3\""),
        "{conditional}"
    );
    assert_eq!(fork.refresh().unwrap(), Refresh::Unchanged(3));
    assert_eq!(fork.stats().sync_errors, 3);
}

#[test]
fn syncs_by_delta_once_it_holds_a_table() {
    let server = Server::start();
    server.put("pr-42", "pr-42", &["orders", "billing"]);
    let bare = |sandbox| {
        RouteClient::new(config(&server.url, sandbox).with_handover_grace(Duration::ZERO))
    };
    let base = bare(None);
    let fork = bare(Some("pr-42"));
    for c in [&base, &fork] {
        c.refresh().unwrap();
    }
    assert!(!base.should_process(baggage("pr-42")).process);
    // pr-42 stops forking orders; pr-7 starts.
    server.put("pr-42", "pr-42", &["billing"]);
    let v = server.put("pr-7", "pr-7", &["orders"]);
    for c in [&base, &fork] {
        assert!(matches!(c.refresh().unwrap(), Refresh::Updated { to, .. } if to == v));
        assert_eq!(c.refresh().unwrap(), Refresh::Unchanged(v));
    }
    assert_eq!(base.decide(baggage("pr-42")).source, Source::Table);
    assert!(
        base.should_process(baggage("pr-42")).process,
        "no longer forked"
    );
    assert!(!base.should_process(baggage("pr-7")).process);
    assert!(!fork.should_process(baggage("pr-42")).process);
    // The table reached by deltas is the full table.
    let full = bare(None);
    full.refresh().unwrap();
    for key in ["pr-42", "pr-7", "pr-9"] {
        assert_eq!(
            base.decide(baggage(key)).verdict,
            full.decide(baggage(key)).verdict,
            "{key}"
        );
    }
    let stats = base.stats();
    assert_eq!(
        (
            stats.tables_adopted,
            stats.full_tables,
            stats.deltas,
            stats.not_modified,
            stats.gone
        ),
        (2, 1, 1, 1, 0)
    );
}

#[test]
fn a_410_takes_the_full_table() {
    let good = |v: u64, target: &str| {
        format!(
            r#"{{"version":{v},"routes":[{{"routingKey":"pr-42","sandbox":"pr-42","baseline":"orders.shop.svc.cluster.local","target":"{target}.shop.svc.cluster.local"}}]}}"#
        )
    };
    let fake = Fake::start(vec![
        (200, "", good(3, "orders-a")),
        (410, "", r#"{"error":"since: version 3 is not in this server's history"}"#.to_owned()),
        (200, "", good(9, "orders-b")),
        (200, "", r#"{"version":10,"since":9,"upserts":[],"deletes":[{"routingKey":"pr-42","baseline":"orders.shop.svc.cluster.local"}]}"#.to_owned()),
    ]);
    let c = client(&fake.url(), None);
    c.refresh().unwrap();
    assert_eq!(
        c.refresh().unwrap(),
        Refresh::Updated {
            from: Some(3),
            to: 9
        }
    );
    assert!(fake.request(1).starts_with("GET /v1/routes?since=3 "));
    assert!(fake.request(2).starts_with("GET /v1/routes "));
    assert!(!c.should_process(baggage("pr-42")).process);
    assert_eq!(
        c.refresh().unwrap(),
        Refresh::Updated {
            from: Some(9),
            to: 10
        }
    );
    assert!(fake.request(3).starts_with("GET /v1/routes?since=9 "));
    assert!(c.should_process(baggage("pr-42")).process, "deleted");
    let stats = c.stats();
    assert_eq!((stats.gone, stats.full_tables, stats.deltas), (1, 2, 1));
}

#[test]
fn a_lookup_answer_for_another_key_is_not_trusted() {
    let foreign = r#"{"version":3,"routes":[{"routingKey":"pr-1","sandbox":"pr-1","baseline":"orders.shop.svc.cluster.local","target":"orders-pr-1.shop.svc.cluster.local"}]}"#;
    let fake = Fake::start(vec![(200, "", foreign.to_owned())]);
    let fork = client(&fake.url(), Some("pr-1"));
    assert_eq!(decide(&fork, "pr-2").2, Source::FailOpen);
    assert_eq!(
        fake.request(0).lines().next().unwrap(),
        "GET /v1/routes?routingKey=pr-2 HTTP/1.1"
    );
    assert_eq!(fork.stats().lookup_errors, 1);
}

#[test]
fn the_background_thread_syncs_and_callers_wait_for_a_version() {
    let server = Server::start();
    let config = config(&server.url, Some("pr-42"))
        .with_sync_interval(Duration::from_millis(50))
        .unwrap();
    let (client, sync) = sync::start(config).unwrap();
    client.wait_for_version(0, Duration::from_secs(5)).unwrap();
    let v = server.put("pr-42", "pr-42", &["orders"]);
    assert_eq!(client.wait_for_version(v, Duration::from_secs(5)), Ok(v));
    assert_eq!(decide(&client, "pr-42").2, Source::Table);
    let late = client
        .wait_for_version(v + 10, Duration::from_millis(100))
        .unwrap_err();
    assert_eq!((late.wanted, late.have), (v + 10, Some(v)));
    // By equality (hash versions): the version held, not a smaller one.
    assert_eq!(
        client.wait_for_exact_version(v, Duration::from_secs(1)),
        Ok(v)
    );
    let other = client
        .wait_for_exact_version(v - 1, Duration::from_millis(100))
        .unwrap_err();
    assert_eq!((other.wanted, other.have), (v - 1, Some(v)));
    sync.stop();
    let after = client.stats().not_modified;
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(client.stats().not_modified, after, "still syncing");
}

#[test]
fn dropping_the_sync_thread_does_not_wait_for_the_interval() {
    let server = Server::start();
    let config = config(&server.url, None)
        .with_sync_interval(Duration::from_secs(3600))
        .unwrap();
    let client = Arc::new(RouteClient::new(config));
    let sync = sync::SyncThread::spawn(Arc::clone(&client)).unwrap();
    client.wait_for_version(0, Duration::from_secs(5)).unwrap();
    let started = Instant::now();
    drop(sync);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn a_lagging_fork_keeps_what_was_produced_during_its_grace() {
    let server = Server::start();
    server.put("pr-42", "pr-42", &["orders"]);
    let grace = Duration::from_millis(200);
    let fork = RouteClient::new(config(&server.url, Some("pr-42")).with_handover_grace(grace));
    fork.refresh().unwrap();
    server.delete("pr-42");
    let during = std::time::SystemTime::now();
    fork.refresh().unwrap();
    std::thread::sleep(grace + Duration::from_millis(50));
    // The grace is over, but this message was stored during it: the
    // baseline may have skipped it long ago, from its old table.
    let late = fork.decide_produced(baggage("pr-42"), Some(during));
    assert_eq!(late.verdict.reason.code(), "handover:not-forked");
    assert!(late.verdict.process);
    let fresh = fork.decide_produced(baggage("pr-42"), Some(std::time::SystemTime::now()));
    assert!(!fresh.verdict.process);
    assert!(!fork.decide(baggage("pr-42")).verdict.process);
}
