//! The researcher's path end to end on a small phantom: `vcnode-lab phantom` → `vcnode-lab train` →
//! `vcnode-lab eval`, as a user runs it.

use std::path::Path;
use std::process::Command;

fn vcnode(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_vcnode-lab"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "vcnode-lab {args:?} failed:\n{text}");
    text
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn phantom_train_eval_produce_weights_manifest_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("weights");
    vcnode(&[
        "phantom",
        "--out",
        s(&data),
        "--patients",
        "3",
        "--seed",
        "9",
        "--rows",
        "416",
        "--columns",
        "320",
        "--lesions",
        "2",
    ]);
    let csv = data.join("pairs.csv");
    assert_eq!(
        std::fs::read_to_string(&csv).unwrap().lines().count(),
        1 + 12,
        "3 patients x 4 views"
    );

    let common = [
        "--rows",
        "64",
        "--cols",
        "48",
        "--channels",
        "4,8,8",
        "--epochs",
        "2",
        "--batch",
        "4",
        "--device",
        "cpu",
    ];
    for model in ["scpa-unet", "unet"] {
        let mut args = vec![
            "train",
            "--model",
            model,
            "--data",
            s(&csv),
            "--out",
            s(&out),
            "--validation",
            "0.25",
        ];
        if model == "scpa-unet" {
            // Restarts: two seeds probe one epoch each, the better one trains on.
            args.extend(["--seeds", "3,4", "--probe-epochs", "1"]);
        }
        args.extend(common);
        vcnode(&args);
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("scpa-unet.json")).unwrap()).unwrap();
    assert_eq!(manifest["model"], "scpa-unet");
    assert_eq!(manifest["input"]["rows"], 64);
    assert_eq!(manifest["training"]["epochs"], 2);
    let probes = manifest["training"]["seed_probes"].as_array().unwrap();
    let scores: Vec<f64> = probes
        .iter()
        .map(|p| p["val_enhancement_l1"].as_f64().unwrap())
        .collect();
    assert_eq!(probes.len(), 2, "{probes:?}");
    let kept = if scores[0] <= scores[1] { 3 } else { 4 };
    assert_eq!(manifest["training"]["seed"], kept, "{probes:?}");
    // The kept seed's weights trained the full 2 epochs, its probe's included, not 1 + 2.
    let unet: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("unet.json")).unwrap()).unwrap();
    assert_eq!(manifest["training"]["steps"], unet["training"]["steps"]);
    assert_eq!(manifest["training"]["pairs"], 9);
    // The out-of-distribution guard's profile of the 9 training LE images.
    assert_eq!(manifest["input_profile"]["images"], 9);
    assert!(manifest["input_profile"]["threshold"].as_f64().unwrap() > 0.0);
    assert_eq!(manifest["weights"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(manifest["metrics"]["validation"]["role"], "development");
    assert!(manifest["metrics"]["validation"]["psnr"]["mean"]
        .as_f64()
        .unwrap()
        .is_finite());

    // A second U-Net seed: the baselines' two manifests are one arm.
    let out2 = dir.path().join("weights-seed5");
    let mut args = vec![
        "train",
        "--model",
        "unet",
        "--data",
        s(&csv),
        "--out",
        s(&out2),
        "--validation",
        "0.25",
        "--seed",
        "5",
    ];
    args.extend(common);
    vcnode(&args);
    let unet2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out2.join("unet.json")).unwrap()).unwrap();
    assert_eq!(unet2["training"]["patients"].as_array().unwrap().len(), 3);
    assert_eq!(
        unet2["training"]["validation_patients"],
        serde_json::json!(["PHANTOM-9-0002"]),
        "the last quarter of the pairs: three of the third patient's views"
    );

    // The training data chose epochs and seeds: it cannot be called held-out.
    let manifests = [
        out.join("scpa-unet.json"),
        out.join("unet.json"),
        out2.join("unet.json"),
    ];
    let eval = |role: &str, report: &Path, record: bool| {
        let mut args = vec![
            "eval",
            "--model",
            s(&manifests[0]),
            "--baseline",
            s(&manifests[1]),
            "--baseline",
            s(&manifests[2]),
            "--data",
            s(&csv),
            "--role",
            role,
            "--out",
            s(report),
            "--pictures",
            "2",
            "--device",
            "cpu",
            // A pair without the model's arm: the U-Net against copying LE.
            "--compare",
            "unet:copy-LE",
        ];
        if record {
            args.push("--record");
        }
        Command::new(env!("CARGO_BIN_EXE_vcnode-lab"))
            .args(args)
            .output()
            .unwrap()
    };
    let report_dir = dir.path().join("report");
    let refused = eval("held-out", &report_dir, false);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "held-out accepted on the training data"
    );
    assert!(
        stderr.contains("is not held-out") && stderr.contains("--role development"),
        "{stderr}"
    );
    assert!(!report_dir.join("REPORT.md").exists());
    // A pair naming an arm that is not evaluated is refused before any inference.
    let unknown = Command::new(env!("CARGO_BIN_EXE_vcnode-lab"))
        .args([
            "eval",
            "--model",
            s(&manifests[0]),
            "--data",
            s(&csv),
            "--role",
            "development",
        ])
        .args([
            "--out",
            s(&report_dir),
            "--compare",
            "scpa-cgan:pix2pix",
            "--device",
            "cpu",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(!unknown.status.success());
    assert!(
        stderr.contains("no arm of kind scpa-cgan") && stderr.contains("arms: scpa-unet, copy-LE"),
        "{stderr}"
    );
    assert!(!report_dir.join("REPORT.md").exists());
    let done = eval("development", &report_dir, true);
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));

    let csv_scores = std::fs::read_to_string(report_dir.join("scores.csv")).unwrap();
    assert_eq!(
        csv_scores.lines().count(),
        1 + 4 * 12,
        "12 cases x (model, 2 baseline seeds, copy-LE)"
    );
    assert!(csv_scores.starts_with(
        "case,patient,model,seed,mse,psnr,ssim,roi_mse,roi_psnr,roi_ssim,nonlesion_mse,nonlesion_psnr,nonlesion_ssim\n"
    ));
    assert!(csv_scores.contains(",PHANTOM-9-0002,copy-LE,,"));
    let evaluation: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report_dir.join("eval.json")).unwrap()).unwrap();
    assert_eq!(evaluation["role"], "development");
    assert_eq!(evaluation["cases"], 12);
    assert_eq!(evaluation["patients"], 3);
    let arms = evaluation["arms"].as_array().unwrap();
    assert_eq!(arms.len(), 3, "scpa-unet, unet x 2 seeds, copy-LE");
    assert_eq!(arms[1]["label"], "unet ×2 seeds");
    let seeds: Vec<_> = arms[1]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seed"].clone())
        .collect();
    assert_eq!(seeds, [serde_json::json!(0), serde_json::json!(5)]);
    assert_eq!(arms[1]["seed_spread"]["psnr"]["n"], 2);
    assert!(arms[1]["seed_spread"]["psnr"]["sd"].as_f64().unwrap() > 0.0);
    assert_eq!(arms[0]["per_patient"]["mse"]["n"], 3);
    let comparisons = evaluation["comparisons"].as_array().unwrap();
    assert_eq!(
        comparisons.len(),
        3 * 9,
        "9 metrics x (2 baseline arms, and the unet:copy-LE pair)"
    );
    let unet_vs_copy: Vec<_> = comparisons
        .iter()
        .filter(|c| c["model"] == "unet ×2 seeds")
        .collect();
    assert_eq!(unet_vs_copy.len(), 9);
    assert!(unet_vs_copy.iter().all(|c| c["baseline"] == "copy-LE"));
    // The tests run on the 3 patients, not the 12 images; Holm never lowers a p-value.
    let whole_psnr_vs_copy = comparisons
        .iter()
        .find(|c| c["baseline"] == "copy-LE" && c["metric"] == "psnr")
        .unwrap();
    assert_eq!(whole_psnr_vs_copy["patients"], 3);
    let (p, p_holm) = (
        whole_psnr_vs_copy["p"].as_f64().unwrap(),
        whole_psnr_vs_copy["p_holm"].as_f64().unwrap(),
    );
    assert!(p_holm >= p && p_holm <= 1.0, "{whole_psnr_vs_copy}");
    assert!(comparisons.iter().all(|c| c["patients"].as_u64().unwrap() <= 3));

    // Every model trained here has a guard profile: its flag rate on this set is reported.
    let guard = evaluation["ood_guard"].as_array().unwrap();
    assert_eq!(guard.len(), 3, "scpa-unet and the two unet seeds: {guard:?}");
    assert!(guard
        .iter()
        .all(|g| g["images"] == 12 && g["flagged"].as_u64().unwrap() <= 12));

    let report = std::fs::read_to_string(report_dir.join("REPORT.md")).unwrap();
    for needle in [
        "## Out-of-distribution guard",
        "**development**",
        "12 images of 3 patients",
        "### Whole breast, 3 patients",
        "### Lesion ROIs",
        "### Non-lesion enhancement ROIs",
        // The phantom placed cysts or fibroadenomas (seed 9): the report shows whether the
        // models draw uptake in them.
        "### Non-enhancing masses",
        "| model | rise (model) | rise (real RC) |",
        "| model | MSE | PSNR (dB) | SSIM |",
        "## Spread between training seeds",
        "| unet ×2 seeds | 2 |",
        "Paired tests across patients",
        "Holm p",
        "copy-LE",
        "## Verdict",
    ] {
        assert!(report.contains(needle), "{needle}\n{report}");
    }
    // Every run's training, one row each: the two U-Net seeds apart, trained with L1 on cpu.
    let training: Vec<&str> = report
        .split("## Training")
        .nth(1)
        .expect("a training section")
        .split("\n## ")
        .next()
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("| scpa-unet-") || l.starts_with("| unet-"))
        .collect();
    assert_eq!(training.len(), 3, "{training:?}");
    assert!(training
        .iter()
        .all(|l| l.contains("| L1 |") && l.contains("| scratch |")));
    assert!(training
        .iter()
        .any(|l| l.starts_with("| unet-") && l.contains(" | 5 | ")));
    // One verdict line per pair of arms, whichever way it goes.
    let verdict_lines: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("- **") && l.contains(" beat"))
        .collect();
    assert_eq!(
        verdict_lines.len(),
        3,
        "unet, copy-LE, and unet vs copy-LE\n{report}"
    );
    assert!(
        verdict_lines[2].starts_with("- **unet ×2 seeds ") && verdict_lines[2].contains(" copy-LE."),
        "{verdict_lines:?}"
    );
    // The by-lesion table counts every enhancing lesion box of the ROI files (a non-enhancing
    // mass is no lesion ROI), split by visibility on LE.
    let (mut visible, mut hidden) = (0, 0);
    for line in std::fs::read_to_string(&csv).unwrap().lines().skip(1) {
        let rois = std::fs::read(data.join(line.split(',').nth(2).unwrap())).unwrap();
        let rois: serde_json::Value = serde_json::from_slice(&rois).unwrap();
        for lesion in rois["lesions"].as_array().unwrap() {
            if lesion["kind"] == "non-enhancing" {
                continue;
            }
            *(if lesion["hidden"] == true {
                &mut hidden
            } else {
                &mut visible
            }) += 1;
        }
    }
    assert!(visible + hidden >= 8, "--lesions 2 placed {visible} + {hidden}");
    let header =
        format!("| model | {visible} visible: ROI MSE | ROI PSNR (dB) | ROI SSIM | {hidden} hidden:");
    assert!(report.contains(&header), "{header}\n{report}");
    let png = std::fs::read(report_dir.join("pictures/case-001.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("scpa-unet.json")).unwrap()).unwrap();
    assert_eq!(recorded["metrics"]["development"]["cases"], 12);
    assert_eq!(recorded["metrics"]["development"]["role"], "development");
    assert!(recorded["metrics"]["held_out"].is_null());
    let recorded2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out2.join("unet.json")).unwrap()).unwrap();
    assert_eq!(recorded2["metrics"]["development"]["cases"], 12);

    // Weights that no longer match their manifest are refused with a clear message.
    std::fs::write(out.join("unet.safetensors"), b"not the weights").unwrap();
    let bad = Command::new(env!("CARGO_BIN_EXE_vcnode-lab"))
        .args([
            "eval",
            "--model",
            s(&out.join("unet.json")),
            "--data",
            s(&csv),
            "--role",
            "development",
            "--out",
            s(&report_dir),
            "--device",
            "cpu",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("sha256"));
}
