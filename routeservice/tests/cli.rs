//! The command line for people, against a real server.

// A test crate: its helpers, like its tests, fail loudly (clippy.toml allows
// that only inside `#[test]` functions themselves).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::{Command, Output};

use common::{free_port, Server, BIN, TOKEN};

fn cli(server: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .args(["--server", server])
        .env_remove("ROUTESERVICE_TOKEN")
        .env_remove("ROUTESERVICE_SERVER");
    if let Some(token) = token {
        command.env("ROUTESERVICE_TOKEN", token);
    }
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

const CATALOG: &str = "catalog.demo.svc.cluster.local=catalog-pr-42.demo.svc.cluster.local";
const REVIEWS: &str = "reviews.demo.svc.cluster.local=reviews-pr-42.demo.svc.cluster.local";

#[test]
fn create_list_get_delete() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let url = server.url();

    let out = cli(
        &url,
        Some(TOKEN),
        &[
            "create",
            "pr-42",
            "--routing-key",
            "pr-42",
            "--route",
            CATALOG,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "created sandbox pr-42 (routing key pr-42, 1 routes, version 1)\n"
    );

    let out = cli(
        &url,
        Some(TOKEN),
        &[
            "create",
            "pr-42",
            "--routing-key",
            "pr-42",
            "--route",
            CATALOG,
            "--route",
            REVIEWS,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("stored sandbox pr-42"),
        "{}",
        text(&out.stdout)
    );

    let out = cli(&url, None, &["list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = text(&out.stdout);
    assert!(list.starts_with("NAME"), "{list}");
    assert!(list.contains("pr-42"), "{list}");
    assert!(list.contains(CATALOG) && list.contains(REVIEWS), "{list}");
    assert!(list.ends_with("1 sandboxes, table version 2\n"), "{list}");

    let out = cli(&url, None, &["get", "pr-42"]);
    assert!(out.status.success());
    let shown = text(&out.stdout);
    assert!(shown.contains("routing key: pr-42"), "{shown}");
    assert!(
        shown.contains("catalog.demo.svc.cluster.local -> catalog-pr-42.demo.svc.cluster.local"),
        "{shown}"
    );

    let out = cli(&url, None, &["get", "pr-42", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["name"], "pr-42");
    assert_eq!(json["routes"].as_array().unwrap().len(), 2);

    let out = cli(&url, None, &["routes", "--routing-key", "pr-42"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).ends_with("2 routes, table version 2\n"));

    let out = cli(&url, Some(TOKEN), &["delete", "pr-42"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "deleted sandbox pr-42\n");

    // Errors: the server's message, a non-zero exit.
    let out = cli(&url, None, &["get", "pr-42"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("404"), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no sandbox named \"pr-42\""),
        "{}",
        text(&out.stderr)
    );

    let out = cli(&url, Some(TOKEN), &["delete", "pr-42"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn errors_carry_the_servers_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let url = server.url();

    let out = cli(
        &url,
        None,
        &[
            "create",
            "pr-1",
            "--routing-key",
            "pr-1",
            "--route",
            CATALOG,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("401"), "{stderr}");
    assert!(stderr.contains("ROUTESERVICE_TOKEN"), "{stderr}");

    let out = cli(
        &url,
        Some(TOKEN),
        &[
            "create",
            "pr-1",
            "--routing-key",
            "pr 1",
            "--route",
            CATALOG,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("400") && stderr.contains("routingKey: "),
        "{stderr}"
    );

    let out = cli(
        &url,
        Some(TOKEN),
        &[
            "create",
            "pr-1",
            "--routing-key",
            "k",
            "--route",
            "Catalog.demo=x.demo",
        ],
    );
    assert!(
        text(&out.stderr).contains("routes[0].baseline"),
        "{}",
        text(&out.stderr)
    );

    let out = cli(
        &url,
        Some(TOKEN),
        &["create", "pr-1", "--routing-key", "k", "--route", "nope"],
    );
    assert_eq!(out.status.code(), Some(2), "a bad command line is clap's");
    assert!(text(&out.stderr).contains("BASELINE=TARGET"));
}

#[test]
fn an_unreachable_server_exits_69() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = cli(&url, None, &["list"]);
    assert_eq!(out.status.code(), Some(69));
    assert!(
        text(&out.stderr).contains("cannot reach"),
        "{}",
        text(&out.stderr)
    );
}
