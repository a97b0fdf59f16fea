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
"#,
        data = dir.join("var").display()
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
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_vcnode"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("VCNODE_LOG", "info,vcnode=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start vcnode");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.split(" listening on ").nth(1) {
                    let _ = tx.send(addr.trim().parse::<SocketAddr>().unwrap());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
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
            data_dir: dir.join("var"),
            config,
        }
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
        let mut o = Orthanc {
            child: None,
            dir: dir.to_path_buf(),
            http_port: free_port(),
            dicom_port: free_port(),
            extra_config: serde_json::Map::new(),
        };
        o.restart();
        o
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
    let spec = vcnode::phantom::PhantomDatasetSpec {
        patients: 1,
        seed,
        rows,
        cols,
        lesions: None,
    };
    vcnode::phantom::write_dataset(&out, &spec).unwrap();
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
        let mut o = Orthanc {
            child: None,
            dir: dir.to_path_buf(),
            http_port: free_port(),
            dicom_port: free_port(),
            extra_config: serde_json::Map::new(),
        };
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
