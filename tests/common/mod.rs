//! Test harness: a real `vcnode serve` process on port 0 with its own data_dir, and dcmtk
//! peers called by full path (pip's pynetdicom may shadow them on PATH).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use vcnode::fixture::{mammogram, MammogramSpec};

pub const STORESCU: &str = "/usr/bin/storescu";
pub const ECHOSCU: &str = "/usr/bin/echoscu";

/// A running node. Killed (SIGKILL) on drop; its data_dir stays for inspection until the
/// owning TempDir goes.
pub struct Node {
    child: Child,
    pub addr: SocketAddr,
    /// The HTTP server (DICOMweb under /dicomweb).
    pub http: SocketAddr,
    /// "http", or "https" with `node.http_tls` (from the node's DICOMweb line).
    pub http_scheme: String,
    pub data_dir: PathBuf,
    pub config: PathBuf,
}

/// Writes a node configuration under `dir` (data_dir = dir/var, port 0) plus `extra` TOML.
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    write_config_with_model(dir, extra, "", "")
}

/// The shipped generator's manifest.
pub fn shipped_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/weights/scpa-unet.json")
}

/// As [`write_config`], with `[inference] model` set ("" stores and queues without processing).
/// `inference` holds more lines for the [inference] section.
pub fn write_config_with_model(dir: &Path, extra: &str, model: &str, inference: &str) -> PathBuf {
    let config = dir.join("vcnode.toml");
    let body = format!(
        r#"
[node]
bind = "127.0.0.1"
dimse_port = 0
http_port = 0
data_dir = "{data}"
idle_timeout_s = 30
{extra}

[[peers]]
ae_title = "MODALITY"
host = "127.0.0.1"
[[peers]]
ae_title = "ANYWHERE"
[[peers]]
ae_title = "OTHERHOST"
host = "127.0.0.2"

[inference]
device = "cpu"
model = "{model}"
{inference}
{auth}
"#,
        data = dir.join("var").display(),
        // Authentication is off for tests that are not about it ([auth] required = false):
        // they exercise DICOMweb and the APIs with curl, dicomweb-client and Orthanc, and an
        // admin token threaded through each of those would test nothing more. Tests about it
        // (tests/auth.rs, tests/viewer.rs) write their own [auth] section, which turns this off.
        auth = if extra.contains("[auth]") || inference.contains("[auth]") {
            ""
        } else {
            "[auth]\nrequired = false"
        }
    );
    std::fs::write(&config, body).unwrap();
    config
}

impl Node {
    /// Starts a node in `dir` with `extra` TOML in its [node] section (other sections may
    /// follow) and waits until it listens.
    pub fn start(dir: &Path, extra: &str) -> Node {
        let config = write_config(dir, extra);
        Node::start_with(dir, config)
    }

    /// Starts a node that processes jobs with the shipped generator.
    pub fn start_processing(dir: &Path, extra: &str, inference: &str) -> Node {
        let config = write_config_with_model(dir, extra, shipped_model().to_str().unwrap(), inference);
        Node::start_with(dir, config)
    }

    pub fn start_with(dir: &Path, config: PathBuf) -> Node {
        Node::start_with_env(dir, config, &[])
    }

    /// As [`Node::start_with`], with more environment variables (e.g. a test-only fault hook).
    pub fn start_with_env(dir: &Path, config: PathBuf, env: &[(&str, &str)]) -> Node {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_vcnode"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("VCNODE_LOG", "info,vcnode=debug")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start vcnode");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Every stdout line is kept in node.stdout too, for the lines read at the end of this
        // file (written before the DIMSE line is taken: it comes last).
        let mut kept = std::fs::File::create(dir.join("node.stdout")).unwrap();
        std::thread::spawn(move || {
            // The DICOMweb line comes first, then the DIMSE line once both listen.
            let mut http = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = std::io::Write::write_all(&mut kept, format!("{line}\n").as_bytes());
                // "vcnode DICOMweb on http://ADDR/dicomweb" (or https://).
                if let Some((scheme, rest)) = line
                    .split(" DICOMweb on ")
                    .nth(1)
                    .and_then(|url| url.trim().split_once("://"))
                {
                    let addr = rest.trim_end_matches("/dicomweb");
                    http = Some((addr.parse::<SocketAddr>().unwrap(), scheme.to_string()));
                }
                if let Some(addr) = line.split(" listening on ").nth(1) {
                    let dimse = addr.trim().parse::<SocketAddr>().unwrap();
                    let _ = tx.send((dimse, http.clone().expect("the DICOMweb line comes first")));
                }
            }
        });
        let (addr, (http, http_scheme)) = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "vcnode did not start; log:\n{}",
                    std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
                );
            }
        };
        Node {
            child,
            addr,
            http,
            http_scheme,
            data_dir: dir.join("var"),
            config,
        }
    }

    /// `scheme://ADDR` of the HTTP port, as the node printed it (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.http_scheme, self.http)
    }

    pub fn port(&self) -> String {
        self.addr.port().to_string()
    }

    /// SIGKILL: no shutdown code runs, as in a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.parent().unwrap().join("node.log")).unwrap_or_default()
    }

    /// The log without the terminal colours tracing adds around field names.
    pub fn plain_log(&self) -> String {
        strip_ansi(&self.log())
    }

    /// The last `n` lines of the log, without colours.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.plain_log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `vcnode jobs` for this node, as a user would run it.
    pub fn jobs_cli(&self) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_vcnode"))
            .args(["jobs", "--config"])
            .arg(&self.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "vcnode jobs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `s` without the terminal colours tracing adds around field names.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Stdout and stderr together: dcmtk logs to either, depending on build.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn echoscu(node: &Node, calling: &str, called: &str) -> Output {
    Command::new(ECHOSCU)
        .args(["-v", "-aet", calling, "-aec", called, "127.0.0.1", &node.port()])
        .output()
        .expect("echoscu (dcmtk) must be installed")
}

pub fn storescu(node: &Node, calling: &str, extra: &[&str], files: &[PathBuf]) -> Output {
    Command::new(STORESCU)
        .args(["-v", "-aet", calling, "-aec", "VCNODE"])
        .args(extra)
        .args(["127.0.0.1", &node.port()])
        .args(files)
        .output()
        .expect("storescu (dcmtk) must be installed")
}

/// How many C-STORE responses dcmtk's storescu reported as success.
pub fn successes(out: &Output) -> usize {
    text(out).matches("Received Store Response (Success)").count()
}

/// Writes fixture mammograms and returns their paths.
pub fn write_fixtures(dir: &Path, specs: &[MammogramSpec]) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    specs
        .iter()
        .map(|spec| {
            let path = dir.join(format!("fixture-{}-{}.dcm", spec.seed, spec.sop_class_uid));
            mammogram(spec).write_to_file(&path).unwrap();
            path
        })
        .collect()
}

/// Runs a converter (dcmtk or gdcm) `tool args… input output` and returns the output path.
pub fn convert(tool: &str, args: &[&str], input: &Path, output: &Path) -> PathBuf {
    let out = Command::new(tool)
        .args(args)
        .arg(input)
        .arg(output)
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(out.status.success(), "{tool} failed: {}", text(&out));
    output.to_path_buf()
}

/// The SOP Instance UID of a file.
pub fn sop_instance_uid(path: &Path) -> String {
    let obj = dicom_object::open_file(path).unwrap();
    obj.meta()
        .media_storage_sop_instance_uid()
        .trim_end_matches('\0')
        .to_string()
}

/// The Study Instance UID of a Part 10 file.
pub fn study_uid(path: &Path) -> String {
    let obj = dicom_object::open_file(path).unwrap();
    obj.element(dicom_dictionary_std::tags::STUDY_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .to_string()
}

/// Opens the node's SQLite file directly, as an admin with sqlite3 would.
pub async fn count(node: &Node, sql: &str) -> i64 {
    let q = vcnode::queue::Queue::open(&node.data_dir).await.unwrap();
    let n: i64 = sqlx::query_scalar(sql).fetch_one(q.pool()).await.unwrap();
    q.close().await;
    n
}

/// Waits (bounded) until `sql` counts at least `want`; returns the last count.
pub async fn wait_count(node: &Node, sql: &str, want: i64, limit: std::time::Duration) -> i64 {
    let started = std::time::Instant::now();
    loop {
        let n = count(node, sql).await;
        if n >= want || started.elapsed() > limit {
            return n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The SOP Instance UIDs of the node's derived instances, sorted.
pub async fn derived_uids(node: &Node) -> Vec<String> {
    let q = vcnode::queue::Queue::open(&node.data_dir).await.unwrap();
    let mut v: Vec<String> =
        sqlx::query_scalar("SELECT sop_instance_uid FROM instances WHERE origin = 'derived'")
            .fetch_all(q.pool())
            .await
            .unwrap();
    q.close().await;
    v.sort();
    v
}

/// The SOP Instance UIDs Orthanc holds, sorted.
pub fn sorted_uids(o: &Orthanc) -> Vec<String> {
    let mut v: Vec<String> = o.instance_uids().into_iter().map(|(_, uid)| uid).collect();
    v.sort();
    v
}

/// A free TCP port on loopback (released before use: good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real Orthanc (Debian's, with its DICOMweb plugin) on free ports, its own storage.
pub struct Orthanc {
    child: Option<Child>,
    pub dir: PathBuf,
    pub http_port: u16,
    pub dicom_port: u16,
    /// More keys for orthanc.json (e.g. "LuaScripts"); see `start_counting_receptions`.
    extra_config: serde_json::Map<String, serde_json::Value>,
}

impl Orthanc {
    pub fn start(dir: &Path) -> Orthanc {
        let mut o = Orthanc::on_free_ports(dir);
        o.restart();
        o
    }

    /// Not started yet: [`Orthanc::restart`] starts it.
    fn on_free_ports(dir: &Path) -> Orthanc {
        Orthanc {
            child: None,
            dir: dir.to_path_buf(),
            http_port: free_port(),
            dicom_port: free_port(),
            extra_config: serde_json::Map::new(),
        }
    }

    /// Starts (again) on the same ports and storage.
    pub fn restart(&mut self) {
        std::fs::create_dir_all(self.dir.join("db")).unwrap();
        let config = self.dir.join("orthanc.json");
        let mut body = serde_json::json!({
            "Name": "vcnode-test",
            "StorageDirectory": self.dir.join("db"),
            "IndexDirectory": self.dir.join("db"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "ORTHANC",
            "DicomCheckCalledAet": true,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
            "DicomWeb": { "Enable": true, "Root": "/dicom-web/" }
        });
        body.as_object_mut().unwrap().extend(self.extra_config.clone());
        std::fs::write(&config, serde_json::to_string_pretty(&body).unwrap()).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("orthanc.log"))
            .unwrap();
        let child = Command::new("/usr/sbin/Orthanc")
            .arg(&config)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("Orthanc (Debian package orthanc) must be installed");
        self.child = Some(child);
        for _ in 0..300 {
            if http_get(self.http_port, "/system").is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "Orthanc did not start: {}",
            std::fs::read_to_string(self.dir.join("orthanc.log")).unwrap_or_default()
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// GET on Orthanc's REST API; the body when the status is 200.
    pub fn get(&self, path: &str) -> Option<Vec<u8>> {
        http_get(self.http_port, path)
    }

    /// The SOP Instance UIDs Orthanc holds.
    pub fn instance_uids(&self) -> Vec<(String, String)> {
        let ids: Vec<String> =
            serde_json::from_slice(&self.get("/instances").unwrap_or_default()).unwrap_or_default();
        ids.into_iter()
            .map(|id| {
                let v: serde_json::Value =
                    serde_json::from_slice(&self.get(&format!("/instances/{id}")).unwrap()).unwrap();
                (
                    id,
                    v["MainDicomTags"]["SOPInstanceUID"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A minimal blocking HTTP GET over loopback with curl (the tests need no HTTP client crate).
fn http_get(port: u16, path: &str) -> Option<Vec<u8>> {
    let out = Command::new("curl")
        .args([
            "-sf",
            "--max-time",
            "10",
            &format!("http://127.0.0.1:{port}{path}"),
        ])
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}

/// One phantom patient (4 views) written under `dir`: (LE file, true RC file) per view.
pub fn phantom_pairs(dir: &Path, seed: u64, rows: usize, cols: usize) -> Vec<(PathBuf, PathBuf)> {
    let out = dir.join(format!("phantom-{seed}"));
    let spec = vcnode_lab::phantom::PhantomDatasetSpec {
        patients: 1,
        seed,
        rows,
        cols,
        lesions: None,
    };
    vcnode_lab::phantom::write_dataset(&out, &spec).unwrap();
    std::fs::read_to_string(out.join("pairs.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (out.join(f[0]), out.join(f[1]))
        })
        .collect()
}

/// Stores one phantom patient's four real-size LE images (`seed`, written under `dir`) and
/// waits (bounded) until a job runs: the moment to interrupt a processing node.
pub async fn store_until_processing(node: &Node, dir: &Path, seed: u64, limit: Duration) {
    let le: Vec<PathBuf> = phantom_pairs(dir, seed, 1664, 1280)
        .into_iter()
        .map(|(le, _)| le)
        .collect();
    assert_eq!(successes(&storescu(node, "MODALITY", &[], &le)), 4);
    let running = wait_count(
        node,
        "SELECT COUNT(*) FROM jobs WHERE state = 'running'",
        1,
        limit,
    )
    .await;
    assert!(running >= 1, "{}", node.jobs_cli());
}

/// Starts a node on `node`'s configuration and data (the old process stopped) and waits
/// (bounded) until `jobs` jobs are done.
pub async fn restart_until_done(node: &Node, dir: &Path, jobs: i64, limit: Duration) -> Node {
    let node = Node::start_with(dir, node.config.clone());
    assert_eq!(
        wait_count(
            &node,
            "SELECT COUNT(*) FROM jobs WHERE state = 'done'",
            jobs,
            limit
        )
        .await,
        jobs,
        "{}",
        node.jobs_cli()
    );
    node
}

/// Shutdown and crash checks (tests/lease_queue.rs).
impl Node {
    /// SIGTERM, as systemd or `docker stop` would send.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits (bounded) for the process to end; None if it still runs after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if started.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// --- Hostile-peer suite (tests/hostile.rs): the node's process, for liveness and /proc reads.

impl Node {
    /// The node's process id (for /proc/<pid>/status).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status when the node has died, None while it runs.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

// ---- Destinations for export tests (tests/export_stall.rs) ----

pub const STORESCP: &str = "/usr/bin/storescp";

/// A PACS that completes every association and then never reads again, keeping the socket
/// open: what a hung archive looks like from the sending side.
pub struct StalledPacs {
    pub port: u16,
    /// Associations accepted so far.
    pub accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl StalledPacs {
    pub fn start() -> StalledPacs {
        use dicom_ul::pdu::{read_pdu, write_pdu, AssociationAC, PresentationContextResult};
        use dicom_ul::pdu::{PresentationContextResultReason, UserVariableItem};
        use dicom_ul::Pdu;
        use std::io::{Read, Write};

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        // Lives until the test process ends; the held sockets with it.
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                let Ok(mut sock) = conn else { continue };
                let mut header = [0u8; 6];
                if sock.read_exact(&mut header).is_err() {
                    continue;
                }
                let len = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
                let mut pdu = header.to_vec();
                pdu.resize(6 + len.min(1 << 20), 0);
                if sock.read_exact(&mut pdu[6..]).is_err() {
                    continue;
                }
                let Ok(Some(Pdu::AssociationRQ(rq))) = read_pdu(&pdu[..], 1 << 20, false) else {
                    continue;
                };
                let ac = Pdu::AssociationAC(AssociationAC {
                    protocol_version: rq.protocol_version,
                    calling_ae_title: rq.calling_ae_title,
                    called_ae_title: rq.called_ae_title,
                    application_context_name: rq.application_context_name,
                    presentation_contexts: rq
                        .presentation_contexts
                        .iter()
                        .map(|pc| PresentationContextResult {
                            id: pc.id,
                            reason: PresentationContextResultReason::Acceptance,
                            transfer_syntax: pc.transfer_syntaxes[0].clone(),
                        })
                        .collect(),
                    user_variables: vec![UserVariableItem::MaxLength(65536)],
                });
                let mut out = Vec::new();
                write_pdu(&mut out, &ac).unwrap();
                if sock.write_all(&out).is_ok() {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    held.push(sock);
                }
            }
        });
        StalledPacs { port, accepted }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// dcmtk's storescp receiving into `dir` (one file per instance, named by its UID).
pub struct Storescp {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Storescp {
    pub fn start(dir: &Path, ae_title: &str) -> Storescp {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.with_extension("log")).unwrap();
        let child = Command::new(STORESCP)
            .args(["-aet", ae_title, "-od"])
            .arg(dir)
            .arg(port.to_string())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("storescp (dcmtk) must be installed");
        let scp = Storescp {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        for _ in 0..200 {
            let echo = Command::new(ECHOSCU)
                .args(["-aec", ae_title, "127.0.0.1", &port.to_string()])
                .output()
                .unwrap();
            if echo.status.success() {
                return scp;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("storescp did not start on port {port}");
    }

    /// The files received so far.
    pub fn files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

impl Drop for Storescp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TLS-terminating proxy (rustls) in front of a plain-HTTP server, as a hospital's reverse
/// proxy would stand in front of its PACS. Its certificate names localhost and
/// 127.0.0.1, signed by a test CA; `ca` is the PEM a client must trust. Serves until the
/// runtime ends.
pub struct TlsProxy {
    pub port: u16,
    pub ca: PathBuf,
}

impl TlsProxy {
    pub async fn start(dir: &Path, backend: u16) -> TlsProxy {
        use std::sync::Arc;
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

        std::fs::create_dir_all(dir).unwrap();
        // A site CA and a server certificate it signed (webpki refuses a CA certificate as
        // the server's own, so one self-signed certificate would not do).
        let (ca, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
        let (cert, key, csr, ext) = (
            dir.join("cert.pem"),
            dir.join("key.pem"),
            dir.join("cert.csr"),
            dir.join("ext.cnf"),
        );
        std::fs::write(
            &ext,
            "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let openssl = |args: Vec<&std::ffi::OsStr>| {
            let out = Command::new("openssl")
                .args(args)
                .output()
                .expect("openssl must be installed");
            assert!(out.status.success(), "openssl: {}", text(&out));
        };
        let os = |s: &'static str| std::ffi::OsStr::new(s);
        let mut args: Vec<&std::ffi::OsStr> = vec![os("req"), os("-x509")];
        args.extend(ec.iter().map(|a| os(a)));
        args.extend([
            os("-days"),
            os("2"),
            os("-subj"),
            os("/CN=vcnode test CA"),
            os("-keyout"),
        ]);
        args.extend([ca_key.as_os_str(), os("-out"), ca.as_os_str()]);
        openssl(args);
        let mut args: Vec<&std::ffi::OsStr> = vec![os("req")];
        args.extend(ec.iter().map(|a| os(a)));
        args.extend([
            os("-subj"),
            os("/CN=localhost"),
            os("-keyout"),
            key.as_os_str(),
            os("-out"),
            csr.as_os_str(),
        ]);
        openssl(args);
        openssl(vec![
            os("x509"),
            os("-req"),
            os("-in"),
            csr.as_os_str(),
            os("-CA"),
            ca.as_os_str(),
            os("-CAkey"),
            ca_key.as_os_str(),
            os("-CAcreateserial"),
            os("-days"),
            os("2"),
            os("-extfile"),
            ext.as_os_str(),
            os("-out"),
            cert.as_os_str(),
        ]);
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, PrivateKeyDer::from_pem_file(&key).unwrap())
                .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends here, as it should.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(("127.0.0.1", backend)).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsProxy { port, ca }
    }
}

// ---------------------------------------------------------------------------------------------
// Soak helpers (issue 13, tests/kill_soak.rs): deliveries counted on Orthanc's side, and a plain
// reader of the node's SQLite file that stays open while the node is killed and restarted.
// ---------------------------------------------------------------------------------------------

impl Orthanc {
    /// Starts Orthanc with a Lua `ReceivedInstanceFilter` that appends the SOP Instance UID of
    /// every instance it receives to `dir/received.txt`. The filter runs for each C-STORE or
    /// STOW-RS instance before Orthanc looks up whether it already holds it, so a resend is a
    /// second line; Orthanc's own index (/instances, /changes) keeps one entry per UID and
    /// would hide it.
    pub fn start_counting_receptions(dir: &Path) -> Orthanc {
        std::fs::create_dir_all(dir).unwrap();
        let script = dir.join("count-receptions.lua");
        let log = dir.join("received.txt");
        std::fs::write(&log, "").unwrap();
        std::fs::write(
            &script,
            format!(
                "function ReceivedInstanceFilter(dicom, origin, info)\n\
                 \x20 local f = assert(io.open({:?}, \"a\"))\n\
                 \x20 f:write(dicom.SOPInstanceUID, \"\\n\")\n\
                 \x20 f:close()\n\
                 \x20 return true\n\
                 end\n",
                log.display().to_string()
            ),
        )
        .unwrap();
        let mut o = Orthanc::on_free_ports(dir);
        o.extra_config
            .insert("LuaScripts".into(), serde_json::json!([script]));
        o.restart();
        o
    }

    /// SOP Instance UIDs received so far, one per reception, in arrival order.
    pub fn receptions(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("received.txt"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }
}

/// One connection to the node's database file, as an admin's sqlite3 would hold it: no
/// migrations, no writes; it survives the node being killed and restarted.
pub struct DbReader {
    pool: sqlx::SqlitePool,
}

impl DbReader {
    pub async fn open(data_dir: &Path) -> DbReader {
        use std::str::FromStr;
        let options = sqlx::sqlite::SqliteConnectOptions::from_str("sqlite://")
            .unwrap()
            .filename(data_dir.join(vcnode::queue::DB_FILE))
            .busy_timeout(Duration::from_secs(10));
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        DbReader { pool }
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The first column of every row, as text.
    pub async fn strings(&self, sql: &str) -> Vec<String> {
        sqlx::query_scalar(sql)
            .fetch_all(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// The first two columns of every row, as text.
    pub async fn pairs(&self, sql: &str) -> Vec<(String, String)> {
        sqlx::query_as(sql)
            .fetch_all(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub async fn close(self) {
        self.pool.close().await;
    }
}

/// The Python with dicomweb-client, pydicom, numpy and Pillow (scripts/fetch-pytools.sh, run by
/// scripts/setup.sh).
pub fn pytools_python() -> PathBuf {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-pytools.sh"))
        .output()
        .expect("run scripts/fetch-pytools.sh");
    assert!(
        out.status.success(),
        "scripts/fetch-pytools.sh failed: {}",
        text(&out)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

// ---------------------------------------------------------------------------------------------
// Putting studies into Orthanc over its REST API (tests/pull.rs: a PACS to pull from).
// ---------------------------------------------------------------------------------------------

impl Orthanc {
    /// Uploads DICOM files with `POST /instances`, as a modality's study would be in the PACS.
    pub fn upload(&self, files: &[PathBuf]) {
        for f in files {
            let out = Command::new("curl")
                .args(["-sf", "--max-time", "30", "-X", "POST", "--data-binary"])
                .arg(format!("@{}", f.display()))
                .arg(format!("http://127.0.0.1:{}/instances", self.http_port))
                .output()
                .expect("curl");
            assert!(
                out.status.success(),
                "Orthanc refused {}: {}",
                f.display(),
                text(&out)
            );
        }
    }
}

impl Orthanc {
    /// Starts Orthanc with its DICOMweb API (`/dicom-web/…`) closed to requests without HTTP
    /// basic credentials `user:password` (a Lua `IncomingHttpRequestFilter`, so the rest of the
    /// REST API, which the harness polls, stays open).
    pub fn start_requiring_basic_auth(dir: &Path, user: &str, password: &str) -> Orthanc {
        use std::io::Write;
        std::fs::create_dir_all(dir).unwrap();
        let script = dir.join("dicomweb-basic-auth.lua");
        let expected = format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("{user}:{password}")
            )
        );
        let mut f = std::fs::File::create(&script).unwrap();
        write!(
            f,
            "function IncomingHttpRequestFilter(method, uri, ip, username, headers)\n\
             \x20 if string.sub(uri, 1, 11) ~= '/dicom-web/' then return true end\n\
             \x20 return headers['authorization'] == {expected:?}\n\
             end\n"
        )
        .unwrap();
        let mut o = Orthanc::on_free_ports(dir);
        o.extra_config
            .insert("LuaScripts".into(), serde_json::json!([script]));
        o.restart();
        o
    }
}

// ---------------------------------------------------------------------------------------------
// DICOMweb clients: the Python scripts in tests/dicomweb, and curl for raw requests.
// ---------------------------------------------------------------------------------------------

/// Runs tests/dicomweb/`script` with [`pytools_python`].
pub fn dicomweb_script<S: AsRef<std::ffi::OsStr>>(script: &str, args: &[S]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/dicomweb")
        .join(script);
    Command::new(pytools_python())
        .arg(script)
        .args(args)
        .output()
        .expect("run a Python DICOMweb client script")
}

/// `POST url` of `body` as `content_type` with curl (at most 60 s); (HTTP status, body).
pub fn http_post(url: &str, content_type: &str, body: &[u8]) -> (String, String) {
    use std::io::Write;
    let mut curl = Command::new("curl")
        .args(["-s", "--max-time", "60", "-w", "\n%{http_code}", "-H"])
        .arg(format!("Content-Type: {content_type}"))
        .args(["--data-binary", "@-", url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let mut stdin = curl.stdin.take().unwrap();
    let body = body.to_vec();
    // Written from a thread: curl may answer before it has read all of a refused body.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let out = curl.wait_with_output().unwrap();
    writer.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", ""));
    (status.to_string(), body.to_string())
}

/// `method url` with curl (at most 60 s), no body; (HTTP status, body).
pub fn http_request(method: &str, url: &str) -> (String, String) {
    http_call(method, url, &[], "")
}

/// `method url` by curl (at most 60 s) with extra `headers` ("Name: value") and a JSON `body`
/// ("" for none); (HTTP status, body).
pub fn http_call(method: &str, url: &str, headers: &[String], body: &str) -> (String, String) {
    let mut curl = Command::new("curl");
    curl.args(["-s", "--max-time", "60", "-w", "\n%{http_code}", "-X", method]);
    for h in headers {
        curl.args(["-H", h]);
    }
    if !body.is_empty() {
        curl.args(["-H", "Content-Type: application/json", "--data-binary", body]);
    }
    let out = curl.arg(url).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", ""));
    (status.to_string(), body.to_string())
}

// ---------------------------------------------------------------------------------------------
// DICOM TLS (tests/dicom_tls.rs).
// ---------------------------------------------------------------------------------------------

impl Node {
    /// The DICOM TLS port from the node's `vcnode <AE> DICOM TLS on ADDR` line (printed before
    /// the DIMSE line, so known once the node has started); None when DICOM TLS is off.
    pub fn dicom_tls(&self) -> Option<SocketAddr> {
        let dir = self.data_dir.parent().unwrap();
        let stdout = std::fs::read_to_string(dir.join("node.stdout")).unwrap_or_default();
        stdout
            .lines()
            .find_map(|line| line.split(" DICOM TLS on ").nth(1))
            .map(|addr| addr.trim().parse().unwrap())
    }
}

/// A `[[destinations]]` entry for a DIMSE peer on this machine.
pub fn dimse_destination(name: &str, ae_title: &str, port: u16) -> String {
    format!(
        "[[destinations]]\nname = \"{name}\"\nkind = \"dimse\"\nae_title = \"{ae_title}\"\nhost = \"127.0.0.1\"\nport = {port}\n"
    )
}

/// A `[[routes]]` table sending the results of every sender to `destinations`.
pub fn route_all_to(destinations: &[&str]) -> String {
    format!("[[routes]]\nfrom_ae = \"*\"\nto = {destinations:?}\n")
}

/// The names of the checks in a `/readyz` (or `/api/status` node) answer, in order.
pub fn check_names(answer: &serde_json::Value) -> Vec<&str> {
    answer["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect()
}

/// Every transfer syntax test images are sent in: (converter, its args, storescu option,
/// the transfer syntax UID stored). The first five are the ones frames come out of unchanged
/// (native and the lossless image codecs).
pub const TRANSFER_SYNTAXES: &[(&str, &[&str], &str, &str)] = &[
    ("", &[], "-xe", "1.2.840.10008.1.2.1"),
    ("/usr/bin/dcmconv", &["+ti"], "-xi", "1.2.840.10008.1.2"),
    ("/usr/bin/gdcmconv", &["--j2k"], "-xv", "1.2.840.10008.1.2.4.90"),
    ("/usr/bin/dcmcjpls", &[], "-xt", "1.2.840.10008.1.2.4.80"),
    ("/usr/bin/dcmcjpeg", &[], "-xs", "1.2.840.10008.1.2.4.70"),
    ("/usr/bin/dcmcrle", &[], "-xr", "1.2.840.10008.1.2.5"),
    ("/usr/bin/dcmconv", &["+td"], "-xd", "1.2.840.10008.1.2.1.99"),
];

// ---------------------------------------------------------------------------------------------
// Certificates made by the openssl command line (tests/dicom_tls.rs, tests/https.rs,
// tests/export_tls.rs), and Orthanc with DICOM TLS.
// ---------------------------------------------------------------------------------------------

/// The certificates of one test: a CA, the node's certificate for 127.0.0.1 and localhost (for
/// serving and, as IHE ATNA nodes do, as a client), a client certificate from the same CA and
/// one from another CA.
pub struct Pki {
    /// Where the files are; [`make_leaf`] makes more there.
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub server: (PathBuf, PathBuf),
    pub client: (PathBuf, PathBuf),
    pub stranger: (PathBuf, PathBuf),
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (the command line tool) must be installed");
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
}

/// A self-signed CA `name`.pem with its key `name`.key (P-256).
pub fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=vcnode test {name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// A certificate `name`.pem (key `name`.key) signed by CA `ca`, with `extensions` (an
/// openssl extension file's lines).
pub fn make_leaf(dir: &Path, ca: &str, name: &str, extensions: &str) -> (PathBuf, PathBuf) {
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        format!(
            "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n\
             subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n{extensions}\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN=vcnode test {name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &format!("{name}.pem"),
        ],
    );
    (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")))
}

/// Extensions of a node's certificate on this machine: a server and, towards peers that ask
/// for one, a client.
pub const NODE_CERT_EXTENSIONS: &str =
    "extendedKeyUsage = serverAuth, clientAuth\nsubjectAltName = IP:127.0.0.1, DNS:localhost";

pub fn make_pki(dir: &Path) -> Pki {
    let dir = dir.join("pki");
    std::fs::create_dir_all(&dir).unwrap();
    make_ca(&dir, "ca");
    make_ca(&dir, "other-ca");
    let server = make_leaf(&dir, "ca", "server", NODE_CERT_EXTENSIONS);
    let client = make_leaf(&dir, "ca", "client", "extendedKeyUsage = clientAuth");
    let stranger = make_leaf(&dir, "other-ca", "stranger", "extendedKeyUsage = clientAuth");
    Pki {
        ca: dir.join("ca.pem"),
        other_ca: dir.join("other-ca.pem"),
        dir,
        server,
        client,
        stranger,
    }
}

/// `[node.tls]` with the PKI's node certificate (no client certificates asked on DICOM TLS).
pub fn node_tls_section(pki: &Pki) -> String {
    format!(
        "[node.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        pki.server.0.display(),
        pki.server.1.display()
    )
}

impl Orthanc {
    /// Starts Orthanc with DICOM TLS on its DICOM port (plain DIMSE is then refused there; its
    /// REST API stays plain HTTP for the harness): `cert` (certificate, key) is its own, and
    /// a client must present a certificate signed by `trusted_ca`.
    pub fn start_with_dicom_tls(dir: &Path, cert: &(PathBuf, PathBuf), trusted_ca: &Path) -> Orthanc {
        let mut o = Orthanc::on_free_ports(dir);
        for (key, value) in [
            ("DicomTlsEnabled", serde_json::json!(true)),
            ("DicomTlsCertificate", serde_json::json!(cert.0)),
            ("DicomTlsPrivateKey", serde_json::json!(cert.1)),
            ("DicomTlsTrustedCertificates", serde_json::json!(trusted_ca)),
            ("DicomTlsRemoteCertificateRequired", serde_json::json!(true)),
        ] {
            o.extra_config.insert(key.into(), value);
        }
        o.restart();
        o
    }
}

// ---------------------------------------------------------------------------------------------
// Admin API (tests/admin_api.rs).
// ---------------------------------------------------------------------------------------------

/// `method url` with a JSON `body` ("" for none); (HTTP status, body).
pub fn http_json(method: &str, url: &str, body: &str) -> (String, String) {
    http_call(method, url, &[], body)
}

/// Polls `check` every 100 ms until it holds or `limit` passes; whether it held.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Authentication (tests/auth.rs, tests/viewer.rs).
// ---------------------------------------------------------------------------------------------

/// `[auth]` turned on, for [`Node::start`]'s `extra` (after the [node] keys).
pub const AUTH_REQUIRED: &str = "\n[auth]\nrequired = true\n";

impl Node {
    /// `vcnode ARGS --config <this node's>` as an operator runs it, with `stdin` fed in.
    pub fn cli(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_vcnode"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// A new API token of `role` named `name`, made by `vcnode tokens create`.
    pub fn create_token(&self, name: &str, role: &str) -> String {
        let out = self.cli(&["tokens", "create", "--name", name, "--role", role], "");
        assert!(out.status.success(), "vcnode tokens create: {}", text(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// A local user made by `vcnode users add` (password on stdin).
    pub fn add_user(&self, name: &str, role: &str, password: &str) {
        let out = self.cli(
            &["users", "add", "--name", name, "--role", role],
            &format!("{password}\n"),
        );
        assert!(out.status.success(), "vcnode users add: {}", text(&out));
    }
}

// ---------------------------------------------------------------------------------------------
// Headless Chromium driven by a playwright-core script (tests/viewer.rs, tests/status_page.rs).
// ---------------------------------------------------------------------------------------------

/// Chromium and the browser script `tests/viewer/<script>`, or a failure that says how to
/// install what is missing: nothing is skipped.
pub fn browser_tools(script: &str) -> (PathBuf, PathBuf) {
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    assert!(
        chromium.exists(),
        "{} not found: the browser tests need headless Chromium; run scripts/setup.sh (Debian package chromium)",
        chromium.display()
    );
    assert!(
        checkout.join("tests/viewer/node_modules/playwright-core").is_dir(),
        "tests/viewer/node_modules/playwright-core missing: run scripts/fetch-viewer.sh (scripts/setup.sh calls it)"
    );
    assert!(
        checkout.join("viewer/ohif/index.html").is_file(),
        "viewer/ohif missing: run scripts/fetch-viewer.sh (scripts/setup.sh calls it)"
    );
    (chromium, checkout.join("tests/viewer").join(script))
}

/// The JSON report a browser script prints when it ends. Bounded: the script has its own
/// limit (`limit` less 10 s, passed to it); this one catches a hung browser.
pub fn browser_report(mut child: Child, limit: Duration) -> serde_json::Value {
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit + Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the browser script did not finish within {limit:?} + 30 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "browser script report unreadable ({e}); status {}:\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    })
}
