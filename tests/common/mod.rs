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
