//! "Nothing acknowledged is ever lost": SIGKILL the node in the middle of a batch and check
//! that every instance dcmtk saw acknowledged is on disk, intact, with its rows.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use dicom_pixeldata::PixelDecoder;
use vcnode::fixture::{pixels, MammogramSpec};

#[test]
fn sigkill_mid_batch_loses_no_acknowledged_instance() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), "");
    let specs: Vec<MammogramSpec> = (1..=40).map(MammogramSpec::low_energy).collect();
    let files = write_fixtures(&dir.path().join("src"), &specs);
    let spec_of: HashMap<String, &MammogramSpec> = files
        .iter()
        .zip(&specs)
        .map(|(f, s)| (f.display().to_string(), s))
        .collect();

    // storescu logs "Sending file: X" then "Received Store Response (Success)" per instance.
    let mut scu = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec {STORESCU} -v -aet MODALITY -aec VCNODE 127.0.0.1 {} \"$@\" 2>&1",
            node.port()
        ))
        .arg("sh")
        .args(&files)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut acknowledged = Vec::new();
    let mut current = None;
    let mut killed = false;
    let mut transcript = String::new();
    for line in BufReader::new(scu.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        transcript.push_str(&line);
        transcript.push('\n');
        if let Some(f) = line.split("Sending file: ").nth(1) {
            current = Some(f.trim().to_string());
        }
        if line.contains("Received Store Response (Success)") {
            acknowledged.push(current.take().expect("a response follows a file"));
            if acknowledged.len() == 12 && !killed {
                node.kill();
                killed = true;
            }
        }
    }
    let _ = scu.wait();
    assert!(
        killed,
        "the batch ended before the node was killed:\n{transcript}"
    );
    assert!(
        acknowledged.len() >= 12 && acknowledged.len() < files.len(),
        "acknowledged {}",
        acknowledged.len()
    );

    // Restart on the same data_dir: every acknowledged instance is there and whole.
    let node = Node::start_with(dir.path(), node.config.clone());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let q = rt.block_on(vcnode::queue::Queue::open(&node.data_dir)).unwrap();
    for file in &acknowledged {
        let uid = sop_instance_uid(std::path::Path::new(file));
        let (path, jobs): (String, i64) = rt.block_on(async {
            let path = sqlx::query_scalar("SELECT path FROM instances WHERE sop_instance_uid = ?")
                .bind(&uid)
                .fetch_one(q.pool())
                .await
                .unwrap_or_else(|e| panic!("acknowledged {uid} has no row: {e}"));
            let jobs = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE source_uid = ?")
                .bind(&uid)
                .fetch_one(q.pool())
                .await
                .unwrap();
            (path, jobs)
        });
        assert_eq!(jobs, 1, "{uid} must have exactly one job");
        let obj = dicom_object::open_file(node.data_dir.join(&path)).expect("the stored file parses");
        let values: Vec<u16> = obj.decode_pixel_data().unwrap().to_vec().unwrap();
        assert!(values == pixels(spec_of[file]), "{uid}: stored pixels differ");
    }

    // The modality retries the whole batch: all acknowledged, still one job per instance.
    let out = storescu(&node, "MODALITY", &[], &files);
    assert_eq!(successes(&out), files.len(), "{}", text(&out));
    rt.block_on(async {
        let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
            .fetch_one(q.pool())
            .await
            .unwrap();
        assert_eq!(jobs, files.len() as i64);
        q.close().await;
    });
    assert_eq!(
        std::fs::read_dir(node.data_dir.join("tmp")).unwrap().count(),
        0,
        "no stray temp files"
    );
}
