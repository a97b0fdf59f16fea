//! The OHIF viewer served by vcnode, driven by headless Chromium (Debian's `chromium`) through
//! the DevTools protocol (playwright-core, tests/viewer/drive.mjs): a processing node receives a
//! phantom patient's four LE images by C-STORE, derives the synthetic RC series, and the
//! browser finds the study in OHIF's study list and opens it. The mammography hanging protocol
//! must show each LE image beside the synthetic RC derived from it (matched by laterality and
//! view), every image rendered (pixel variance of its viewport), and the derived images marked
//! AI-generated. Authentication is on ([auth] required): the browser is sent to the login page,
//! signs in as a user made with `vcnode users add`, and OHIF's DICOMweb requests carry the
//! session cookie. The screenshot stays in the test's folder; with VCNODE_VIEWER_SCREENSHOT set
//! it is also copied there (how docs/viewer.png is made).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const PROCESSING_LIMIT: Duration = Duration::from_secs(180);
/// Chromium loading OHIF (17 MB of script) and rendering eight images on a software GL.
const BROWSER_LIMIT: Duration = Duration::from_secs(150);
/// Luminance variance (0..255 scale) of a viewport canvas: a blank or uniform viewport is 0;
/// a rendered phantom mammogram measures in the thousands.
const MIN_VARIANCE: f64 = 100.0;
const AI_SERIES: &str = "AI SYNTHETIC RC";
/// The radiologist the browser signs in as (made with `vcnode users add`).
const VIEWER_USER: &str = "radiologist";
const VIEWER_PASSWORD: &str = "mammo-le-rc-viewer";

fn checkout() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// GET with an optional session cookie; redirects are not followed.
async fn get_as(url: &str, cookie: Option<&str>) -> (u16, String, String) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut request = http.get(url);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    let body = r.text().await.unwrap_or_default();
    (status, ctype, location.unwrap_or(body))
}

async fn get(url: &str) -> (u16, String, String) {
    get_as(url, None).await
}

/// Signs in on the login page as a browser does; the `vcnode_session=…` cookie.
async fn sign_in(base: &str, user: &str, password: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .post(format!("{base}/login"))
        .form(&[("username", user), ("password", password), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "sign-in");
    let set = r.headers()["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

/// Runs the browser script; its JSON report.
fn drive(
    chromium: &Path,
    driver: &Path,
    base: &str,
    study: &str,
    out: &Path,
    patient_id: &str,
) -> serde_json::Value {
    let child = Command::new("node")
        .arg(driver)
        .args([base, study])
        .arg(out)
        .arg(patient_id)
        .env("CHROMIUM", chromium)
        .env("VIEWER_USER", VIEWER_USER)
        .env("VIEWER_PASSWORD", VIEWER_PASSWORD)
        .env(
            "VIEWER_LIMIT_MS",
            (BROWSER_LIMIT.as_millis() - 10_000).to_string(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (Debian package nodejs) runs the browser script");
    browser_report(child, BROWSER_LIMIT)
}

fn json_str(v: &serde_json::Value) -> &str {
    v.as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ohif_shows_each_le_image_beside_its_synthetic_rc() {
    let (chromium, driver) = browser_tools("drive.mjs");
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    // The default viewer_dir (viewer/ohif) is found in the checkout, as under `make run`.
    let node = Node::start_processing(dir.path(), AUTH_REQUIRED, "");
    let base = format!("http://{}", node.http);
    node.add_user(VIEWER_USER, "reader", VIEWER_PASSWORD);

    // Not signed in: the viewer sends the browser to the login page; its files stay public
    // (no patient data in them).
    let (status, _, location) = get(&format!("{base}/")).await;
    assert_eq!((status, location.as_str()), (303, "/login?next=%2F"));
    let session = sign_in(&base, VIEWER_USER, VIEWER_PASSWORD).await;
    let cookie = Some(session.as_str());

    // What the browser loads first, served as OHIF needs it.
    let (status, ctype, body) = get_as(&format!("{base}/"), cookie).await;
    assert_eq!((status, ctype.as_str()), (200, "text/html"), "{body}");
    assert!(body.contains("/app-config.js"));
    let (status, ctype, config) = get(&format!("{base}/app-config.js")).await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/javascript"), "{ctype}");
    assert!(config.contains("@vcnode/mammo-le-rc"), "vcnode's own app config");
    let wasm = std::fs::read_dir(checkout().join("viewer/ohif"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.ends_with(".wasm"))
        .expect("OHIF ships WebAssembly decoders");
    let (status, ctype, _) = get(&format!("{base}/{wasm}")).await;
    assert_eq!((status, ctype.as_str()), (200, "application/wasm"));
    // Content-hashed files are cached for good, and sent gzipped to a browser that takes it.
    let r = reqwest::Client::new()
        .get(format!("{base}/{wasm}"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        r.headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    assert_eq!(header("cache-control"), "public, max-age=31536000, immutable");
    assert_eq!(
        header("content-encoding"),
        "gzip",
        "no {wasm}.gz: run scripts/fetch-viewer.sh (it adds the gzipped copies)"
    );
    assert!(header("vary").contains("accept-encoding"));
    let (status, ctype, _) = get_as(&format!("{base}/viewer?StudyInstanceUIDs=1.2.3"), cookie).await;
    assert_eq!(
        (status, ctype.as_str()),
        (200, "text/html"),
        "the app's routes fall back to index.html"
    );
    let (status, ctype, _) = get_as(&format!("{base}/dicomweb/no-such-resource"), cookie).await;
    assert_eq!(status, 404, "unknown API paths are not the app ({ctype})");
    let (status, _, _) = get(&format!("{base}/dicomweb/studies")).await;
    assert_eq!(status, 401, "no DICOMweb without signing in");

    // A phantom patient's four views, and a repeated exposure of one of them (the same
    // image under a new SOP Instance UID): two LE and two RC images of that view, so the
    // protocol must pair by the RC's source image, not only by laterality and view.
    let mut le: Vec<PathBuf> = phantom_pairs(dir.path(), 41, 1664, 1280)
        .into_iter()
        .map(|c| c.0)
        .collect();
    let repeat = dir.path().join("repeated_LE.dcm");
    std::fs::copy(&le[1], &repeat).unwrap();
    let modified = Command::new("/usr/bin/dcmodify")
        .args(["-nb", "-gin"])
        .arg(&repeat)
        .output()
        .expect("dcmodify (dcmtk)");
    assert!(modified.status.success(), "{}", common::text(&modified));
    le.push(repeat);
    let out = storescu(&node, "MODALITY", &[], &le);
    assert_eq!(successes(&out), le.len(), "{}", common::text(&out));
    let jobs = le.len() as i64;
    let done = wait_count(
        &node,
        "SELECT COUNT(*) FROM jobs WHERE state = 'done'",
        jobs,
        PROCESSING_LIMIT,
    )
    .await;
    assert_eq!(done, jobs, "jobs not done:\n{}", node.jobs_cli());
    let processed = started.elapsed();

    let db = DbReader::open(&node.data_dir).await;
    let study = db
        .strings("SELECT DISTINCT study_uid FROM instances WHERE origin = 'received'")
        .await;
    assert_eq!(study.len(), 1, "{study:?}");
    // Each LE image's SOP Instance UID and its derived RC's.
    let pairs = db
        .pairs("SELECT source_uid, sop_instance_uid FROM instances WHERE origin = 'derived'")
        .await;
    db.close().await;
    assert_eq!(pairs.len(), le.len(), "{pairs:?}");

    let patient_id = dicom_object::open_file(&le[0])
        .unwrap()
        .element(dicom_dictionary_std::tags::PATIENT_ID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim()
        .to_string();
    let report = drive(&chromium, &driver, &base, &study[0], dir.path(), &patient_id);
    let browsed = started.elapsed() - processed;
    let shown = format!(
        "report (without page text): {}",
        serde_json::to_string_pretty(&{
            let mut r = report.clone();
            r.as_object_mut().unwrap().remove("page_text");
            r.as_object_mut().unwrap().remove("study_list_text");
            r
        })
        .unwrap()
    );
    assert!(report.get("error").is_none(), "{shown}");
    // The browser was sent to the login page, signed in there and came back to the viewer.
    assert_eq!(json_str(&report["login"]["page"]), "/login?next=%2F", "{shown}");
    assert_eq!(json_str(&report["login"]["signed_in_at"]), "/", "{shown}");
    assert_eq!(report["login"]["cookie_http_only"], true, "{shown}");
    let screenshot = PathBuf::from(json_str(&report["screenshot"]));
    assert!(screenshot.is_file(), "{shown}");
    if let Ok(copy) = std::env::var("VCNODE_VIEWER_SCREENSHOT") {
        std::fs::copy(&screenshot, &copy).unwrap();
    }

    // The study list found the study by QIDO-RS on this node.
    assert_eq!(report["study_listed"], true, "{shown}");
    let requests: Vec<&str> = report["qido"].as_array().unwrap().iter().map(json_str).collect();
    assert!(
        requests.iter().any(|r| r.starts_with("GET /dicomweb/studies?")),
        "{shown}"
    );

    // The mammography protocol, all four views, each LE beside its own synthetic RC.
    assert_eq!(json_str(&report["protocol"]), "@vcnode/mammo-le-rc", "{shown}");
    let viewports = report["viewports"].as_array().unwrap();
    let viewport = |id: &str| {
        viewports
            .iter()
            .find(|v| v["id"] == id)
            .unwrap_or_else(|| panic!("no viewport {id}: {shown}"))
    };
    // Each view's LE images (two for the repeated one).
    let mut views: Vec<((String, String), Vec<String>)> = Vec::new();
    for path in &le {
        let obj = dicom_object::open_file(path).unwrap();
        let attr = |tag| obj.element(tag).unwrap().to_str().unwrap().trim().to_string();
        let key = (
            attr(dicom_dictionary_std::tags::IMAGE_LATERALITY),
            attr(dicom_dictionary_std::tags::VIEW_POSITION),
        );
        match views.iter_mut().find(|(k, _)| *k == key) {
            Some((_, uids)) => uids.push(sop_instance_uid(path)),
            None => views.push((key, vec![sop_instance_uid(path)])),
        }
    }
    assert_eq!(views.len(), 4);
    for ((laterality, view), le_uids) in &views {
        let le_vp = viewport(&format!("{laterality}{view}LE"));
        let rc_vp = viewport(&format!("{laterality}{view}RC"));
        let le_uid = json_str(&le_vp["sop"]).to_string();
        assert!(le_uids.contains(&le_uid), "{laterality} {view} LE: {shown}");
        // The RC beside it is the one derived from it.
        let derived_uid = &pairs.iter().find(|(s, _)| *s == le_uid).unwrap().1;
        assert_eq!(
            json_str(&rc_vp["sop"]),
            derived_uid,
            "{laterality} {view} RC (LEs of this view: {le_uids:?}): {shown}"
        );
        assert!(
            json_str(&rc_vp["series_description"]).starts_with(AI_SERIES),
            "{shown}"
        );
        assert_eq!(
            (json_str(&rc_vp["laterality"]), json_str(&rc_vp["view"])),
            (laterality.as_str(), view.as_str())
        );
        for vp in [le_vp, rc_vp] {
            let variance = vp["variance"].as_f64().unwrap_or(0.0);
            assert!(
                variance > MIN_VARIANCE,
                "viewport {} is blank (variance {variance}): {shown}",
                vp["id"]
            );
        }
        // The overlay marks the derived image, and only it.
        assert!(json_str(&rc_vp["overlay"]).contains("AI-GENERATED"), "{shown}");
        assert!(json_str(&rc_vp["overlay"]).contains(AI_SERIES), "{shown}");
        assert!(!json_str(&le_vp["overlay"]).contains("AI-GENERATED"), "{shown}");
    }
    assert!(json_str(&report["page_text"]).contains("AI-GENERATED"));
    eprintln!(
        "viewer test: processing {:.1} s, browser {:.1} s (script {} ms); screenshot {}; \
         DICOMweb requests {}, failed requests {}, console errors {}",
        processed.as_secs_f64(),
        browsed.as_secs_f64(),
        report["elapsed_ms"],
        screenshot.display(),
        requests.len(),
        report["failed_requests"],
        report["console_errors"],
    );
}

/// Without the viewer's folder `/` says how to install it, and the DICOMweb API still serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_viewer_root_explains_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        "\n[dicomweb]\nviewer_dir = \"no-such-viewer-folder\"\n",
    );
    let base = format!("http://{}", node.http);
    let (status, ctype, body) = get(&format!("{base}/")).await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/html"), "{ctype}");
    assert!(body.contains("scripts/fetch-viewer.sh"), "{body}");
    assert!(!body.contains(dir.path().to_str().unwrap()), "no node paths");
    // The API is still there: an unknown DICOMweb path is the API's 404, not the page.
    let (status, _, body) = get(&format!("{base}/dicomweb/no-such-resource")).await;
    assert_eq!(status, 404);
    assert!(!body.contains("fetch-viewer"), "{body}");
    assert!(
        !node.plain_log().contains("OHIF viewer installed"),
        "{}",
        node.plain_log()
    );
}
