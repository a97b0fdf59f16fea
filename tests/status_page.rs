//! The admin's status page on a real node: `GET /api/status` counts what the test sent, and
//! headless Chromium (playwright-core, tests/viewer/status.mjs) watches the page's counts
//! change while the test sends images, then adds a peer through the page's form, which can
//! associate at once. The screenshot stays in the test's folder; with VCNODE_STATUS_SCREENSHOT
//! set it is also copied there (how docs/status.png is made).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use vcnode::fixture::MammogramSpec;

/// Chromium starting, and the page polling every 2 s while the test sends and the node
/// derives and exports six small images on the CPU.
const BROWSER_LIMIT: Duration = Duration::from_secs(240);

fn checkout() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn get(node: &Node, path: &str) -> (u16, String) {
    let (status, body) = http_request("GET", &format!("http://{}{path}", node.http));
    (status.parse().unwrap_or(0), body)
}

fn status_json(node: &Node) -> Value {
    let (status, body) = get(node, "/api/status");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A storing-only node (no model: jobs stay queued) with one configured destination.
fn start_node(dir: &Path) -> Node {
    Node::start(
        dir,
        &format!(
            "\n{}\n{}",
            dimse_destination("PACS", "PACS", free_port()),
            route_all_to(&["PACS"])
        ),
    )
}

fn fixtures(dir: &Path, first_seed: u64, n: u64) -> Vec<PathBuf> {
    let specs: Vec<MammogramSpec> = (first_seed..first_seed + n)
        .map(MammogramSpec::low_energy)
        .collect();
    write_fixtures(&dir.join(format!("in-{first_seed}")), &specs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_status_counts_what_the_test_sent() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    let before = status_json(&node);
    assert_eq!(before["throughput"]["received"]["last_15_minutes"], 0);
    assert_eq!(before["jobs"]["queued"], 0);

    let files = fixtures(dir.path(), 300, 5);
    assert_eq!(successes(&storescu(&node, "MODALITY", &[], &files[..3])), 3);
    assert_eq!(successes(&storescu(&node, "ANYWHERE", &[], &files[3..])), 2);
    // A repeated C-STORE is acknowledged but is not a new instance.
    assert_eq!(successes(&storescu(&node, "MODALITY", &[], &files[..1])), 1);

    let s = status_json(&node);
    let received = &s["throughput"]["received"];
    assert_eq!(received["last_minute"], 5, "{s:#}");
    assert_eq!(received["last_15_minutes"], 5, "{s:#}");
    let stored_bytes = count(&node, "SELECT SUM(bytes) FROM instances").await;
    assert!(stored_bytes > 0);
    assert_eq!(received["bytes_last_minute"], stored_bytes);
    assert_eq!(s["throughput"]["derived"]["last_15_minutes"], 0);
    let senders = s["throughput"]["by_sender"].as_array().unwrap();
    let sent_by = |ae: &str| {
        senders
            .iter()
            .find(|x| x["calling_ae"] == ae)
            .map(|x| x["last_15_minutes"].as_i64().unwrap())
    };
    assert_eq!(
        (sent_by("MODALITY"), sent_by("ANYWHERE")),
        (Some(3), Some(2)),
        "{s:#}"
    );
    assert_eq!(
        s["jobs"],
        serde_json::json!({"queued": 5, "running": 0, "done": 0, "dead": 0})
    );
    assert_eq!(
        s["exports"],
        serde_json::json!({"queued": 0, "running": 0, "done": 0, "dead": 0})
    );
    // The configured destination, with nothing sent to it yet.
    let pacs = &s["destinations"][0];
    assert_eq!(pacs["name"], "PACS");
    assert_eq!(pacs["configured"], true);
    assert_eq!(pacs["kind"], "dimse");
    assert!(
        pacs["target"].as_str().unwrap().starts_with("PACS@127.0.0.1:"),
        "{pacs}"
    );
    assert_eq!(
        (pacs["health"].as_str(), pacs["healthy"].as_bool()),
        (Some("idle"), Some(true))
    );
    assert_eq!(pacs["last_success_at"], Value::Null);
    assert_eq!(pacs["dead"], 0);

    // The node's facts; no path of the node's anywhere in the answer.
    let n = &s["node"];
    assert_eq!(n["ae_title"], "VCNODE");
    assert_eq!(n["http_port"], node.http.port());
    assert_eq!(n["model"], Value::Null);
    assert_eq!(n["device"], "cpu");
    assert_eq!(n["ready"], true, "{n:#}");
    assert_eq!(check_names(n), ["database", "disk", "model", "scp"]);
    assert!(n["disk"]["free_bytes"].as_u64().unwrap() > 0);
    assert_eq!(n["disk"]["below_watermark"], false);
    let peers: Vec<&str> = s["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ae_title"].as_str().unwrap())
        .collect();
    assert!(peers.contains(&"MODALITY"), "{peers:?}");
    assert!(
        !s.to_string().contains(dir.path().to_str().unwrap()),
        "no node paths"
    );
}

/// `/status` is the page, beside the OHIF viewer at `/` (whose fallback takes every other
/// extension-less path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_beside_the_viewer() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(dir.path());
    let (status, page) = get(&node, "/status");
    assert_eq!(status, 200);
    assert!(page.contains("<title>vcnode status</title>"), "{page}");
    assert!(
        checkout().join("viewer/ohif/index.html").is_file(),
        "viewer/ohif missing: run scripts/fetch-viewer.sh (scripts/setup.sh calls it)"
    );
    let (status, index) = get(&node, "/");
    assert_eq!(status, 200);
    assert!(index.contains("/app-config.js"), "OHIF at /: {index}");
    assert!(!index.contains("vcnode status"));
    // The viewer's own routes are still the viewer's.
    let (status, app) = get(&node, "/viewer?StudyInstanceUIDs=1.2.3");
    assert_eq!(status, 200);
    assert!(app.contains("/app-config.js"));
}

/// What the browser script waits for and does.
struct Watch<'a> {
    /// Instances received, as the page counts them.
    received: usize,
    /// Jobs done and exports sent.
    done: usize,
    /// The peer to add through the form: AE title and host.
    peer: (&'a str, &'a str),
    /// The peer to disable by its checkbox.
    disable: &'a str,
    /// (username, password) to sign in with first.
    login: Option<(&'a str, &'a str)>,
}

/// Starts the browser script, writing into `out`.
fn start_driver(chromium: &Path, driver: &Path, node: &Node, out: &Path, watch: &Watch) -> Child {
    let Watch {
        received: expect,
        done: expect_done,
        peer,
        disable,
        login,
    } = *watch;
    let mut cmd = Command::new("node");
    cmd.arg(driver)
        .arg(format!("http://{}", node.http))
        .arg(out)
        .arg(expect.to_string())
        .args([peer.0, peer.1])
        .arg(expect_done.to_string())
        .arg(disable)
        .env("CHROMIUM", chromium)
        .env(
            "STATUS_LIMIT_MS",
            (BROWSER_LIMIT.as_millis() - 10_000).to_string(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((user, password)) = login {
        cmd.env("STATUS_USERNAME", user).env("STATUS_PASSWORD", password);
    }
    cmd.spawn()
        .expect("node (Debian package nodejs) runs the browser script")
}

/// Waits (bounded) until `file` exists, failing early if the script has ended.
fn wait_for_file(child: &mut Child, file: &Path, limit: Duration) {
    let started = Instant::now();
    while !file.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let out = drain(child);
            panic!("the browser script ended ({status}) before the page was up:\n{out}");
        }
        assert!(
            started.elapsed() < limit,
            "the page did not poll within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What an ended script wrote on stdout and stderr.
fn drain(child: &mut Child) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Some(mut p) = child.stdout.take() {
        let _ = p.read_to_string(&mut text);
    }
    if let Some(mut p) = child.stderr.take() {
        let _ = p.read_to_string(&mut text);
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_counts_change_and_changes_peers_destinations_routes() {
    let (chromium, driver) = browser_tools("status.mjs");
    let dir = tempfile::tempdir().unwrap();
    // A processing node sending its results to a PACS that takes them and to one that is down.
    let pacs = Storescp::start(&dir.path().join("pacs"), "PACS");
    let node = Node::start_processing(
        dir.path(),
        &format!(
            "\n{}{}\n{}{AUTH_REQUIRED}",
            dimse_destination("PACS", "PACS", pacs.port),
            dimse_destination("DOWN", "DOWN", free_port()),
            route_all_to(&["PACS", "DOWN"])
        ),
        "",
    );
    // The admin signs in as a person does, on the login page.
    node.add_user("admin", "admin", "status page test");
    const PEER: &str = "NEWPEER";
    // Not a peer yet: its association is rejected. ANYWHERE (from the file) may associate.
    let echo = echoscu(&node, PEER, "VCNODE");
    assert!(!echo.status.success(), "{}", text(&echo));
    let echo = echoscu(&node, "ANYWHERE", "VCNODE");
    assert!(echo.status.success(), "{}", text(&echo));

    let batches = [fixtures(dir.path(), 400, 3), fixtures(dir.path(), 410, 3)];
    let expect = batches.iter().map(Vec::len).sum::<usize>();
    let out = dir.path().join("browser");
    std::fs::create_dir_all(&out).unwrap();
    let watch = Watch {
        received: expect,
        done: expect,
        peer: (PEER, "127.0.0.1"),
        disable: "ANYWHERE",
        login: Some(("admin", "status page test")),
    };
    let mut child = start_driver(&chromium, &driver, &node, &out, &watch);
    wait_for_file(&mut child, &out.join("ready"), BROWSER_LIMIT);
    // Two batches, a poll apart, while the page watches.
    for (i, files) in batches.iter().enumerate() {
        assert_eq!(successes(&storescu(&node, "MODALITY", &[], files)), files.len());
        if i == 0 {
            tokio::time::sleep(Duration::from_millis(2500)).await;
        }
    }
    let report = browser_report(child, BROWSER_LIMIT);
    let shown = serde_json::to_string_pretty(&report).unwrap();
    assert!(report.get("error").is_none(), "{shown}");
    let screenshot = PathBuf::from(report["screenshot"].as_str().unwrap());
    assert!(screenshot.is_file(), "{shown}");
    if let Ok(copy) = std::env::var("VCNODE_STATUS_SCREENSHOT") {
        std::fs::copy(&screenshot, &copy).unwrap();
    }
    assert_eq!(report["title"], "vcnode status", "{shown}");

    // The page showed nothing received at first, then every instance, never going back;
    // then every job done and its result sent to the PACS.
    let seen = report["seen"].as_array().unwrap();
    let received: Vec<i64> = seen.iter().map(|v| v["received"].as_i64().unwrap()).collect();
    assert_eq!(received.first(), Some(&0), "{shown}");
    assert_eq!(received.last(), Some(&(expect as i64)), "{shown}");
    assert!(received.windows(2).all(|w| w[0] <= w[1]), "{shown}");
    let last = seen.last().unwrap();
    let expect = expect as i64;
    assert_eq!(last["jobs_done"], expect, "{shown}");
    assert_eq!(last["derived"], expect, "{shown}");
    assert_eq!(last["exports_done"], expect, "{shown}");
    assert_eq!(pacs.files().len() as i64, expect);
    // Each destination's health as the page shows it (a row: name, where, health, …).
    let health = report["destinations_text"].as_str().unwrap();
    let row = |name: &str| {
        health
            .lines()
            .find(|l| l.starts_with(&format!("{name}\t")))
            .unwrap_or_else(|| panic!("no row for {name}: {shown}"))
            .to_string()
    };
    assert!(row("PACS").contains("\thealthy\t"), "{shown}");
    assert!(row("DOWN").contains("\tfailing\t"), "{shown}");

    // The forms: the API's refusal was shown; then every change went through (and cleared
    // it), each listed by the page and applied by the node at once.
    assert!(report.get("steps_failed").is_none(), "{shown}");
    let refusal = report["refusal"].as_str().unwrap();
    assert!(refusal.contains("POST /api/peers: 400"), "{shown}");
    assert_eq!(report["problems"], "", "{shown}");
    assert_eq!(report["peer_listed"], true, "{shown}");
    let calls: Vec<&str> = report["api_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for call in [
        "POST /api/peers",
        "PUT /api/peers/ANYWHERE",
        "POST /api/destinations",
        "POST /api/routes",
        "DELETE /api/routes/NEWPEER",
        "DELETE /api/destinations/ARCHIVE",
    ] {
        assert!(calls.contains(&call), "{call}: {shown}");
    }
    let echo = echoscu(&node, PEER, "VCNODE");
    assert!(
        echo.status.success(),
        "the peer added on the page: {}",
        text(&echo)
    );
    let echo = echoscu(&node, "ANYWHERE", "VCNODE");
    assert!(
        !echo.status.success(),
        "the peer disabled on the page: {}",
        text(&echo)
    );
    // What the forms sent, as the Admin API held it then.
    let destinations = &report["admin"]["destinations"];
    let archive = destinations["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "ARCHIVE")
        .unwrap_or_else(|| panic!("{destinations}"));
    assert_eq!(
        (
            &archive["kind"],
            &archive["ae_title"],
            &archive["host"],
            &archive["port"]
        ),
        (
            &"dimse".into(),
            &"ARCHIVE".into(),
            &"127.0.0.1".into(),
            &11112.into()
        ),
        "{archive}"
    );
    let routes = &report["admin"]["routes"];
    let route = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["from_ae"] == PEER)
        .unwrap_or_else(|| panic!("{routes}"));
    assert_eq!(route["to"], serde_json::json!(["PACS", "ARCHIVE"]));
    // Removing: refused with the reason while a route named the destination, then done.
    let in_use = report["in_use_refusal"].as_str().unwrap();
    assert!(
        in_use.contains("DELETE /api/destinations/ARCHIVE: 409"),
        "{shown}"
    );
    assert_eq!(report["problems_after_removal"], "", "{shown}");
    let token = node.create_token("checks", "admin");
    let listed = |path: &str, list: &str, key: &str| -> Vec<String> {
        let url = format!("http://{}{path}", node.http);
        let (status, body) = http_call("GET", &url, &[format!("Authorization: Bearer {token}")], "");
        let status: u16 = status.parse().unwrap_or(0);
        assert_eq!(status, 200, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e[key].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        listed("/api/destinations", "destinations", "name"),
        ["PACS", "DOWN"]
    );
    assert_eq!(listed("/api/routes", "routes", "from_ae"), ["*"]);
    eprintln!(
        "status page test: browser {} ms, counts seen {received:?}; refusals shown: {refusal:?}, \
         {in_use:?}; screenshot {}",
        report["elapsed_ms"],
        screenshot.display()
    );
}
