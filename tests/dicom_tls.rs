//! DICOM TLS on the storage SCP (issue 15 item 5) against real peers: pynetdicom with Python's
//! ssl stores over TLS (Debian's dcmtk is built without TLS), dcmtk's echoscu speaks plain DIMSE
//! to the TLS port, and every certificate is made here by the openssl command line.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;
use vcnode::fixture::MammogramSpec;

/// A node with DICOM TLS on a free port beside plain DIMSE; `client_ca` makes client
/// certificates required.
fn start_tls_node(dir: &Path, pki: &Pki, client_ca: bool, node_extra: &str) -> (Node, u16) {
    let client_ca = if client_ca {
        format!("client_ca_file = \"{}\"\n", pki.ca.display())
    } else {
        String::new()
    };
    let extra = format!(
        "dimse_tls_port = 0\n{node_extra}\n[node.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n{client_ca}",
        pki.server.0.display(),
        pki.server.1.display(),
    );
    let node = Node::start(dir, &extra);
    let tls = node
        .dicom_tls()
        .expect("the node prints its DICOM TLS line before the DIMSE line");
    assert_ne!(tls.port(), node.addr.port());
    (node, tls.port())
}

/// tests/dicom_tls/store_tls.py: C-STORE of `files` over TLS as MODALITY, trusting `pki.ca`,
/// presenting `client` if given.
fn store_tls(port: u16, pki: &Pki, client: Option<&(PathBuf, PathBuf)>, files: &[PathBuf]) -> Output {
    store_tls_as("MODALITY", port, pki, client, files)
}

fn store_tls_as(
    calling: &str,
    port: u16,
    pki: &Pki,
    client: Option<&(PathBuf, PathBuf)>,
    files: &[PathBuf],
) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dicom_tls/store_tls.py");
    let (cert, key) = match client {
        Some((c, k)) => (c.to_str().unwrap(), k.to_str().unwrap()),
        None => ("-", "-"),
    };
    Command::new(pytools_python())
        .arg(script)
        .args(["127.0.0.1", &port.to_string(), "VCNODE", calling])
        .arg(&pki.ca)
        .args([cert, key])
        .args(files)
        .output()
        .expect("run tests/dicom_tls/store_tls.py")
}

fn fixture(dir: &Path, seed: u64) -> (PathBuf, String) {
    let file = write_fixtures(&dir.join("in"), &[MammogramSpec::low_energy(seed)]).remove(0);
    let uid = sop_instance_uid(&file);
    (file, uid)
}

/// Waits (bounded) for the job of `uid`: the instance came in through the one ingest.
async fn job_of(node: &Node, uid: &str) -> i64 {
    let sql = format!(
        "SELECT COUNT(*) FROM jobs j JOIN instances i ON i.sop_instance_uid = j.source_uid \
         WHERE j.source_uid = '{uid}' AND i.calling_ae = 'MODALITY'"
    );
    wait_count(node, &sql, 1, Duration::from_secs(20)).await
}

/// `vcnode_associations_rejected_total{reason="tls_handshake"}` from `/metrics`.
fn tls_rejections(node: &Node) -> u64 {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "10"])
        .arg(format!("http://{}/metrics", node.http))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("vcnode_associations_rejected_total{reason=\"tls_handshake\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// dcmtk's echoscu (plain DIMSE) to `port`.
fn plain_echo(port: u16) -> Output {
    Command::new(ECHOSCU)
        .args([
            "-v",
            "-to",
            "10",
            "-ta",
            "10",
            "-aet",
            "MODALITY",
            "-aec",
            "VCNODE",
            "127.0.0.1",
        ])
        .arg(port.to_string())
        .output()
        .expect("echoscu (dcmtk) must be installed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pynetdicom_stores_over_tls_and_a_plain_association_to_the_tls_port_fails() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let (node, tls_port) = start_tls_node(dir.path(), &pki, false, "");

    let (file, uid) = fixture(dir.path(), 501);
    let out = store_tls(tls_port, &pki, None, std::slice::from_ref(&file));
    assert!(out.status.success(), "C-STORE over DICOM TLS: {}", text(&out));
    assert!(text(&out).contains("stored 0x0000"), "{}", text(&out));
    assert_eq!(
        job_of(&node, &uid).await,
        1,
        "a job for the instance stored over TLS"
    );

    // Plain DIMSE to the TLS port: the handshake fails on the A-ASSOCIATE-RQ's first byte.
    let plain = plain_echo(tls_port);
    assert!(
        !plain.status.success(),
        "plain DIMSE to the TLS port must fail: {}",
        text(&plain)
    );
    assert!(
        !text(&plain).contains("Received Echo Response"),
        "{}",
        text(&plain)
    );
    assert!(tls_rejections(&node) >= 1, "counted as a TLS handshake rejection");
    assert!(
        node.plain_log().contains("DICOM TLS handshake failed"),
        "logged: {}",
        node.log_tail(20)
    );

    // The node keeps serving both doors.
    let echo = echoscu(&node, "MODALITY", "VCNODE");
    assert!(echo.status.success(), "plain DIMSE port: {}", text(&echo));
    let (second, second_uid) = fixture(dir.path(), 502);
    // The AE title policy applies on the TLS port as on the plain one.
    let stranger = store_tls_as("STRANGER", tls_port, &pki, None, std::slice::from_ref(&second));
    assert_eq!(stranger.status.code(), Some(2), "{}", text(&stranger));
    assert!(text(&stranger).contains("rejected"), "{}", text(&stranger));
    let out = store_tls(tls_port, &pki, None, &[second]);
    assert!(
        out.status.success(),
        "TLS after a failed handshake: {}",
        text(&out)
    );
    assert_eq!(job_of(&node, &second_uid).await, 1);
    assert!(
        node.plain_log().contains("tls=true"),
        "the accepted association is logged as TLS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_and_verified_against_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let (node, tls_port) = start_tls_node(dir.path(), &pki, true, "");
    let (file, uid) = fixture(dir.path(), 503);

    let stranger = store_tls(tls_port, &pki, Some(&pki.stranger), std::slice::from_ref(&file));
    assert_eq!(
        stranger.status.code(),
        Some(2),
        "a client certificate from another CA is refused: {}",
        text(&stranger)
    );
    let anonymous = store_tls(tls_port, &pki, None, std::slice::from_ref(&file));
    assert_eq!(
        anonymous.status.code(),
        Some(2),
        "no client certificate is refused: {}",
        text(&anonymous)
    );
    assert_eq!(
        count(
            &node,
            &format!("SELECT COUNT(*) FROM instances WHERE sop_instance_uid = '{uid}'")
        )
        .await,
        0,
        "nothing was stored by the refused clients"
    );
    assert!(
        tls_rejections(&node) >= 2,
        "both counted as TLS handshake rejections"
    );

    let trusted = store_tls(tls_port, &pki, Some(&pki.client), &[file]);
    assert!(
        trusted.status.success(),
        "the CA's client certificate is accepted: {}",
        text(&trusted)
    );
    assert_eq!(job_of(&node, &uid).await, 1);
    // Refused for the reasons meant, not for a certificate this test made wrong.
    let log = node.plain_log();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("DICOM TLS handshake failed"))
        .collect();
    assert!(
        failures.iter().any(|l| l.contains("UnknownIssuer")),
        "another CA's certificate: {failures:#?}"
    );
    assert!(
        failures.iter().any(|l| l.contains("peer sent no certificates")),
        "no certificate: {failures:#?}"
    );
    for secret in [&pki.server.1, &pki.client.1, &pki.stranger.1] {
        let key = std::fs::read_to_string(secret).unwrap();
        let body = key.lines().nth(1).unwrap();
        assert!(!log.contains(body), "no key material in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_handshakes_is_dropped_at_artim_and_cannot_hold_a_slot() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let (node, tls_port) = start_tls_node(
        dir.path(),
        &pki,
        false,
        "artim_timeout_s = 2\nmax_pending_associations = 2",
    );

    // As many silent connections as there are negotiating places: a modality that speaks TLS
    // still gets in (the oldest silent one is dropped for it).
    let silent: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", tls_port)).unwrap())
        .collect();
    let (file, uid) = fixture(dir.path(), 504);
    let out = store_tls(tls_port, &pki, None, &[file]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(job_of(&node, &uid).await, 1);

    // Every silent connection is closed by the node (ARTIM or eviction) without a byte of TLS
    // from the peer; the read's own limit only keeps a broken node from hanging the test.
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = [0u8; 64];
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue, // a TLS alert, then the close
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(_) => break false,
            }
        };
        assert!(closed, "the node closes a connection that never handshakes");
    }
    let log = node.plain_log();
    assert!(
        log.contains("DICOM TLS handshake timed out (ARTIM)")
            || log.contains("too many connections negotiating"),
        "{}",
        node.log_tail(20)
    );
    // One more silent connection on its own must meet ARTIM itself.
    let mut late = TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
    late.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 64];
    assert!(matches!(late.read(&mut buf), Ok(0)), "closed at ARTIM");
    assert!(
        node.plain_log().contains("DICOM TLS handshake timed out (ARTIM)"),
        "{}",
        node.log_tail(20)
    );
}
