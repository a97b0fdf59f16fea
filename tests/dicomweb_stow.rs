//! STOW-RS into a real `vcnode serve`: Python's dicomweb-client (and raw HTTP where a client
//! would not send such a request) against the node, checked in the node's database and store,
//! and a stored LE image processed and routed by `[dicomweb] sender` to dcmtk's storescp.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use vcnode::fixture::{mammogram, MammogramSpec, CT_IMAGE_STORAGE};

const LIMIT: Duration = Duration::from_secs(180);

/// The bytes of a Part 10 file after its file meta group: the data set.
fn data_set_of(file: &[u8]) -> &[u8] {
    assert_eq!(&file[128..132], b"DICM");
    let group_length = u32::from_le_bytes(file[140..144].try_into().unwrap()) as usize;
    &file[144 + group_length..]
}

/// Six LE images of one study, a CT instance and an LE image of another study, as the
/// Python side expects them.
fn write_stow_fixtures(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for seed in 1..=6 {
        mammogram(&MammogramSpec::low_energy(seed))
            .write_to_file(dir.join(format!("le-{seed}.dcm")))
            .unwrap();
    }
    let ct = MammogramSpec {
        sop_class_uid: CT_IMAGE_STORAGE.into(),
        ..MammogramSpec::low_energy(90)
    };
    mammogram(&ct).write_to_file(dir.join("ct.dcm")).unwrap();
    let other = MammogramSpec {
        study_seed: 2,
        ..MammogramSpec::low_energy(91)
    };
    mammogram(&other)
        .write_to_file(dir.join("other-study.dcm"))
        .unwrap();
    // About 1.6 MB: over storage.max_instance_mb = 1, under [dicomweb] max_request_mb = 2.
    let big = MammogramSpec {
        rows: 1024,
        columns: 800,
        ..MammogramSpec::low_energy(92)
    };
    mammogram(&big).write_to_file(dir.join("big.dcm")).unwrap();
    // Encodings the SCP accepts (JPEG-LS, deflated) and one it does not offer (JPEG 12-bit).
    for (seed, tool, args, name) in [
        (40, "/usr/bin/dcmcjpls", &[][..], "ts-jpeg-ls.dcm"),
        (41, "/usr/bin/dcmconv", &["+td"][..], "ts-deflated.dcm"),
        (42, "/usr/bin/dcmcjpeg", &["+ee"][..], "ts-unsupported.dcm"),
    ] {
        let explicit = dir.join(format!("explicit-{seed}.dcm"));
        mammogram(&MammogramSpec::low_energy(seed))
            .write_to_file(&explicit)
            .unwrap();
        convert(tool, args, &explicit, &dir.join(name));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stow_rs_stores_like_c_store_and_answers_bad_requests_per_ps3_18() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        "[dicomweb]\nmax_request_mb = 2\n[storage]\nmax_instance_mb = 1\n",
    );
    let fixtures = dir.path().join("fixtures");
    write_stow_fixtures(&fixtures);
    let report = dir.path().join("report.json");
    let base = format!("http://{}/dicomweb", node.http);
    let out = dicomweb_script(
        "stow_cases.py",
        &[base.as_ref(), fixtures.as_os_str(), report.as_os_str()],
    );
    assert!(
        out.status.success(),
        "{}\nnode log:\n{}",
        text(&out),
        node.log_tail(60)
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let stored: Vec<String> = report["stored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(stored.len(), 8, "6 LE images, one JPEG-LS, one deflated");
    let compressed: Vec<(String, String)> = report["compressed"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(uid, ts)| (uid.clone(), ts.as_str().unwrap().to_string()))
        .collect();

    // One C-STORE of another LE image, to compare rows with.
    let by_dimse = dir.path().join("dimse");
    std::fs::create_dir_all(&by_dimse).unwrap();
    let dimse_file = by_dimse.join("le-7.dcm");
    mammogram(&MammogramSpec::low_energy(7))
        .write_to_file(&dimse_file)
        .unwrap();
    assert_eq!(
        successes(&storescu(
            &node,
            "MODALITY",
            &[],
            std::slice::from_ref(&dimse_file)
        )),
        1
    );
    let dimse_uid = sop_instance_uid(&dimse_file);

    let db = DbReader::open(&node.data_dir).await;
    // Every stored instance has its row, sent by the [dicomweb] sender, and its job, in the
    // same shape as the C-STOREd one's.
    let row = |uid: &str| {
        format!(
            "SELECT i.sop_class_uid || '|' || i.transfer_syntax || '|' || i.origin || '|' || i.image_type \
             || '|' || j.state || '|' || j.max_attempts || '|' || j.attempts \
             FROM instances i JOIN jobs j ON j.source_uid = i.sop_instance_uid WHERE i.sop_instance_uid = '{uid}'"
        )
    };
    let dimse_row = db.strings(&row(&dimse_uid)).await;
    assert_eq!(dimse_row.len(), 1, "the C-STOREd image has its row and job");
    for (uid, ts) in &compressed {
        assert_eq!(
            db.strings(&format!(
                "SELECT transfer_syntax FROM instances WHERE sop_instance_uid = '{uid}'"
            ))
            .await,
            vec![ts.clone()],
            "stored in the encoding it came in"
        );
    }
    for uid in &stored {
        let row = db.strings(&row(uid)).await;
        if compressed.iter().any(|(c, _)| c == uid) {
            assert_eq!(row.len(), 1, "{uid}: a job for the compressed LE image");
        } else {
            assert_eq!(row, dimse_row, "{uid}: as by C-STORE");
        }
        assert_eq!(
            db.strings(&format!(
                "SELECT calling_ae FROM instances WHERE sop_instance_uid = '{uid}'"
            ))
            .await,
            vec!["DICOMWEB".to_string()]
        );
    }
    assert_eq!(db.count("SELECT COUNT(*) FROM instances").await, 9);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM jobs").await,
        9,
        "one job per LE image, duplicates queue none"
    );
    for uid in report["refused"].as_array().unwrap() {
        let uid = uid.as_str().unwrap();
        assert_eq!(
            db.count(&format!(
                "SELECT COUNT(*) FROM instances WHERE sop_instance_uid = '{uid}'"
            ))
            .await,
            0,
            "{uid} was refused"
        );
    }

    // The data set stored is the data set sent, byte for byte; the file meta is the node's.
    let raw_uid = report["raw"]["sop"].as_str().unwrap();
    let path = db
        .strings(&format!(
            "SELECT path FROM instances WHERE sop_instance_uid = '{raw_uid}'"
        ))
        .await
        .remove(0);
    let stored_file = std::fs::read(node.data_dir.join(path)).unwrap();
    let sent_file = std::fs::read(PathBuf::from(report["raw"]["file"].as_str().unwrap())).unwrap();
    assert!(
        data_set_of(&stored_file) == data_set_of(&sent_file),
        "the stored data set differs from the one sent"
    );
    // Nothing left in the spool ("tmp" under data_dir) by the refused and cut-short requests.
    let spool: Vec<_> = std::fs::read_dir(node.data_dir.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(spool.is_empty(), "spool files left: {spool:?}");
    // Refusals are logged with their reason; no patient name reaches the log.
    let log = node.plain_log();
    assert!(log.contains("STOW-RS request answered"), "{log}");
    assert!(!log.contains("FIXTURE^MAMMO"), "patient name in the log");
    db.close().await;
}

/// A multipart/related body of Part 10 files, as a STOW-RS client sends it.
fn stow_body(files: &[PathBuf]) -> Vec<u8> {
    let mut body = Vec::new();
    for f in files {
        body.extend_from_slice(b"\r\n--vcnode-b\r\nContent-Type: application/dicom\r\n\r\n");
        body.extend_from_slice(&std::fs::read(f).unwrap());
    }
    body.extend_from_slice(b"\r\n--vcnode-b--\r\n");
    body
}

/// POSTs a STOW-RS body with curl; returns (HTTP status, body).
fn stow_with_curl(node: &Node, files: &[PathBuf]) -> (String, String) {
    http_post(
        &format!("http://{}/dicomweb/studies", node.http),
        "multipart/related; type=\"application/dicom\"; boundary=vcnode-b",
        &stow_body(files),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stow_rs_image_is_processed_and_its_result_routed_by_the_dicomweb_sender() {
    let dir = tempfile::tempdir().unwrap();
    let web_dest = Storescp::start(&dir.path().join("for-dicomweb"), "WEBRESULTS");
    let modality_dest = Storescp::start(&dir.path().join("for-modality"), "MODRESULTS");
    let routing = format!(
        "[[destinations]]\nname = \"webresults\"\nkind = \"dimse\"\nae_title = \"WEBRESULTS\"\nhost = \"127.0.0.1\"\nport = {}\n\
         [[destinations]]\nname = \"modresults\"\nkind = \"dimse\"\nae_title = \"MODRESULTS\"\nhost = \"127.0.0.1\"\nport = {}\n\
         [[routes]]\nfrom_ae = \"DICOMWEB\"\nto = [\"webresults\"]\n\
         [[routes]]\nfrom_ae = \"MODALITY\"\nto = [\"modresults\"]\n",
        web_dest.port, modality_dest.port
    );
    let node = Node::start_processing(dir.path(), &routing, "");
    let le: Vec<PathBuf> = phantom_pairs(dir.path(), 611, 416, 320)
        .into_iter()
        .take(1)
        .map(|(le, _)| le)
        .collect();
    let (status, body) = stow_with_curl(&node, &le);
    assert_eq!(status, "200", "{body}\n{}", node.log_tail(30));
    assert!(body.contains(&sop_instance_uid(&le[0])), "{body}");

    let done = wait_count(
        &node,
        "SELECT COUNT(*) FROM exports WHERE state = 'done'",
        1,
        LIMIT,
    )
    .await;
    assert_eq!(done, 1, "{}\n{}", node.jobs_cli(), node.log_tail(40));
    let derived = derived_uids(&node).await;
    assert_eq!(derived.len(), 1);
    let received = web_dest.files();
    assert_eq!(
        received.len(),
        1,
        "the [dicomweb] sender's destination gets the result"
    );
    assert_eq!(sop_instance_uid(&received[0]), derived[0]);
    assert!(
        modality_dest.files().is_empty(),
        "a route for another sender must not get it"
    );
    assert_eq!(
        count(
            &node,
            "SELECT COUNT(*) FROM exports WHERE destination != 'webresults'"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stow_rs_client_that_stops_sending_gets_408_and_the_node_keeps_serving() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    // A short idle timeout, so the test waits seconds, not the default half minute.
    let config = write_config(dir.path(), "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("idle_timeout_s = 30", "idle_timeout_s = 2");
    std::fs::write(&config, text).unwrap();
    let node = Node::start_with(dir.path(), config);
    let le = dir.path().join("le.dcm");
    mammogram(&MammogramSpec::low_energy(5))
        .write_to_file(&le)
        .unwrap();

    // The headers and half of the body, then silence with the connection open.
    let body = stow_body(std::slice::from_ref(&le));
    let mut sock = std::net::TcpStream::connect(node.http).unwrap();
    write!(
        sock,
        "POST /dicomweb/studies HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: multipart/related; type=\"application/dicom\"; boundary=vcnode-b\r\n\
         Content-Length: {}\r\n\r\n",
        node.http,
        body.len()
    )
    .unwrap();
    sock.write_all(&body[..body.len() / 2]).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut answer = [0u8; 512];
    let n = sock.read(&mut answer).expect("an answer before the read timeout");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    let spool: Vec<_> = std::fs::read_dir(node.data_dir.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(spool.is_empty(), "spool files left: {spool:?}");
    let (status, body) = stow_with_curl(&node, &[le]);
    assert_eq!(status, "200", "{body}");
}
