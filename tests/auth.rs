//! Authentication on the HTTP port (issue 15, security): API tokens and users made with the
//! CLI, every `/api` and `/dicomweb` route of the real router refused without a principal (401)
//! and with the wrong role (403), sign-in on the login page and its session cookie, logout,
//! expired and revoked tokens, the failure limit (429), the audit log, and no secret in the log.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::header::{HeaderMap, AUTHORIZATION, COOKIE, LOCATION, SET_COOKIE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use vcnode::fixture::MammogramSpec;

/// Redirects are what is tested: never followed.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn send(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    headers: &[(&reqwest::header::HeaderName, String)],
) -> reqwest::Response {
    let mut request = http.request(method, url);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.send().await.unwrap()
}

fn bearer(token: &str) -> Vec<(&'static reqwest::header::HeaderName, String)> {
    vec![(&AUTHORIZATION, format!("Bearer {token}"))]
}

/// The `vcnode_session=…` pair a sign-in set.
fn session_of(headers: &HeaderMap) -> String {
    let set = headers
        .get(SET_COOKIE)
        .expect("a session cookie")
        .to_str()
        .unwrap();
    set.split(';').next().unwrap().to_string()
}

async fn sign_in(http: &reqwest::Client, base: &str, form: &[(&str, &str)]) -> reqwest::Response {
    http.post(format!("{base}/login"))
        .form(form)
        .send()
        .await
        .unwrap()
}

/// Which roles the contract lets do `method` on `path` (the test's own statement of it).
fn allowed_roles(method: &Method, path: &str) -> Vec<&'static str> {
    if path.starts_with("/api") {
        vec!["admin"]
    } else if *method == Method::GET || *method == Method::HEAD {
        vec!["admin", "reader"]
    } else if *method == Method::POST {
        vec!["admin", "uploader"]
    } else {
        vec!["admin"]
    }
}

/// A stored instance's UIDs (study, series, instance), once it is indexed.
async fn stored_uids(node: &Node, dir: &std::path::Path) -> (String, String, String) {
    let files = write_fixtures(dir, &[MammogramSpec::low_energy(7)]);
    let out = storescu(node, "MODALITY", &[], &files);
    assert_eq!(successes(&out), 1, "{}", text(&out));
    let db = DbReader::open(&node.data_dir).await;
    let rows = db
        .strings("SELECT study_uid || ' ' || series_uid || ' ' || sop_instance_uid FROM instances")
        .await;
    db.close().await;
    let uids: Vec<String> = rows[0].split(' ').map(str::to_string).collect();
    (uids[0].clone(), uids[1].clone(), uids[2].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_and_dicomweb_route_refuses_no_token_and_the_wrong_role() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), AUTH_REQUIRED);
    let base = format!("http://{}", node.http);
    let http = client();
    let tokens: Vec<(&str, String)> = ["admin", "reader", "uploader"]
        .into_iter()
        .map(|role| (role, node.create_token(&format!("t-{role}"), role)))
        .collect();
    let (study, series, instance) = stored_uids(&node, dir.path()).await;

    // The routes the node serves, read from its own router with its own configuration.
    let config = vcnode::config::Config::load(Some(&node.config)).unwrap();
    let routes: Vec<_> = vcnode::web::route_list(&config)
        .into_iter()
        .filter(|r| r.path.starts_with("/api/") || r.path.starts_with("/dicomweb/"))
        .collect();
    let listed = |m: &str, p: &str| routes.iter().any(|r| r.method.as_str() == m && r.path == p);
    assert!(
        listed("GET", "/dicomweb/studies") && listed("POST", "/dicomweb/studies"),
        "{routes:?}"
    );
    assert!(
        listed("GET", "/api/jobs") && listed("GET", "/api/audit"),
        "{routes:?}"
    );
    assert!(routes.len() >= 25, "{} routes: {routes:?}", routes.len());

    let mut checked = 0;
    for route in &routes {
        // Path parameters become the stored instance's UIDs; keys that name nothing stored
        // (a job number, an AE title) a value that names nothing, so an admin gets a 404.
        let path = route
            .path
            .split('/')
            .map(|segment| match segment {
                "{study}" => study.clone(),
                "{series}" => series.clone(),
                "{instance}" => instance.clone(),
                "{frames}" => "1".to_string(),
                "{tag}" => "7FE00010".to_string(),
                s if s.starts_with('{') => "999999".to_string(),
                s => s.to_string(),
            })
            .collect::<Vec<_>>()
            .join("/");
        let url = format!("{base}{path}");
        let what = format!("{} {}", route.method, route.path);

        let anonymous = send(&http, route.method.clone(), &url, &[]).await;
        assert_eq!(
            anonymous.status(),
            StatusCode::UNAUTHORIZED,
            "{what} without a token"
        );
        assert!(
            anonymous
                .headers()
                .get(WWW_AUTHENTICATE)
                .is_some_and(|v| v.to_str().unwrap().starts_with("Bearer")),
            "{what}: WWW-Authenticate"
        );
        let allowed = allowed_roles(&route.method, &route.path);
        for (role, token) in &tokens {
            let status = send(&http, route.method.clone(), &url, &bearer(token))
                .await
                .status();
            if allowed.contains(role) {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{what} as {role}: {status}"
                );
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{what} as {role}");
            }
        }
        checked += 1;
    }
    eprintln!("{checked} routes checked without a token and with each role");

    // Unknown paths under the API are refused before anything says whether they exist.
    let status = send(&http, Method::GET, &format!("{base}/api/no-such-thing"), &[])
        .await
        .status();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Health and metrics stay open by default (monitoring scrapes them without credentials).
    for path in ["/healthz", "/metrics"] {
        let status = send(&http, Method::GET, &format!("{base}{path}"), &[])
            .await
            .status();
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    let log = node.plain_log();
    for (_, token) in &tokens {
        assert!(!log.contains(token.as_str()), "a token in node.log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_sign_in_with_a_password_or_a_token_and_sessions_work_until_logout() {
    let dir = tempfile::tempdir().unwrap();
    // Health protected too: a reader may see it, anonymous monitoring may not.
    let node = Node::start(dir.path(), "\n[auth]\nrequired = true\nopen_health = false\n");
    let base = format!("http://{}", node.http);
    let http = client();
    let password = "correct horse battery";
    node.add_user("alice", "reader", password);
    let admin_token = node.create_token("ops", "admin");
    let users = node.cli(&["users", "list"], "");
    assert!(
        text(&users).contains("alice") && text(&users).contains("reader"),
        "{}",
        text(&users)
    );
    assert!(!text(&users).contains("argon2"), "no hashes listed");

    // The login page: a plain form with the fields of the contract.
    let page = send(&http, Method::GET, &format!("{base}/login?next=/viewer"), &[]).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    for field in [
        "name=\"username\"",
        "name=\"password\"",
        "name=\"token\"",
        "button type=\"submit\"",
        "value=\"/viewer\"",
    ] {
        assert!(html.contains(field), "{field} in {html}");
    }
    // Anonymous browsers asking for the viewer are sent there, with where they were going.
    let r = send(
        &http,
        Method::GET,
        &format!("{base}/viewer?StudyInstanceUIDs=1.2.3"),
        &[],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()[LOCATION].to_str().unwrap(),
        "/login?next=%2Fviewer%3FStudyInstanceUIDs%3D1.2.3"
    );
    // Anonymous monitoring is refused when open_health = false.
    let r = send(&http, Method::GET, &format!("{base}/metrics"), &[]).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A wrong password: the form again, no session.
    let r = sign_in(
        &http,
        &base,
        &[("username", "alice"), ("password", "wrong horse"), ("next", "/")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get(SET_COOKIE).is_none());

    // The right one: a session cookie and back to where the browser was going.
    let r = sign_in(
        &http,
        &base,
        &[
            ("username", "alice"),
            ("password", password),
            ("next", "/viewer?x=1"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/viewer?x=1");
    let set_cookie = r.headers()[SET_COOKIE].to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{attribute}: {set_cookie}");
    }
    assert!(
        !set_cookie.contains("Secure"),
        "plain http: no Secure flag ({set_cookie})"
    );
    let alice = session_of(r.headers());
    let as_alice = vec![(&COOKIE, alice.clone())];
    let get = |path: &str, h: Vec<(&'static reqwest::header::HeaderName, String)>| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move { send(&http, Method::GET, &url, &h).await.status() }
    };
    assert_eq!(get("/dicomweb/studies", as_alice.clone()).await, StatusCode::OK);
    assert_eq!(get("/viewer", as_alice.clone()).await, StatusCode::OK);
    assert_eq!(get("/metrics", as_alice.clone()).await, StatusCode::OK);
    assert_eq!(
        get("/api/jobs", as_alice.clone()).await,
        StatusCode::FORBIDDEN,
        "a reader"
    );

    // No open redirect: a foreign `next` goes to the viewer.
    let r = sign_in(
        &http,
        &base,
        &[
            ("username", "alice"),
            ("password", password),
            ("next", "//evil.example/x"),
        ],
    )
    .await;
    assert_eq!(r.headers()[LOCATION], "/");

    // Signing in with a token: an admin session, accepted by /api.
    let r = sign_in(
        &http,
        &base,
        &[("token", admin_token.as_str()), ("next", "/status")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/status");
    let ops = session_of(r.headers());
    assert_eq!(
        get("/api/jobs", vec![(&COOKIE, ops.clone())]).await,
        StatusCode::OK
    );

    // Audited: a query naming a study, and an admin change, by who did them.
    let r = send(
        &http,
        Method::GET,
        &format!("{base}/dicomweb/studies?StudyInstanceUID=1.2.826.0.1.99"),
        &[(&COOKIE, alice.clone())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = send(
        &http,
        Method::POST,
        &format!("{base}/api/jobs/424242/retry"),
        &bearer(&admin_token),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Written off the requests' path: until both rows are there (bounded).
    let started = Instant::now();
    let (mut audit, mut found) = (serde_json::Value::Null, (false, false));
    while started.elapsed() < Duration::from_secs(20) && found != (true, true) {
        audit = http
            .get(format!("{base}/api/audit?limit=50"))
            .bearer_auth(&admin_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let events = audit["events"].as_array().unwrap();
        found = (
            events.iter().any(|e| {
                e["actor"] == "alice"
                    && e["action"] == "query"
                    && e["route"] == "/dicomweb/studies"
                    && e["study_uid"] == "1.2.826.0.1.99"
                    && e["status"] == 200
            }),
            events.iter().any(|e| {
                e["actor"] == "ops"
                    && e["role"] == "admin"
                    && e["action"] == "admin"
                    && e["method"] == "POST"
                    && e["route"] == "/api/jobs/{id}/retry"
                    && e["resource"] == "424242"
                    && e["status"] == 404
            }),
        );
        if found != (true, true) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(found, (true, true), "{audit:#}");
    let alice_only: serde_json::Value = http
        .get(format!("{base}/api/audit?actor=alice"))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(alice_only["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["actor"] == "alice"));
    let log = node.plain_log();
    assert!(
        log.lines().any(|l| l.contains("vcnode::audit")
            && l.contains("actor=alice")
            && l.contains("study=\"1.2.826.0.1.99\"")),
        "an audit line in the log: {}",
        log.lines()
            .filter(|l| l.contains("audit"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Logout ends the session: the same cookie is refused afterwards.
    let r = send(
        &http,
        Method::POST,
        &format!("{base}/logout"),
        &[(&COOKIE, alice.clone())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers()[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(
        get("/dicomweb/studies", as_alice.clone()).await,
        StatusCode::UNAUTHORIZED
    );
    // Removing a user ends their other sessions too.
    let r = sign_in(&http, &base, &[("username", "alice"), ("password", password)]).await;
    let again = session_of(r.headers());
    assert_eq!(
        get("/dicomweb/studies", vec![(&COOKIE, again.clone())]).await,
        StatusCode::OK
    );
    let out = node.cli(&["users", "remove", "alice"], "");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        get("/dicomweb/studies", vec![(&COOKIE, again.clone())]).await,
        StatusCode::UNAUTHORIZED
    );

    // No secret in the log: not the password, the token or a session id.
    let log = node.plain_log();
    for secret in [
        password,
        admin_token.as_str(),
        &alice[15..],
        &ops[15..],
        &again[15..],
    ] {
        assert!(!log.contains(secret), "a secret in node.log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_expired_tokens_are_refused_and_failures_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "\n[auth]\nrequired = true\nfailures_per_minute = 3\n");
    let base = format!("http://{}", node.http);
    let studies = format!("{base}/dicomweb/studies");
    let http = client();

    // Revoked: refused by the running node at once.
    let token = node.create_token("scanner", "reader");
    assert!(token.starts_with("vcnode_") && token.len() > 60, "{token}");
    let status = |h: Vec<(&'static reqwest::header::HeaderName, String)>| {
        let http = http.clone();
        let url = studies.clone();
        async move { send(&http, Method::GET, &url, &h).await.status() }
    };
    assert_eq!(status(bearer(&token)).await, StatusCode::OK);
    let list = node.cli(&["tokens", "list"], "");
    assert!(
        text(&list).contains("scanner") && text(&list).contains("active"),
        "{}",
        text(&list)
    );
    assert!(!text(&list).contains(&token), "tokens list never shows a token");
    let out = node.cli(&["tokens", "revoke", "scanner"], "");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(status(bearer(&token)).await, StatusCode::UNAUTHORIZED);
    let list = node.cli(&["tokens", "list"], "");
    assert!(text(&list).contains("revoked"), "{}", text(&list));
    // A name is taken for good, and a wrong role is refused by the CLI.
    let dup = node.cli(&["tokens", "create", "--name", "scanner", "--role", "reader"], "");
    assert!(!dup.status.success());
    let bad = node.cli(&["tokens", "create", "--name", "x", "--role", "root"], "");
    assert!(!bad.status.success());

    // Expired: works until its time, refused after.
    let out = node.cli(
        &[
            "tokens",
            "create",
            "--name",
            "brief",
            "--role",
            "reader",
            "--expires-in",
            "3s",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    let brief = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let created = Instant::now();
    let first = status(bearer(&brief)).await;
    if created.elapsed() < Duration::from_secs(2) {
        assert_eq!(first, StatusCode::OK);
    }
    let mut refused = false;
    while created.elapsed() < Duration::from_secs(30) && !refused {
        refused = status(bearer(&brief)).await == StatusCode::UNAUTHORIZED;
        if !refused {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    assert!(refused, "an expired token is refused");

    // Failures: three bad tokens from this address (the two above were two), then 429 with
    // Retry-After, for a good token and for the login page as well.
    let good = node.create_token("good", "reader");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(status(bearer("vcnode_guess")).await);
    }
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    let r = send(&http, Method::GET, &studies, &bearer(&good)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    node.add_user("bob", "admin", "a long password");
    let r = sign_in(
        &http,
        &base,
        &[("username", "bob"), ("password", "a long password")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);

    let log = node.plain_log();
    for secret in [token.as_str(), brief.as_str(), good.as_str(), "a long password"] {
        assert!(!log.contains(secret), "a secret in node.log");
    }
}

/// The audit log is written off the requests' path, in batches: a node stopped right after a
/// burst of queries must still have a row for each of them once it has exited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_audited_request_is_in_the_table_after_a_graceful_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), AUTH_REQUIRED);
    let token = node.create_token("burst", "reader");
    let http = client();
    let studies = format!("http://{}/dicomweb/studies", node.http);
    const QUERIES: i64 = 200;
    for _ in 0..QUERIES {
        let r = send(&http, Method::GET, &studies, &bearer(&token)).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    node.terminate();
    let status = node.wait_exit(Duration::from_secs(60)).expect("the node stops");
    assert!(status.success(), "{status}");
    let db = DbReader::open(&node.data_dir).await;
    let rows = db
        .count("SELECT COUNT(*) FROM audit_log WHERE actor = 'burst'")
        .await;
    db.close().await;
    assert_eq!(rows, QUERIES, "an audit row for every query");
}
