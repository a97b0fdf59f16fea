//! From a C-STORE of an LE image to a stored derived Secondary Capture instance, with the
//! shipped generator, checked with dicom3tools' dciodvfy and against the phantom's true RC.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use dicom_dictionary_std::tags;
use dicom_object::{open_file, InMemDicomObject};
use dicom_pixeldata::PixelDecoder;

const LIMIT: Duration = Duration::from_secs(180);

fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag)
        .map(|e| e.to_str().unwrap().trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

fn item(obj: &InMemDicomObject, tag: dicom_core::Tag) -> InMemDicomObject {
    obj.element(tag).unwrap().items().unwrap()[0].clone()
}

/// Values in [0, 1] of a file's own display window.
fn windowed(path: &Path) -> Vec<f32> {
    vcnode::pixels::read_file(path).unwrap().windowed()
}

fn psnr_in(mask: &[bool], a: &[f32], b: &[f32]) -> f64 {
    let (mut se, mut n) = (0.0f64, 0usize);
    for i in 0..a.len() {
        if mask[i] {
            se += ((a[i] - b[i]) as f64).powi(2);
            n += 1;
        }
    }
    10.0 * (1.0 / (se / n as f64)).log10()
}

/// The derived files of a source instance, by their series description.
async fn derived_of(node: &Node, source: &str) -> Vec<(String, PathBuf)> {
    let q = vcnode::queue::Queue::open(&node.data_dir).await.unwrap();
    let rels: Vec<String> =
        sqlx::query_scalar("SELECT path FROM instances WHERE origin = 'derived' AND source_uid = ?")
            .bind(source)
            .fetch_all(q.pool())
            .await
            .unwrap();
    q.close().await;
    rels.into_iter()
        .map(|r| {
            let path = node.data_dir.join(r);
            (text(&open_file(&path).unwrap(), tags::SERIES_DESCRIPTION), path)
        })
        .collect()
}

fn assert_valid(path: &Path) {
    let v = Command::new("/usr/bin/dciodvfy")
        .arg(path)
        .output()
        .expect("dciodvfy (dicom3tools)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    // Debian's dicom3tools (2022) predates Synthetic Data (0008,001C), added to the standard
    // later; that one line is the validator's age, not an error in the instance.
    let errors: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("Error"))
        .filter(|l| !l.contains("not a recognized standard attribute - (0x0008,0x001c)"))
        .collect();
    assert!(
        errors.is_empty(),
        "dciodvfy errors for {}:\n{report}",
        path.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn le_images_become_valid_tagged_aligned_synthetic_rc_instances() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_processing(dir.path(), "", "attention_map = true");
    let cases = phantom_pairs(dir.path(), 77, 1664, 1280);
    let le: Vec<PathBuf> = cases.iter().map(|c| c.0.clone()).collect();
    let out = storescu(&node, "MODALITY", &[], &le);
    assert_eq!(successes(&out), 4, "{}", text_of(&out));
    let done = wait_count(&node, "SELECT COUNT(*) FROM jobs WHERE state = 'done'", 4, LIMIT).await;
    assert_eq!(
        done,
        4,
        "jobs not done; log:\n{}\njobs:\n{}",
        node.log(),
        node.jobs_cli()
    );

    for (le_path, rc_path) in &cases {
        let le_obj = open_file(le_path).unwrap();
        let le_uid = text(&le_obj, tags::SOP_INSTANCE_UID);
        let derived = derived_of(&node, &le_uid).await;
        assert_eq!(
            derived.len(),
            2,
            "a synthetic RC and an attention map: {derived:?}"
        );
        let path = derived
            .iter()
            .find(|(d, _)| d.starts_with("AI SYNTHETIC RC"))
            .expect("the RC series")
            .1
            .clone();
        let attention = derived
            .iter()
            .find(|(d, _)| d.starts_with("AI ATTENTION MAP"))
            .expect("the attention series")
            .1
            .clone();
        let d = open_file(&path).unwrap();
        assert_valid(&path);
        assert_valid(&attention);
        let a = open_file(&attention).unwrap();
        assert_eq!(text(&a, tags::SYNTHETIC_DATA), "YES");
        assert_eq!(text(&a, tags::ROWS), text(&le_obj, tags::ROWS));
        assert_ne!(
            text(&a, tags::SERIES_INSTANCE_UID),
            text(&d, tags::SERIES_INSTANCE_UID)
        );

        // Unmistakably AI-generated.
        assert_eq!(text(&d, tags::SOP_CLASS_UID), vcnode::derive::SECONDARY_CAPTURE);
        assert_eq!(text(&d, tags::SYNTHETIC_DATA), "YES");
        assert_eq!(text(&d, tags::CONVERSION_TYPE), "SYN");
        assert_eq!(
            d.element(tags::IMAGE_TYPE)
                .unwrap()
                .to_multi_str()
                .unwrap()
                .to_vec(),
            ["DERIVED", "SECONDARY"]
        );
        assert_eq!(text(&d, tags::BURNED_IN_ANNOTATION), "YES");
        assert!(text(&d, tags::SERIES_DESCRIPTION).starts_with("AI SYNTHETIC RC – NOT ACQUIRED"));
        assert!(text(&d, tags::DERIVATION_DESCRIPTION).contains("Synthetic"));
        let equipment = item(&d, tags::CONTRIBUTING_EQUIPMENT_SEQUENCE);
        assert_eq!(
            text(
                &item(&equipment, tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE),
                tags::CODE_VALUE
            ),
            "109100"
        );
        assert!(text(&equipment, tags::MANUFACTURER_MODEL_NAME).starts_with("scpa-unet-"));
        let source = item(&d, tags::SOURCE_IMAGE_SEQUENCE);
        assert_eq!(text(&source, tags::REFERENCED_SOP_INSTANCE_UID), le_uid);
        assert_eq!(
            text(
                &item(&source, tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE),
                tags::CODE_VALUE
            ),
            "121322"
        );
        // Same patient and study, a new series; the geometry and laterality of the LE.
        for tag in [
            tags::PATIENT_ID,
            tags::PATIENT_NAME,
            tags::STUDY_INSTANCE_UID,
            tags::ACCESSION_NUMBER,
        ] {
            assert_eq!(text(&d, tag), text(&le_obj, tag), "{tag}");
        }
        assert_ne!(
            text(&d, tags::SERIES_INSTANCE_UID),
            text(&le_obj, tags::SERIES_INSTANCE_UID)
        );
        for tag in [
            tags::ROWS,
            tags::COLUMNS,
            tags::IMAGE_LATERALITY,
            tags::VIEW_POSITION,
            tags::PATIENT_ORIENTATION,
        ] {
            assert_eq!(text(&d, tag), text(&le_obj, tag), "{tag}");
        }

        // Inside the breast the synthetic RC is closer to the true RC than the LE image is.
        let truth = windowed(rc_path);
        let background = truth[0];
        let mask: Vec<bool> = truth.iter().map(|&v| v != background).collect();
        let synthetic: Vec<f32> = d
            .decode_pixel_data()
            .unwrap()
            .to_vec::<u16>()
            .unwrap()
            .iter()
            .map(|&v| v as f32 / 4095.0)
            .collect();
        let ours = psnr_in(&mask, &synthetic, &truth);
        let le_only = psnr_in(&mask, &windowed(le_path), &truth);
        assert!(
            ours > le_only + 3.0,
            "{}: synthetic RC PSNR {ours:.2} dB vs LE {le_only:.2} dB",
            path.display()
        );
    }
    assert_eq!(
        count(&node, "SELECT COUNT(*) FROM instances WHERE origin = 'derived'").await,
        8
    );
}

fn text_of(out: &std::process::Output) -> String {
    common::text(out)
}

#[test]
fn reprocessing_the_same_le_gives_the_same_uids() {
    let dir = tempfile::tempdir().unwrap();
    let cases = phantom_pairs(dir.path(), 78, 416, 320);
    let config = write_config_with_model(dir.path(), "", shipped_model().to_str().unwrap(), "");
    let run = |out: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_vcnode"))
            .args(["process", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(dir.path().join(out))
            .arg(&cases[0].0)
            .arg(&cases[1].0)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut uids: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|p| sop_instance_uid(Path::new(p)))
            .collect();
        uids.sort();
        uids
    };
    let first = run("a");
    assert_eq!(first.len(), 2);
    assert_eq!(first, run("b"));
}

/// A JPEG 2000 LE whose codestream header is broken: it parses, so it is stored and queued,
/// but it cannot be decoded.
fn broken_j2k(dir: &Path, le: &Path) -> PathBuf {
    let j2k = convert("/usr/bin/gdcmconv", &["--j2k"], le, &dir.join("broken.dcm"));
    let mut bytes = std::fs::read(&j2k).unwrap();
    let soc_siz = bytes
        .windows(4)
        .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])
        .expect("a J2K codestream");
    for b in &mut bytes[soc_siz + 4..soc_siz + 40] {
        *b = 0;
    }
    std::fs::write(&j2k, bytes).unwrap();
    j2k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_image_ends_dead_with_a_reason_while_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_processing(dir.path(), "", "");
    let cases = phantom_pairs(dir.path(), 79, 416, 320);
    let broken = broken_j2k(dir.path(), &cases[0].0);
    let out = storescu(&node, "MODALITY", &["-xv"], &[broken]);
    assert_eq!(successes(&out), 1, "{}", text_of(&out));
    let out = storescu(&node, "MODALITY", &[], &[cases[1].0.clone(), cases[2].0.clone()]);
    assert_eq!(successes(&out), 2, "{}", text_of(&out));
    assert_eq!(
        wait_count(&node, "SELECT COUNT(*) FROM jobs WHERE state = 'dead'", 1, LIMIT).await,
        1,
        "{}",
        node.jobs_cli()
    );
    assert_eq!(
        wait_count(&node, "SELECT COUNT(*) FROM jobs WHERE state = 'done'", 2, LIMIT).await,
        2,
        "{}",
        node.jobs_cli()
    );
    let listing = node.jobs_cli();
    let dead = listing
        .lines()
        .find(|l| l.contains(" dead "))
        .expect("a dead job in the listing");
    assert!(
        dead.contains("decode"),
        "the reason should say what failed: {dead}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_interrupted_by_sigkill_completes_after_restart_with_one_derived_instance() {
    let dir = tempfile::tempdir().unwrap();
    // A short lease so the restarted node takes the interrupted jobs over quickly.
    let extra = "[jobs]\nlease_s = 5";
    let mut node = Node::start_processing(dir.path(), extra, "");
    store_until_processing(&node, dir.path(), 80, LIMIT).await;
    node.kill();
    let done_before = count(&node, "SELECT COUNT(*) FROM jobs WHERE state = 'done'").await;
    assert!(done_before < 4, "all jobs finished before the kill");

    let node = restart_until_done(&node, dir.path(), 4, LIMIT).await;
    assert_eq!(
        count(&node, "SELECT COUNT(*) FROM instances WHERE origin = 'derived'").await,
        4
    );
    // One file per derived instance: a redone job rewrote the same deterministic path.
    let files = walk(&node.data_dir.join("derived"));
    assert_eq!(files.len(), 4, "{files:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
