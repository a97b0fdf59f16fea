//! The researcher's path end to end on a small phantom: `vcnode phantom` → `vcnode train` →
//! `vcnode eval`, as a user runs it.

use std::path::Path;
use std::process::Command;

fn vcnode(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_vcnode"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "vcnode {args:?} failed:\n{text}");
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
        "2",
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
        1 + 8,
        "2 patients x 4 views"
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
    assert_eq!(manifest["training"]["pairs"], 6);
    assert_eq!(manifest["weights"]["sha256"].as_str().unwrap().len(), 64);
    assert!(manifest["metrics"]["validation"]["psnr"]["mean"]
        .as_f64()
        .unwrap()
        .is_finite());

    let report_dir = dir.path().join("report");
    vcnode(&[
        "eval",
        "--model",
        s(&out.join("scpa-unet.json")),
        "--baseline",
        s(&out.join("unet.json")),
        "--data",
        s(&csv),
        "--out",
        s(&report_dir),
        "--pictures",
        "2",
        "--device",
        "cpu",
        "--record",
    ]);
    let csv_scores = std::fs::read_to_string(report_dir.join("scores.csv")).unwrap();
    assert_eq!(
        csv_scores.lines().count(),
        1 + 3 * 8,
        "8 cases x (model, baseline, copy-LE)"
    );
    assert!(csv_scores.contains(",copy-LE,"));
    let report = std::fs::read_to_string(report_dir.join("REPORT.md")).unwrap();
    assert!(
        report.contains("Paired tests") && report.contains("copy-LE"),
        "{report}"
    );
    // The by-lesion table counts every lesion box of the ROI files, split by visibility on LE.
    let (mut visible, mut hidden) = (0, 0);
    for line in std::fs::read_to_string(&csv).unwrap().lines().skip(1) {
        let rois = std::fs::read(data.join(line.split(',').nth(2).unwrap())).unwrap();
        let rois: serde_json::Value = serde_json::from_slice(&rois).unwrap();
        for lesion in rois["lesions"].as_array().unwrap() {
            *(if lesion["hidden"] == true {
                &mut hidden
            } else {
                &mut visible
            }) += 1;
        }
    }
    assert!(visible + hidden >= 8, "--lesions 2 placed {visible} + {hidden}");
    let header = format!("| model | {visible} visible: ROI PSNR (dB) | ROI SSIM | {hidden} hidden:");
    assert!(report.contains(&header), "{header}\n{report}");
    let png = std::fs::read(report_dir.join("pictures/case-001.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("scpa-unet.json")).unwrap()).unwrap();
    assert_eq!(recorded["metrics"]["held_out"]["cases"], 8);

    // Weights that no longer match their manifest are refused with a clear message.
    std::fs::write(out.join("unet.safetensors"), b"not the weights").unwrap();
    let bad = Command::new(env!("CARGO_BIN_EXE_vcnode"))
        .args([
            "eval",
            "--model",
            s(&out.join("unet.json")),
            "--data",
            s(&csv),
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
