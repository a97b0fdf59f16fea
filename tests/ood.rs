//! The out-of-distribution guard end to end. The lab's calibration (`vcnode-lab calibrate`) of
//! the shipped model on freshly generated phantom images matches an independent numpy
//! computation; a node with the shipped model (whose profile its training data gave) passes
//! held-out phantom images and flags, or refuses, what is not phantom-like: uniform noise, an
//! inverted LE, and a For Processing raw image.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{open_file, InMemDicomObject};
use dicom_pixeldata::PixelDecoder;

const LIMIT: Duration = Duration::from_secs(300);
/// The size the other tests send (the shipped model trained on it).
const ROWS: usize = 1664;
const COLS: usize = 1280;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag)
        .map(|e| e.to_str().unwrap().trim_end_matches(['\0', ' ']).to_string())
        .unwrap_or_default()
}

/// LE files of a phantom data set (as `vcnode-lab phantom` writes one).
fn phantom_le(dir: &Path, seed: u64, patients: usize) -> (PathBuf, Vec<PathBuf>) {
    let out = dir.join(format!("phantom-{seed}"));
    let spec = vcnode_lab::phantom::PhantomDatasetSpec {
        patients,
        seed,
        rows: ROWS,
        cols: COLS,
        lesions: None,
    };
    vcnode_lab::phantom::write_dataset(&out, &spec).unwrap();
    let csv = out.join("pairs.csv");
    let le = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| out.join(l.split(',').next().unwrap()))
        .collect();
    (csv, le)
}

/// A copy of the LE file `from` with new pixels (12-bit), a new SOP Instance UID and, when
/// given, another SOP class; `edit` changes more attributes.
fn variant(
    from: &Path,
    to: &Path,
    name: &str,
    pixels: impl FnOnce(&[u16]) -> Vec<u16>,
    sop_class: Option<&str>,
    edit: impl FnOnce(&mut InMemDicomObject),
) -> PathBuf {
    let file = open_file(from).unwrap();
    let decoded = file.decode_pixel_data().unwrap();
    let values: Vec<u16> = decoded.to_vec().unwrap();
    let (rows, cols) = (decoded.rows() as usize, decoded.columns() as usize);
    let class = sop_class
        .map(str::to_string)
        .unwrap_or_else(|| text(&file, tags::SOP_CLASS_UID));
    let uid = vcnode::uid::uid_from_name(&format!("vcnode ood test {name} {}", from.display()));
    let mut obj: InMemDicomObject = file.into_inner();
    vcnode::pixels::put_monochrome12(&mut obj, rows, cols, pixels(&values));
    obj.put(DataElement::new(
        tags::SOP_INSTANCE_UID,
        VR::UI,
        PrimitiveValue::from(uid.as_str()),
    ));
    obj.put(DataElement::new(
        tags::SOP_CLASS_UID,
        VR::UI,
        PrimitiveValue::from(class.as_str()),
    ));
    edit(&mut obj);
    let meta = vcnode::store::explicit_le_meta(&class, &uid).unwrap();
    let path = to.join(format!("{name}.dcm"));
    obj.with_exact_meta(meta).write_to_file(&path).unwrap();
    path
}

/// Uniform noise over the 12-bit range (a fixed LCG: the test is deterministic).
fn noise(values: &[u16]) -> Vec<u16> {
    let mut state = 12345u32;
    values
        .iter()
        .map(|_| {
            state = state.wrapping_mul(1664525).wrapping_add(1013904223);
            ((state >> 8) % 4096) as u16
        })
        .collect()
}

/// The display inverted: max − value.
fn inverted(values: &[u16]) -> Vec<u16> {
    let max = *values.iter().max().unwrap();
    values.iter().map(|&v| max - v).collect()
}

/// A For Processing (raw) image of the same breast: the detector signal, linear in the X-ray
/// intensity reaching it, I = I₀·exp(−(v − v_air)/k), where the LE's For Presentation values v
/// are log attenuation (the phantom writes PIXEL_INTENSITY_RELATIONSHIP LOG). k spreads the
/// breast over three e-folds of attenuation, roughly a compressed breast at 28 kVp.
fn for_processing(values: &[u16]) -> Vec<u16> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let air = sorted[0] as f64;
    let dense = sorted[sorted.len() * 99 / 100] as f64;
    let k = ((dense - air) / 3.0).max(1.0);
    values
        .iter()
        .map(|&v| (4000.0 * (-(v as f64 - air) / k).exp()).round() as u16)
        .collect()
}

fn for_processing_attributes(obj: &mut InMemDicomObject) {
    let mut put = |tag, vr, v: &str| obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
    put(tags::PRESENTATION_INTENT_TYPE, VR::CS, "FOR PROCESSING");
    put(tags::PIXEL_INTENSITY_RELATIONSHIP, VR::CS, "LIN");
    // Raw images carry no display window: the node falls back to the value range.
    obj.remove_element(tags::WINDOW_CENTER);
    obj.remove_element(tags::WINDOW_WIDTH);
}

/// The derived synthetic RC of a source instance, opened.
async fn derived_rc(node: &Node, source: &Path) -> Option<(PathBuf, InMemDicomObject)> {
    let uid = sop_instance_uid(source);
    let q = vcnode::queue::Queue::open(&node.data_dir).await.unwrap();
    let rel: Option<String> =
        sqlx::query_scalar("SELECT path FROM instances WHERE origin = 'derived' AND source_uid = ?")
            .bind(&uid)
            .fetch_optional(q.pool())
            .await
            .unwrap();
    q.close().await;
    rel.map(|r| {
        let path = node.data_dir.join(r);
        let obj = open_file(&path).unwrap().into_inner();
        (path, obj)
    })
}

/// White (4095) pixels in the rows where a third burned-in label line goes (the geometry of
/// src/derive/label.rs: scale = rows / 450, 9·scale per line, a margin and a border of scale).
fn white_in_third_label_line(path: &Path) -> usize {
    let obj = open_file(path).unwrap();
    let px = obj.decode_pixel_data().unwrap();
    let (rows, cols) = (px.rows() as usize, px.columns() as usize);
    let values: Vec<u16> = px.to_vec().unwrap();
    let scale = (rows / 450).max(1);
    let top = 2 * scale + scale + 2 * 9 * scale;
    (top..top + 7 * scale)
        .flat_map(|r| values[r * cols..(r + 1) * cols].iter())
        .filter(|&&v| v == 4095)
        .count()
}

fn ood_counter(node: &Node, action: &str) -> f64 {
    let (status, body) = http_request("GET", &format!("{}/metrics", node.base_url()));
    assert_eq!(status, "200", "{body}");
    let key = format!("vcnode_ood_inputs_total{{action=\"{action}\"}}");
    body.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Scikit-learn's Ledoit-Wolf shrinkage (sklearn.covariance.ledoit_wolf_shrinkage, 1.x),
/// transcribed in numpy, and the Mahalanobis distance by a linear solve: an implementation
/// independent of models/src/ood.rs to check the profile the calibration wrote.
const NUMPY_PROFILE: &str = r#"
import json, sys
import numpy as np
d = json.load(sys.stdin)
F = np.array(d["train"], dtype=float)
mean = F.mean(0)
scale = np.maximum(F.std(0), 0.01)
X = (F - mean) / scale
n, p = X.shape
X2 = X ** 2
emp_cov_trace = X2.sum(0) / n
mu = emp_cov_trace.sum() / p
beta_ = np.sum(X2.T @ X2)
delta_ = np.sum((X.T @ X) ** 2) / n ** 2
beta = 1.0 / (p * n) * (beta_ / n - delta_)
delta = (delta_ - 2.0 * mu * emp_cov_trace.sum() + p * mu ** 2) / p
beta = min(beta, delta)
s = 0.0 if beta == 0 else beta / delta
cov = (1 - s) * (X.T @ X / n) + s * mu * np.eye(p)
z = (np.array(d["x"]) - mean) / scale
print(json.dumps({"shrinkage": s, "covariance": cov.tolist(), "score": float(np.sqrt(z @ np.linalg.solve(cov, z)))}))
"#;

/// The features of LE files as the node computes them (decode, preprocess, features).
fn features_of(files: &[PathBuf], spec: &vcnode_models::preprocess::InputSpec) -> Vec<Vec<f64>> {
    files
        .iter()
        .map(|f| {
            let p = vcnode::pipeline::prepare_source(f, spec).unwrap();
            vcnode_models::ood::input_features(&p.input, &p.geometry, spec)
        })
        .collect()
}

/// The guard as `/api/status` shows it.
fn status_ood(node: &Node) -> serde_json::Value {
    let (status, body) = http_request("GET", &format!("{}/api/status", node.base_url()));
    assert_eq!(status, "200", "{body}");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["node"]["ood"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calibrated_guard_passes_held_out_phantoms_and_flags_or_refuses_foreign_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let (train_csv, train_le) = phantom_le(dir.path(), 1, 6);
    // Calibrate a copy of the shipped manifest; models/weights/ is never written.
    let manifest = dir.path().join("scpa-unet-calibrated.json");
    let shipped_before = std::fs::read(shipped_model()).unwrap();
    vcnode_lab::calibrate::run(&vcnode_lab::calibrate::CalibrateArgs {
        model: shipped_model(),
        data: train_csv.clone(),
        out: Some(manifest.clone()),
    })
    .unwrap();
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    let shipped: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shipped_model()).unwrap()).unwrap();
    assert_eq!(m["weights"]["sha256"], shipped["weights"]["sha256"]);
    assert_eq!(
        std::fs::read(shipped_model()).unwrap(),
        shipped_before,
        "the shipped manifest was not touched"
    );
    let profile = &m["input_profile"];
    assert_eq!(profile["images"], train_le.len() as u64);
    assert!(profile["threshold"].as_f64().unwrap() > 0.0, "{profile}");
    // The node runs the shipped manifest, whose profile comes from the model's own training
    // data (models/weights/train.sh, a few hundred images): held-out phantom patients are of
    // that kind. The small calibration above checks the arithmetic, not the threshold.
    let threshold = shipped["input_profile"]["threshold"]
        .as_f64()
        .expect("the shipped model carries its input profile");

    // Inputs: held-out phantom patients (another seed), and three foreign images made from one.
    let (_, held_out) = phantom_le(dir.path(), 2, 2);

    // The profile and one image's score against numpy: shrinkage, covariance and distance.
    let calibrated = vcnode_models::manifest::Manifest::load(&manifest).unwrap();
    let spec = calibrated.input;
    let scorer = vcnode_models::ood::OodScorer::new(calibrated.input_profile.clone().unwrap()).unwrap();
    let x = features_of(&held_out[..1], &spec).remove(0);
    let mut python = Command::new(pytools_python())
        .args(["-c", NUMPY_PROFILE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::json!({"train": features_of(&train_le, &spec), "x": x});
    std::io::Write::write_all(&mut python.stdin.take().unwrap(), input.to_string().as_bytes()).unwrap();
    let answer = python.wait_with_output().unwrap();
    assert!(answer.status.success());
    let numpy: serde_json::Value = serde_json::from_slice(&answer.stdout).unwrap();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * (1.0 + b.abs());
    let ours = scorer.profile();
    assert!(
        close(ours.shrinkage, numpy["shrinkage"].as_f64().unwrap()),
        "{numpy}"
    );
    for (i, row) in ours.covariance.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            assert!(
                close(*v, numpy["covariance"][i][j].as_f64().unwrap()),
                "({i}, {j}) {v} {numpy}"
            );
        }
    }
    let score = scorer.verdict(&x).score;
    assert!(close(score, numpy["score"].as_f64().unwrap()), "{score} {numpy}");
    let foreign_dir = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign_dir).unwrap();
    let base = &held_out[0];
    let noise_le = variant(base, &foreign_dir, "noise", noise, None, |_| {});
    let inverted_le = variant(base, &foreign_dir, "inverted", inverted, None, |_| {});
    let raw_le = variant(
        base,
        &foreign_dir,
        "for-processing",
        for_processing,
        Some(vcnode_scp::MG_FOR_PROCESSING),
        for_processing_attributes,
    );
    let foreign = [noise_le.clone(), inverted_le, raw_le];

    // flag: everything is synthesized; the foreign images carry the warning.
    let flag_dir = dir.path().join("flag");
    std::fs::create_dir_all(&flag_dir).unwrap();
    let config = write_config_with_model(&flag_dir, "", s(&shipped_model()), "ood = \"flag\"");
    let node = Node::start_with(&flag_dir, config);
    let all: Vec<PathBuf> = held_out.iter().chain(&foreign).cloned().collect();
    let out = storescu(&node, "MODALITY", &[], &all);
    assert_eq!(successes(&out), all.len(), "{}", common::text(&out));
    let done = wait_count(
        &node,
        "SELECT COUNT(*) FROM jobs WHERE state = 'done'",
        all.len() as i64,
        LIMIT,
    )
    .await;
    assert_eq!(
        done,
        all.len() as i64,
        "log:\n{}\n{}",
        node.log(),
        node.jobs_cli()
    );
    let log = node.plain_log();
    // The scores, for the record (the node logs them, never patient data).
    for line in log.lines().filter(|l| l.contains("training distribution")) {
        println!("{line}");
    }
    let mut clean_white = Vec::new();
    for le in &held_out {
        let (path, obj) = derived_rc(&node, le).await.expect("a derived RC");
        let description = text(&obj, tags::DERIVATION_DESCRIPTION);
        assert!(
            !description.contains("OUTSIDE"),
            "held-out phantom flagged: {description}\n{log}"
        );
        clean_white.push(white_in_third_label_line(&path));
    }
    for le in &foreign {
        let (path, obj) = derived_rc(&node, le)
            .await
            .expect("a flagged image is still synthesized");
        let description = text(&obj, tags::DERIVATION_DESCRIPTION);
        assert!(
            description.contains("INPUT OUTSIDE THE MODEL'S TRAINING DATA")
                && description.contains(&format!("threshold {threshold:.2}")),
            "{} not flagged: {description}",
            le.display()
        );
        assert!(text(&obj, tags::IMAGE_COMMENTS).contains("OUTSIDE"));
        let white = white_in_third_label_line(&path);
        let most_clean = *clean_white.iter().max().unwrap();
        assert!(
            white > most_clean + 300,
            "{}: the warning line is not burned in ({white} white pixels, unflagged at most {most_clean})",
            le.display()
        );
    }
    assert_eq!(ood_counter(&node, "flagged"), foreign.len() as f64);
    assert_eq!(ood_counter(&node, "refused"), 0.0);
    assert_eq!(
        status_ood(&node),
        serde_json::json!({"action": "flag", "input_profile": true, "flagged": foreign.len(), "refused": 0})
    );
    drop(node);

    // refuse: noise gets no synthetic image; the job is done with the refusal as its outcome.
    let refuse_dir = dir.path().join("refuse");
    std::fs::create_dir_all(&refuse_dir).unwrap();
    let config = write_config_with_model(&refuse_dir, "", s(&shipped_model()), "ood = \"refuse\"");
    let node = Node::start_with(&refuse_dir, config);
    let out = storescu(&node, "MODALITY", &[], &[noise_le.clone(), held_out[1].clone()]);
    assert_eq!(successes(&out), 2, "{}", common::text(&out));
    let done = wait_count(&node, "SELECT COUNT(*) FROM jobs WHERE state = 'done'", 2, LIMIT).await;
    assert_eq!(done, 2, "log:\n{}\n{}", node.log(), node.jobs_cli());
    assert!(
        derived_rc(&node, &noise_le).await.is_none(),
        "a refused input was synthesized"
    );
    assert!(derived_rc(&node, &held_out[1]).await.is_some());
    let q = vcnode::queue::Queue::open(&node.data_dir).await.unwrap();
    let job: i64 = sqlx::query_scalar("SELECT id FROM jobs WHERE source_uid = ?")
        .bind(sop_instance_uid(&noise_le))
        .fetch_one(q.pool())
        .await
        .unwrap();
    q.close().await;
    let (status, body) = http_json("GET", &format!("{}/api/jobs/{job}", node.base_url()), "");
    assert_eq!(status, "200", "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["job"]["state"], "done", "{view}");
    let refusal = view["job"]["last_error"].as_str().unwrap_or_default();
    assert!(
        refusal.starts_with("refused: input outside the model's training distribution (score ")
            && refusal.ends_with(&format!("> {threshold:.2})")),
        "{view}"
    );
    assert_eq!(view["job"]["attempts"], 1, "a refusal is not retried: {view}");
    assert_eq!(view["attempts"][0]["outcome"], "done", "{view}");
    assert_eq!(view["attempts"][0]["error"], refusal, "{view}");
    assert!(
        node.jobs_cli().contains("refused: input outside"),
        "{}",
        node.jobs_cli()
    );
    assert_eq!(ood_counter(&node, "refused"), 1.0);
    assert_eq!(
        status_ood(&node),
        serde_json::json!({"action": "refuse", "input_profile": true, "flagged": 0, "refused": 1})
    );
}
