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

// ------------------------------------------------------------ check-config

fn check_config(files: &[&std::path::Path]) -> Output {
    Command::new(BIN)
        .arg("check-config")
        .args(files)
        .output()
        .unwrap()
}

#[test]
fn check_config_accepts_valid_json_and_wasmplugin_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("plugin-config.json");
    std::fs::write(
        &json,
        r#"{"mode": "header", "routeService": {"cluster": "outbound|8080||rs.x.svc.cluster.local",
            "authority": "rs.x.svc.cluster.local", "maxLookupsPerSecond": 50, "lookupBurst": 10}}"#,
    )
    .unwrap();
    // The WasmPlugin users install, as shipped.
    let shipped =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wasmplugin/wasmplugin.yaml");
    let out = check_config(&[&json, &shipped]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(
        text(&out.stdout),
        format!("{}: OK\n{}: OK\n", json.display(), shipped.display())
    );
}

#[test]
fn check_config_names_the_field_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    std::fs::write(&good, "{}").unwrap();
    let unknown = dir.path().join("unknown.json");
    std::fs::write(&unknown, r#"{"mode": "header", "routeHeaderz": "x"}"#).unwrap();
    let range = dir.path().join("wasmplugin.yaml");
    std::fs::write(
        &range,
        "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: p}\n\
         spec:\n  url: oci://r/p:1\n  pluginConfig:\n    routeService:\n      cluster: c\n      \
         authority: rs\n      maxLookupsPerSecond: 0\n",
    )
    .unwrap();
    let not_a_plugin = dir.path().join("namespace.yml");
    std::fs::write(
        &not_a_plugin,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
    )
    .unwrap();
    let missing = dir.path().join("missing.json");

    let out = check_config(&[&good, &unknown, &range, &not_a_plugin, &missing]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    assert_eq!(lines[0], format!("{}: OK", good.display()));
    assert_eq!(
        lines[1],
        format!(
            "{}: invalid configuration: routeHeaderz: unknown field `routeHeaderz`, expected one of \
             `routingKey`, `mode`, `routeHeader`, `trustIncomingRouteHeader`, `namespace`, \
             `routeService`, `routes`, `edge`, `responseHeader`, `recovery`",
            unknown.display()
        )
    );
    assert_eq!(
        lines[2],
        format!(
            "{}: invalid configuration: routeService.maxLookupsPerSecond: 0 is out of range 1..=100000",
            range.display()
        )
    );
    assert!(
        lines[3].starts_with(&format!(
            "{}: no extensions.istio.io WasmPlugin",
            not_a_plugin.display()
        )),
        "{}",
        lines[3]
    );
    assert!(
        lines[4].starts_with(&format!("{}: cannot read: ", missing.display())),
        "{}",
        lines[4]
    );
}
