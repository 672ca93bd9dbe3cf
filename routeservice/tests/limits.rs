//! Hostile and broken clients against the real binary over loopback TCP
//! (issue 10, "Hostile clients and a failing RouteService"): half-sent
//! requests, idle keep-alive connections, more connections than the limit,
//! a body that never arrives. Timeouts are set small by flags; every loop
//! and wait is bounded.

// A test crate: its helpers, like its tests, fail loudly (clippy.toml allows
// that only inside `#[test]` functions themselves).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Server, TOKEN};
use routeservice::client::Client;
use routeservice::model::{SandboxRoute, SandboxSpec};

fn spec() -> SandboxSpec {
    SandboxSpec {
        routing_key: "pr-42".into(),
        routes: vec![SandboxRoute {
            baseline: "catalog.demo.svc.cluster.local".into(),
            target: "catalog-pr-42.demo.svc.cluster.local".into(),
        }],
    }
}

fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(("127.0.0.1", server.port)).unwrap()
}

/// Reads until the server closes the connection (EOF or reset), or
/// `deadline`; whether it closed, and what it sent before.
fn closed_by(stream: &mut TcpStream, deadline: Instant) -> (bool, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (false, got);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return (true, got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (false, got)
            }
            Err(_) => return (true, got), // reset
        }
    }
}

/// Whether a keep-alive `GET /healthz` on `stream` is answered `200`
/// (a refused connection is closed without an answer).
fn served(stream: &mut TcpStream) -> bool {
    let request = b"GET /healthz HTTP/1.1\r\nHost: routeservice\r\n\r\n";
    if stream.write_all(request).is_err() {
        return false;
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 512];
    matches!(stream.read(&mut buf), Ok(n) if buf[..n].starts_with(b"HTTP/1.1 200"))
}

/// One value of the server's `/metrics`.
fn metric(server: &Server, name: &str) -> u64 {
    let text = ureq::get(format!("{}/metrics", server.url()))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// Open descriptors and resident memory of a process (Linux `/proc`).
fn fds_and_rss_kib(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (fds, rss)
}

/// Issue 10: 2,000 half-sent requests stayed open for ever. Now normal
/// reads go on beside them, and the server closes them after
/// `--header-read-timeout-secs`.
#[test]
fn slow_clients_are_closed_after_the_header_timeout_and_reads_go_on() {
    const SLOW: usize = 2_000;
    const HEADER_TIMEOUT: Duration = Duration::from_secs(8);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--header-read-timeout-secs",
            &HEADER_TIMEOUT.as_secs().to_string(),
            "--max-connections",
            "2500",
        ],
    );
    Client::new(&server.url(), Some(TOKEN.into()))
        .put("pr-42", &spec())
        .unwrap();
    let (fds_before, rss_before) = fds_and_rss_kib(server.child.id());

    let opened = Instant::now();
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| {
            let mut stream = connect(&server);
            stream
                .write_all(b"GET /v1/routes HTTP/1.1\r\nHost: routeservice\r\nX-Slow: ")
                .unwrap();
            stream
        })
        .collect();
    let open_took = opened.elapsed();
    assert!(
        open_took < HEADER_TIMEOUT / 2,
        "opening {SLOW} connections took {open_took:?}: too slow to test a {HEADER_TIMEOUT:?} timeout"
    );

    // While they hang: the server holds them, and reads are answered.
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let started = Instant::now();
        let routes = Client::new(&server.url(), None).routes(None).unwrap();
        assert_eq!(routes.routes.len(), 1);
        slowest = slowest.max(started.elapsed());
    }
    let open_now = metric(&server, "routeservice_connections_open");
    let (fds_during, rss_during) = fds_and_rss_kib(server.child.id());
    assert!(
        opened.elapsed() < HEADER_TIMEOUT,
        "the checks above ran past the timeout ({:?}); they prove nothing",
        opened.elapsed()
    );
    assert!(open_now > SLOW as u64, "{open_now} connections open");
    assert!(slowest < Duration::from_secs(1), "a read took {slowest:?}");

    // Then each is closed, none before its timeout.
    let deadline = opened + HEADER_TIMEOUT + Duration::from_secs(15);
    for (i, stream) in slow.iter_mut().enumerate() {
        let (closed, sent) = closed_by(stream, deadline);
        assert!(
            closed,
            "slow connection {i} still open {:?} after opening",
            opened.elapsed()
        );
        if i == 0 {
            assert!(
                opened.elapsed() >= HEADER_TIMEOUT - Duration::from_millis(100),
                "the first slow connection closed after {:?}",
                opened.elapsed()
            );
        }
        // hyper closes without an answer: there is no request to answer.
        assert!(sent.is_empty(), "{}", String::from_utf8_lossy(&sent));
    }
    let all_closed = opened.elapsed();
    // The server counts a timeout once the connection's task ends, just
    // after the socket closes: the last counts may trail the last close.
    let counted = Instant::now();
    let timed_out = loop {
        let timed_out = metric(&server, "routeservice_connections_header_timeouts_total");
        if timed_out >= SLOW as u64 || counted.elapsed() > Duration::from_secs(5) {
            break timed_out;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        timed_out >= SLOW as u64,
        "{timed_out} header timeouts counted"
    );
    let open_after = loop {
        let open = metric(&server, "routeservice_connections_open");
        if open < 5 || counted.elapsed() > Duration::from_secs(5) {
            break open;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(open_after < 5, "{open_after} connections still open");
    let (fds_after, rss_after) = fds_and_rss_kib(server.child.id());
    eprintln!(
        "{SLOW} slow clients opened in {open_took:?}; slowest of 50 reads beside them {slowest:?}; \
         all closed {all_closed:?} after opening (timeout {HEADER_TIMEOUT:?}); \
         server fds {fds_before} -> {fds_during} -> {fds_after}, \
         RSS {rss_before} -> {rss_during} -> {rss_after} KiB"
    );
}

/// An idle keep-alive connection is closed once it has been idle for the
/// header-read timeout; one in use is not.
#[test]
fn idle_keep_alive_connections_are_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--header-read-timeout-secs", "2"],
    );
    let mut stream = connect(&server);
    let request = b"GET /healthz HTTP/1.1\r\nHost: routeservice\r\n\r\n";
    // Requests 1.5 s apart keep it open past the timeout.
    for _ in 0..3 {
        stream.write_all(request).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        std::thread::sleep(Duration::from_millis(1500));
    }
    let idle_since = Instant::now() - Duration::from_millis(1500);
    let (closed, sent) = closed_by(&mut stream, Instant::now() + Duration::from_secs(10));
    assert!(closed && sent.is_empty(), "idle connection kept ({sent:?})");
    let idle = idle_since.elapsed();
    assert!(
        (Duration::from_millis(1900)..Duration::from_secs(6)).contains(&idle),
        "closed after {idle:?} idle"
    );
}

/// Past `--max-connections`, a new connection is closed at once and
/// counted; once one closes, new ones are served again.
#[test]
fn connections_past_the_limit_are_refused_and_counted() {
    const LIMIT: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--max-connections",
            "20",
            "--header-read-timeout-secs",
            "60",
        ],
    );
    // A connection the server has not finished closing yet (`wait_ready`'s,
    // a `/metrics` read) still counts, so one of ours may be refused while
    // it lingers. Hold LIMIT connections each proven served by a keep-alive
    // request; then the server holds exactly these and must refuse the next.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut held: Vec<TcpStream> = Vec::new();
    while held.len() < LIMIT {
        assert!(Instant::now() < deadline, "only {} served", held.len());
        let mut stream = connect(&server);
        if served(&mut stream) {
            held.push(stream);
        }
    }
    let mut over = connect(&server);
    let (closed, sent) = closed_by(&mut over, Instant::now() + Duration::from_secs(5));
    assert!(
        closed && sent.is_empty(),
        "connection {} was served",
        LIMIT + 1
    );

    held.truncate(LIMIT - 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    let refused = loop {
        match ureq::get(format!("{}/metrics", server.url())).call() {
            Ok(response) => break response.into_body().read_to_string().unwrap(),
            Err(e) => assert!(Instant::now() < deadline, "still refused: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let count = refused
        .lines()
        .find_map(|l| l.strip_prefix("routeservice_connections_refused_total "))
        .unwrap();
    assert!(count.parse::<u64>().unwrap() >= 1, "{refused}");
    assert!(
        server.log_text().contains("connection limit reached"),
        "{}",
        server.log_text()
    );
    drop(held);
}

/// A body that does not arrive within `--request-timeout-secs` gets `408`
/// with a JSON error, and nothing is written.
#[test]
fn a_body_that_does_not_arrive_gets_408() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--request-timeout-secs", "1"]);
    let body = serde_json::to_vec(&spec()).unwrap();
    let mut stream = connect(&server);
    let head = format!(
        "PUT /v1/sandboxes/pr-42 HTTP/1.1\r\nHost: routeservice\r\n\
         Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body[..10]).unwrap();
    let sent = Instant::now();
    let (_, answer) = closed_by(&mut stream, sent + Duration::from_secs(10));
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains(r#"{"error":"request not received and answered within 1 s"#),
        "{answer}"
    );
    let took = sent.elapsed();
    assert!(took >= Duration::from_millis(900), "408 after {took:?}");
    let list = Client::new(&server.url(), None).list().unwrap();
    assert!(list.sandboxes.is_empty() && list.version == 0, "{list:?}");
}

/// SIGTERM still stops the server: idle connections close at once, and
/// half-sent requests cannot hold the drain past the header timeout.
#[test]
fn sigterm_with_slow_clients_open_stops_within_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        &dir.path().join("data"),
        &[
            "--header-read-timeout-secs",
            "2",
            "--drain-timeout-secs",
            "30",
        ],
    );
    let slow: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut stream = connect(&server);
            stream.write_all(b"GET /v1/routes HTTP/1.1\r\nHo").unwrap();
            stream
        })
        .collect();
    let mut idle = connect(&server);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    assert!(idle.read(&mut buf).unwrap() > 0);
    let asked = Instant::now();
    let status = server.terminate();
    let took = asked.elapsed();
    assert_eq!(status.code(), Some(0), "log:\n{}", server.log_text());
    assert!(took < Duration::from_secs(6), "took {took:?} to stop");
    assert!(
        !server.log_text().contains("drain timeout"),
        "{}",
        server.log_text()
    );
    drop(slow);
}

/// A request head past 16 KiB is refused with `431` and the connection
/// closed: a slow client cannot make the server buffer more than that.
#[test]
fn a_request_head_past_16_kib_gets_431() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let mut stream = connect(&server);
    let head = format!(
        "GET /v1/routes HTTP/1.1\r\nHost: routeservice\r\nX-Big: {}\r\n\r\n",
        "a".repeat(routeservice::connections::MAX_HEADER_BYTES)
    );
    // The server may close before reading it all.
    let _ = stream.write_all(head.as_bytes());
    let (closed, answer) = closed_by(&mut stream, Instant::now() + Duration::from_secs(10));
    let answer = String::from_utf8_lossy(&answer);
    assert!(closed && answer.starts_with("HTTP/1.1 431"), "{answer}");
}
