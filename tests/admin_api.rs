//! The admin API (issue 15 item 1) on a real `vcnode serve`: peers, destinations and routes
//! changed through `/api` (and the CLI) apply to the running node at once and survive a
//! restart; the configuration file only seeds what the API has not changed.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn api(node: &Node, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, text) = http_json(method, &format!("http://{}{path}", node.http), body);
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"))
    };
    (status.parse().unwrap(), json)
}

/// Whether `calling` can open an association (C-ECHO) with the node.
fn associates(node: &Node, calling: &str) -> bool {
    echoscu(node, calling, "VCNODE").status.success()
}

fn peer<'a>(peers: &'a Value, ae: &str) -> Option<&'a Value> {
    peers["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["ae_title"] == ae)
}

fn cli(node: &Node, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vcnode"))
        .args(args)
        .arg("--config")
        .arg(&node.config)
        .output()
        .unwrap()
}

#[test]
fn peers_changed_through_the_api_apply_at_once_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "");
    assert!(associates(&node, "MODALITY"));
    assert!(!associates(&node, "NEWPEER"), "an unknown AE title is rejected");

    let (status, created) = api(
        &node,
        "POST",
        "/api/peers",
        r#"{"ae_title":"NEWPEER","host":"127.0.0.1"}"#,
    );
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["origin"], "api");
    assert!(
        associates(&node, "NEWPEER"),
        "a peer added through the API associates at once"
    );
    let (status, _) = api(&node, "POST", "/api/peers", r#"{"ae_title":"NEWPEER"}"#);
    assert_eq!(status, 409);

    // Invalid bodies: 400 with the reason.
    for (body, says) in [
        (r#"{"ae_title":"A_TITLE_FAR_TOO_LONG"}"#, "ae_title"),
        (r#"{"ae_title":"BAD\\AE"}"#, "backslash"),
        (r#"{"ae_title":"HOSTLESS","host":"not-an-address"}"#, "address"),
        (r#"{"ae_title":"COLOURFUL","colour":"red"}"#, "colour"),
        (r#"{"host":"127.0.0.1"}"#, "ae_title"),
        ("not json", "JSON"),
    ] {
        let (status, answer) = api(&node, "POST", "/api/peers", body);
        assert_eq!(status, 400, "{body}: {answer}");
        let reason = answer["error"].as_str().unwrap();
        assert!(reason.contains(says), "{body}: {reason}");
    }

    // Disabled: listed, not let in.
    let (status, changed) = api(
        &node,
        "PUT",
        "/api/peers/NEWPEER",
        r#"{"ae_title":"NEWPEER","host":"127.0.0.1","enabled":false}"#,
    );
    assert_eq!(status, 200, "{changed}");
    assert!(
        !associates(&node, "NEWPEER"),
        "a disabled peer cannot start an association"
    );
    let (status, _) = api(&node, "PUT", "/api/peers/NOBODY", r#"{"enabled":false}"#);
    assert_eq!(status, 404);
    // A peer from the configuration file, deleted.
    let (status, _) = api(&node, "DELETE", "/api/peers/MODALITY", "");
    assert_eq!(status, 204);
    assert!(
        !associates(&node, "MODALITY"),
        "a removed peer cannot start an association"
    );

    let (_, peers) = api(&node, "GET", "/api/peers", "");
    assert!(peer(&peers, "MODALITY").is_none(), "{peers}");
    let anywhere = peer(&peers, "ANYWHERE").unwrap();
    assert_eq!(
        (anywhere["origin"].as_str(), anywhere["host"].is_null()),
        (Some("config"), true)
    );
    assert_eq!(peer(&peers, "OTHERHOST").unwrap()["host"], "127.0.0.2");

    // Restarted on the same data and the same file: the file does not bring MODALITY back,
    // and it says so once.
    let config = node.config.clone();
    drop(node);
    let node = Node::start_with(dir.path(), config);
    assert!(
        !associates(&node, "MODALITY"),
        "a config peer deleted through the API stays deleted"
    );
    assert!(!associates(&node, "NEWPEER"), "still disabled after the restart");
    assert!(associates(&node, "ANYWHERE"));
    let (_, peers) = api(&node, "GET", "/api/peers", "");
    assert_eq!(peer(&peers, "NEWPEER").unwrap()["enabled"], false, "{peers}");
    let log = node.plain_log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("the database's is used"))
        .collect();
    assert!(
        warnings.len() == 1 && warnings[0].contains("key=MODALITY"),
        "one warning per start, naming the key: {warnings:?}"
    );
    let (status, _) = api(
        &node,
        "PUT",
        "/api/peers/NEWPEER",
        r#"{"host":"127.0.0.1","enabled":true,"origin":"api"}"#,
    );
    assert_eq!(
        status, 200,
        "a listed peer sent back (with its origin) is accepted"
    );
    assert!(associates(&node, "NEWPEER"), "enabled again");
}

#[test]
fn the_cli_changes_the_directory_of_a_running_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "");
    assert!(!associates(&node, "CLIPEER"));
    let out = cli(&node, &["peers", "add", "CLIPEER", "--host", "127.0.0.1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        wait_until(Duration::from_secs(10), || associates(&node, "CLIPEER")),
        "a peer the CLI added associates within seconds: {}",
        node.log_tail(20)
    );
    let out = cli(&node, &["peers", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("CLIPEER") && l.ends_with("api")),
        "{listed}"
    );

    // The CLI is validated as the file and the API are.
    let out = cli(&node, &["routes", "add", "MODALITY", "--to", "nowhere"]);
    assert!(
        !out.status.success() && text(&out).contains("no destination named \"nowhere\""),
        "{}",
        text(&out)
    );
    let out = cli(&node, &["peers", "add", "CLIPEER"]);
    assert!(
        !out.status.success() && text(&out).contains("exists"),
        "{}",
        text(&out)
    );

    // Destinations and routes alike; the node's API sees them within seconds.
    let out = cli(
        &node,
        &[
            "destinations",
            "add",
            "pacs",
            "--kind",
            "dimse",
            "--ae-title",
            "PACS",
            "--host",
            "127.0.0.1",
            "--port",
            "104",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = cli(&node, &["routes", "add", "MODALITY", "--to", "pacs"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        wait_until(Duration::from_secs(10), || {
            api(&node, "GET", "/api/routes", "").1["routes"][0]["to"][0] == "pacs"
        }),
        "the node applies the CLI's route"
    );
    let out = cli(&node, &["destinations", "remove", "pacs"]);
    assert!(
        !out.status.success() && text(&out).contains("\"MODALITY\""),
        "in use: {}",
        text(&out)
    );
    let out = cli(&node, &["destinations", "list"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("PACS@127.0.0.1:104"),
        "{}",
        text(&out)
    );

    let out = cli(&node, &["peers", "remove", "CLIPEER"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        wait_until(Duration::from_secs(10), || !associates(&node, "CLIPEER")),
        "a peer the CLI removed is rejected within seconds"
    );
}

/// Destinations: checked like the file, secrets never answered, and one that routes use
/// cannot be deleted.
#[test]
fn destinations_are_validated_and_their_secrets_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "");
    let secret = "s3cret-t0ken";
    let web = format!(
        r#"{{"name":"web","kind":"dicomweb","url":"http://127.0.0.1:9/dicom-web","auth":{{"bearer":"{secret}"}}}}"#
    );
    let (status, answer) = api(&node, "POST", "/api/destinations", &web);
    assert_eq!(status, 400, "{answer}");
    let reason = answer["error"].as_str().unwrap();
    assert!(
        reason.contains("allow_insecure_auth") && !reason.contains(secret),
        "{reason}"
    );

    let web = web.replace("\"auth\"", "\"allow_insecure_auth\":true,\"auth\"");
    let (status, answer) = api(&node, "POST", "/api/destinations", &web);
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["auth"]["bearer"], "***");
    let (_, list) = api(&node, "GET", "/api/destinations", "");
    assert_eq!(list["destinations"][0]["auth"]["bearer"], "***", "{list}");
    assert!(!list.to_string().contains(secret));

    for (body, says) in [
        (
            r#"{"name":"pacs","kind":"dimse","ae_title":"PACS","host":"127.0.0.1"}"#,
            "host/port",
        ),
        (r#"{"name":"pacs","kind":"ftp"}"#, "dicomweb"),
        (r#"{"name":"pacs","kind":"dicomweb","url":"ftp://x"}"#, "url"),
    ] {
        let (status, answer) = api(&node, "POST", "/api/destinations", body);
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(says),
            "{body}: {answer}"
        );
    }

    let (status, answer) = api(
        &node,
        "POST",
        "/api/routes",
        r#"{"from_ae":"MODALITY","to":["web","pacs"]}"#,
    );
    assert_eq!(status, 400, "a route to an unknown destination: {answer}");
    let (status, _) = api(
        &node,
        "POST",
        "/api/routes",
        r#"{"from_ae":"MODALITY","to":["web"]}"#,
    );
    assert_eq!(status, 201);
    let (status, answer) = api(&node, "DELETE", "/api/destinations/web", "");
    assert_eq!(status, 409);
    assert!(
        answer["error"].as_str().unwrap().contains("\"MODALITY\""),
        "{answer}"
    );
    let (_, routes) = api(&node, "GET", "/api/routes", "");
    assert_eq!(routes["routes"][0]["to"][0], "web", "{routes}");
    // The route of any sender is addressed as "*".
    let (status, _) = api(&node, "POST", "/api/routes", r#"{"from_ae":"*","to":["web"]}"#);
    assert_eq!(status, 201);
    let (status, answer) = api(&node, "DELETE", "/api/routes/*", "");
    assert_eq!(status, 204, "{answer}");
    assert!(!node.log().contains(secret), "no secret in the log");
}

/// A route changed through the API applies to the next result, and to the next after a restart;
/// a destination added through the API receives at once.
#[tokio::test]
async fn a_route_changed_through_the_api_applies_to_the_next_result() {
    let dir = tempfile::tempdir().unwrap();
    let first = Storescp::start(&dir.path().join("first"), "FIRST");
    let second = Storescp::start(&dir.path().join("second"), "SECOND");
    let routing = format!(
        "{}[[routes]]\nfrom_ae = \"MODALITY\"\nto = [\"first\"]\n",
        dimse_destination("first", "FIRST", first.port)
    );
    let node = Node::start_processing(dir.path(), &routing, "");
    let le: Vec<_> = phantom_pairs(dir.path(), 81, 416, 320)
        .into_iter()
        .map(|(le, _)| le)
        .collect();
    let received = |scp: &Storescp, n: usize| {
        wait_until(Duration::from_secs(180), || scp.files().len() >= n) && scp.files().len() == n
    };

    assert_eq!(successes(&storescu(&node, "MODALITY", &[], &le[0..1])), 1);
    assert!(received(&first, 1), "{}", node.log_tail(30));

    let second_destination = format!(
        r#"{{"name":"second","kind":"dimse","ae_title":"SECOND","host":"127.0.0.1","port":{}}}"#,
        second.port
    );
    let (status, answer) = api(&node, "POST", "/api/destinations", &second_destination);
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = api(&node, "PUT", "/api/routes/MODALITY", r#"{"to":["second"]}"#);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(successes(&storescu(&node, "MODALITY", &[], &le[1..2])), 1);
    assert!(received(&second, 1), "{}", node.log_tail(30));
    assert_eq!(
        first.files().len(),
        1,
        "the changed route sends nothing more to the first"
    );

    let config = node.config.clone();
    drop(node);
    let node = Node::start_with(dir.path(), config);
    let (_, routes) = api(&node, "GET", "/api/routes", "");
    assert_eq!(
        routes["routes"][0]["to"],
        serde_json::json!(["second"]),
        "{routes}"
    );
    assert_eq!(successes(&storescu(&node, "MODALITY", &[], &le[2..3])), 1);
    assert!(received(&second, 2), "{}", node.log_tail(30));
    assert_eq!(first.files().len(), 1);
    // Unused now, the first destination can go.
    let (status, _) = api(&node, "DELETE", "/api/destinations/first", "");
    assert_eq!(status, 204);
}

/// Removing a peer stops new associations, not the one it has open.
#[test]
fn an_association_in_progress_outlives_its_peers_removal() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "");
    let (status, _) = api(&node, "POST", "/api/peers", r#"{"ae_title":"HOLDER"}"#);
    assert_eq!(status, 201);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/admin_api/hold_association.py");
    let mut holder = Command::new(pytools_python())
        .arg(script)
        .args([&node.port(), "HOLDER"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "established");

    let (status, _) = api(&node, "DELETE", "/api/peers/HOLDER", "");
    assert_eq!(status, 204);
    assert!(!associates(&node, "HOLDER"), "no new association");
    writeln!(holder.stdin.take().unwrap()).unwrap();
    assert_eq!(
        lines.next().unwrap().unwrap(),
        "echo 0x0000",
        "the open one goes on"
    );
    assert!(holder.wait().unwrap().success());
}

/// An export still queued for a destination deleted through the API ends dead, saying why.
#[tokio::test]
async fn exports_for_a_deleted_destination_end_dead() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: each attempt fails (retried) until the destination is deleted.
    let routing = format!(
        "{}[[routes]]\nfrom_ae = \"MODALITY\"\nto = [\"gone\"]\n\
         [export]\nretry_base_ms = 200\nretry_cap_s = 1\nmax_attempts = 1000\n",
        dimse_destination("gone", "GONE", free_port())
    );
    let node = Node::start_processing(dir.path(), &routing, "");
    let le = phantom_pairs(dir.path(), 82, 416, 320).remove(0).0;
    assert_eq!(successes(&storescu(&node, "MODALITY", &[], &[le])), 1);
    let failed = wait_count(
        &node,
        "SELECT COUNT(*) FROM exports WHERE attempts >= 1 AND state = 'queued'",
        1,
        Duration::from_secs(180),
    )
    .await;
    assert_eq!(failed, 1, "{}", node.log_tail(30));

    let (status, _) = api(&node, "DELETE", "/api/routes/MODALITY", "");
    assert_eq!(status, 204);
    let (status, _) = api(&node, "DELETE", "/api/destinations/gone", "");
    assert_eq!(status, 204);
    let dead = wait_count(
        &node,
        "SELECT COUNT(*) FROM exports WHERE state = 'dead' AND last_error LIKE '%\"gone\" is no longer configured%'",
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(dead, 1, "{}", node.jobs_cli());
}
