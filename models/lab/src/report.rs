//! The evaluation report: a Markdown summary and, per case, a PNG grid of LE, real RC,
//! generated RC, absolute error and the last SCPA layer's attention map.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::stats::summary;
use anyhow::Context;
use tch::{Kind, Tensor};

use super::dataset::PreparedPair;
use super::eval::{
    verdicts, Evaluation, Role, ALPHA, DRAWN_SHARE, ENHANCEMENT_BOXES, ENHANCEMENT_SDS, METRICS,
};

/// Writes an 8-bit grayscale PNG.
pub fn write_png(path: &Path, width: usize, height: usize, pixels: &[u8]) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width as u32, height as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(pixels)?;
    Ok(())
}

/// [H, W] values scaled by `lo..hi` to 0..255.
fn to_u8(t: &Tensor, lo: f64, hi: f64) -> Vec<u8> {
    let v = Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).expect("a float tensor");
    v.iter()
        .map(|&x| (((x as f64 - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect()
}

/// One grid per case for the first `count` cases; returns their paths relative to `out`.
pub fn write_pictures(
    out: &Path,
    pairs: &[PreparedPair],
    predictions: &[Tensor],
    attention: &[Tensor],
    count: usize,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let dir = out.join("pictures");
    std::fs::create_dir_all(&dir)?;
    let mut written = Vec::new();
    for (i, (pair, pred)) in pairs.iter().zip(predictions).take(count).enumerate() {
        let le = pair.le.view([pair.le.size()[2], pair.le.size()[3]]);
        let (h, w) = (le.size()[0] as usize, le.size()[1] as usize);
        let rc = pair.rc.view([h as i64, w as i64]);
        let gen = pred.view([h as i64, w as i64]);
        let err = (&gen - &rc).abs();
        let mut tiles = vec![
            to_u8(&le, 0.0, 1.0),
            to_u8(&rc, 0.0, 1.0),
            to_u8(&gen, 0.0, 1.0),
            to_u8(&err, 0.0, 0.25),
        ];
        if let Some(a) = attention.get(i) {
            let a = a.view([h as i64, w as i64]);
            let (lo, hi) = (
                f64::try_from(a.min()).unwrap_or(0.0),
                f64::try_from(a.max()).unwrap_or(1.0),
            );
            tiles.push(to_u8(&a, lo, hi.max(lo + 1e-6)));
        }
        let gap = 4;
        let width = tiles.len() * w + (tiles.len() - 1) * gap;
        let mut grid = vec![255u8; width * h];
        for (t, tile) in tiles.iter().enumerate() {
            for r in 0..h {
                let x0 = t * (w + gap);
                grid[r * width + x0..r * width + x0 + w].copy_from_slice(&tile[r * w..(r + 1) * w]);
            }
        }
        let name = format!("case-{:03}.png", i + 1);
        write_png(&dir.join(&name), width, h, &grid)?;
        written.push((pair.name.clone(), PathBuf::from("pictures").join(name)));
    }
    Ok(written)
}

/// mean ± SD of the finite values, MSE in scientific notation; "–" if there are none.
fn fmt_stat(values: &[f64], metric: &str) -> String {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    let s = summary(&v);
    match s.n {
        0 => "–".into(),
        1 if metric.ends_with("mse") => format!("{:.3e}", s.mean),
        1 => format!("{:.3}", s.mean),
        _ if metric.ends_with("mse") => format!("{:.3e} ± {:.2e}", s.mean, s.sd),
        _ => format!("{:.3} ± {:.3}", s.mean, s.sd),
    }
}

/// The metrics of one kind of region, with their column names.
const REGIONS: [(&str, &str, [&str; 3]); 3] = [
    ("Whole breast", "", ["mse", "psnr", "ssim"]),
    (
        "Lesion ROIs",
        "mean over the lesion boxes of each image",
        ["roi_mse", "roi_psnr", "roi_ssim"],
    ),
    (
        "Non-lesion enhancement ROIs",
        "mean over each image's non-lesion enhancement boxes",
        ["nonlesion_mse", "nonlesion_psnr", "nonlesion_ssim"],
    ),
];

pub fn markdown(e: &Evaluation, pictures: &[(String, PathBuf)]) -> String {
    let model = e.model;
    let arms = e.arms;
    let mut s = String::new();
    let _ = writeln!(s, "# Evaluation of {}\n", arms[0].label);
    let role = match e.role {
        Role::HeldOut => "**held-out**: never used for any choice (the manifests record neither its \
                         patients nor its path among their training, validation or development data)"
            .to_string(),
        Role::Development => "**development**: used for choices or training, so differences on it carry \
                              that selection and are no evidence on their own"
            .to_string(),
    };
    let _ = writeln!(s, "Data: `{}`, {role}.\n", e.data.display());
    let _ = writeln!(
        s,
        "{} images of {} patients{}. Metrics at the model input ({}×{}), on [0, 1] windowed values. \
         Tables give mean ± SD across patients of each patient's mean over their images (and over the \
         arm's seeds).\n",
        e.cases(),
        e.patients(),
        if e.patients_known {
            ""
        } else {
            " (the data does not name every image's patient: such an image counts as its own patient)"
        },
        model.input.rows,
        model.input.cols
    );
    let _ = writeln!(
        s,
        "Regions: whole = the resized breast crop (padding excluded). ROI MSE and PSNR are those of the box's \
         pixels; ROI SSIM is the mean of the breast's SSIM map (11×11 Gaussian window, σ 1.5, as \
         scikit-image) inside the box. Non-lesion enhancement ROIs are up to {ENHANCEMENT_BOXES} boxes per \
         image where the real RC enhances away from the lesions (background parenchymal enhancement, \
         vessels), chosen from the real RC alone: the breast crop tiled in squares of max(11, min side / 16) \
         pixels, tiles within one tile of a lesion box dropped, a tile enhancing when its mean exceeds the \
         median tile by more than {ENHANCEMENT_SDS} robust SDs (1.4826 × MAD), the brightest kept.\n"
    );
    let _ = writeln!(s, "Arms (weights, training seed):\n");
    for arm in &arms[..arms.len() - 1] {
        let runs: Vec<String> = arm
            .runs
            .iter()
            .map(|r| match r.seed {
                Some(seed) => format!("{} (seed {seed})", r.label),
                None => r.label.clone(),
            })
            .collect();
        let _ = writeln!(s, "- {}: {}", arm.label, runs.join(", "));
    }
    let _ = writeln!(
        s,
        "- copy-LE: the LE input itself, the floor any model must clear"
    );
    s.push('\n');
    if let Some(t) = &model.training {
        let _ = writeln!(s, "{}\n", training_line(t));
    }
    for (title, note, metrics) in REGIONS {
        let note = if note.is_empty() {
            String::new()
        } else {
            format!(" ({note})")
        };
        let patients = |m: &str| {
            arms[0]
                .patient_values(m)
                .iter()
                .filter(|(_, v)| v.is_finite())
                .count()
        };
        let _ = writeln!(
            s,
            "### {title}{note}, {} patients\n\n| model | MSE | PSNR (dB) | SSIM |\n|---|---|---|---|",
            patients(metrics[1])
        );
        for arm in arms {
            let cell = |m: &str| {
                let v: Vec<f64> = arm.patient_values(m).into_iter().map(|(_, v)| v).collect();
                fmt_stat(&v, m)
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                arm.label,
                cell(metrics[0]),
                cell(metrics[1]),
                cell(metrics[2])
            );
        }
        s.push('\n');
    }
    if arms.iter().any(|a| {
        a.runs
            .iter()
            .any(|r| r.cases.iter().any(|c| !c.lesions.is_empty()))
    }) {
        let pooled = if arms.iter().any(|a| a.runs.len() > 1) {
            " Lesions of all seeds pooled."
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "By lesion, split by what LE shows (hidden = in dense tissue, hard to see on LE), mean ± SD over \
             lesions.{pooled}\n"
        );
        let count = |hidden: bool| arms[0].runs[0].lesions().filter(|l| l.hidden == hidden).count();
        let _ = writeln!(
            s,
            "| model | {} visible: ROI MSE | ROI PSNR (dB) | ROI SSIM | {} hidden: ROI MSE | ROI PSNR (dB) | ROI SSIM |\n\
             |---|---|---|---|---|---|---|",
            count(false),
            count(true)
        );
        for arm in arms {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                arm.label,
                fmt_stat(&arm.lesion_values(|s| s.mse, |l| !l.hidden), "mse"),
                fmt_stat(&arm.lesion_values(|s| s.psnr, |l| !l.hidden), "psnr"),
                fmt_stat(&arm.lesion_values(|s| s.ssim, |l| !l.hidden), "ssim"),
                fmt_stat(&arm.lesion_values(|s| s.mse, |l| l.hidden), "mse"),
                fmt_stat(&arm.lesion_values(|s| s.psnr, |l| l.hidden), "psnr"),
                fmt_stat(&arm.lesion_values(|s| s.ssim, |l| l.hidden), "ssim"),
            );
        }
    }
    let (_, judged) = arms[0].drawn();
    if judged > 0 {
        let _ = writeln!(
            s,
            "\nLesions drawn: a box counts as drawn when it rises above the ring around it by at least {:.0}% of \
             what the real RC's box rises; ROI SSIM split by that. The whole-ROI SSIM above mixes both kinds.\n",
            DRAWN_SHARE * 100.0
        );
        let _ = writeln!(
            s,
            "| model | lesions drawn | ROI SSIM, drawn | ROI SSIM, missed |\n|---|---|---|---|"
        );
        for arm in arms {
            let (drawn, judged) = arm.drawn();
            let _ = writeln!(
                s,
                "| {} | {drawn} of {judged} | {} | {} |",
                arm.label,
                fmt_stat(&arm.lesion_values(|s| s.ssim, |l| l.drawn == Some(true)), "ssim"),
                fmt_stat(&arm.lesion_values(|s| s.ssim, |l| l.drawn == Some(false)), "ssim")
            );
        }
    }
    non_enhancing_section(&mut s, arms);
    let _ = writeln!(s, "\n## Spread between training seeds\n");
    let _ = writeln!(
        s,
        "Each seed's mean over patients; mean ± SD across the seeds of an arm (n = seeds; one seed has no \
         spread).\n"
    );
    let _ = writeln!(
        s,
        "| model | seeds | {} |\n|---|---|{}",
        METRICS.join(" | "),
        "---|".repeat(METRICS.len())
    );
    for arm in arms {
        let cells: Vec<String> = METRICS.iter().map(|m| fmt_stat(&arm.seed_means(m), m)).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            arm.label,
            arm.runs.len(),
            cells.join(" | ")
        );
    }
    let _ = writeln!(
        s,
        "\n## Paired tests across patients ({} vs each other arm, and the pairs asked for with `--compare`)\n",
        arms[0].label
    );
    let _ = writeln!(
        s,
        "One value per patient and arm: the mean over the patient's images and over the arm's seeds. \
         Shapiro–Wilk on the paired differences; p ≥ {ALPHA} → paired t-test, else Wilcoxon signed-rank. \
         Holm p: Holm–Bonferroni across the metrics of one comparison (the rows of one pair of arms that could \
         be tested).\n"
    );
    let _ = writeln!(
        s,
        "| model | baseline | metric | patients | mean difference | Shapiro–Wilk p | test | p | Holm p |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    for c in e.comparisons {
        match &c.result {
            Some(r) => {
                let diff = if c.metric.ends_with("mse") {
                    format!("{:+.3e}", r.mean_difference)
                } else {
                    format!("{:+.4}", r.mean_difference)
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {diff} | {} | {} | {:.3e} | {:.3e} |",
                    c.model,
                    c.baseline,
                    c.metric,
                    c.patients,
                    r.normality
                        .map(|n| format!("{:.3}", n.p))
                        .unwrap_or_else(|| "–".into()),
                    r.test.test,
                    r.test.p,
                    c.p_holm
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | – | – | not computable | – | – |",
                    c.model, c.baseline, c.metric, c.patients
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "\n## Verdict\n\nA model beats a baseline when it is significantly better (Holm p < {ALPHA}) on at \
         least one metric and significantly worse on none.\n"
    );
    for v in verdicts(e.comparisons) {
        let list = |m: &[&str]| {
            if m.is_empty() {
                "none".to_string()
            } else {
                m.join(", ")
            }
        };
        let _ = writeln!(
            s,
            "- **{} {} {}.** Better on: {}. Worse on: {}. No significant difference (or no test) on: {}.",
            v.model,
            if v.beats() { "beats" } else { "does not beat" },
            v.baseline,
            list(&v.better),
            list(&v.worse),
            list(&v.undecided)
        );
    }
    if !pictures.is_empty() {
        let _ = writeln!(s, "\n## Cases\n\nLeft to right: LE input, real RC, generated RC (first seed), |error| (×4), attention of the last SCPA layer.\n");
        for (name, path) in pictures {
            let _ = writeln!(s, "{name}\n\n![{name}]({})\n", path.display());
        }
    }
    s
}

/// Every evaluated run's training configuration, device and time, one row each: what a reader
/// needs to weigh the arms against each other (same data, same budget?).
pub fn training_section(manifests: &[&vcnode_models::manifest::Manifest]) -> String {
    let mut s = String::new();
    let trained: Vec<_> = manifests
        .iter()
        .filter_map(|m| m.training.as_ref().map(|t| (m, t)))
        .collect();
    if trained.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "\n## Training\n\n| weights | seed | input | widths | crops | batch | epochs (frozen norms) | \
         steps | loss | device | precision | time | started from |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (m, t) in trained {
        let widths: Vec<String> = m.generator.channels.iter().map(|c| c.to_string()).collect();
        let crops = t
            .patches
            .as_ref()
            .map(|p| {
                format!(
                    "{0}×{0}, {1:.0}% on enhancement",
                    p.size,
                    100.0 * p.enhancement_share
                )
            })
            .unwrap_or_else(|| "whole images".into());
        let loss = match (t.lambda_l1, t.discriminator_base) {
            (Some(l), Some(d)) => format!("cGAN + {l}·L1, PatchGAN width {d}"),
            (Some(l), None) => format!("cGAN + {l}·L1"),
            _ => "L1".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {}×{} | {} | {crops} | {} | {} ({}) | {} | {loss} | {} | {} | {:.0} min | {} |",
            m.model_id(),
            t.seed.map(|v| v.to_string()).unwrap_or_else(|| "–".into()),
            m.input.cols,
            m.input.rows,
            widths.join("-"),
            t.batch,
            t.epochs,
            t.frozen_norm_epochs,
            t.steps,
            t.device,
            t.precision.as_deref().unwrap_or("f32"),
            t.seconds / 60.0,
            t.fine_tuned_from
                .as_ref()
                .map(|f| f.model_id.as_str())
                .unwrap_or("scratch"),
        );
    }
    s
}

/// The out-of-distribution guard's share of flagged images per model with an input profile.
pub fn ood_guard_section(rates: &[super::calibrate::GuardRate], role: Role) -> String {
    let mut s = String::new();
    if rates.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "\n## Out-of-distribution guard\n\nThe share of this set's images that the node's guard \
         (`[inference] ood`) would flag or refuse{}.\n\n| model | images | flagged | share | \
         threshold | median score | max score |\n|---|---|---|---|---|---|---|",
        if role == Role::HeldOut {
            ": on held-out data of the training kind, its false-positive rate"
        } else {
            ""
        }
    );
    for r in rates {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1}% | {:.2} | {:.2} | {:.2} |",
            r.model_id,
            r.images,
            r.flagged,
            100.0 * r.share(),
            r.threshold,
            r.median_score,
            r.max_score
        );
    }
    s
}

/// Non-enhancing masses (cysts, fibroadenomas): not lesion ROIs, but a model that draws uptake
/// in them is wrong however well it scores elsewhere.
fn non_enhancing_section(s: &mut String, arms: &[super::eval::Arm]) {
    let count = arms[0].runs[0].non_enhancing_rises().count();
    if count == 0 {
        return;
    }
    let _ = writeln!(
        s,
        "\n### Non-enhancing masses\n\n{count} boxes of cysts and fibroadenomas, which show on LE and not on \
         the real RC. Mean ± SD over the boxes (seeds pooled) of how far the box rises above the ring around \
         it, in windowed RC units (0–1); a model should not rise where the real RC does not.\n\n\
         | model | rise (model) | rise (real RC) |\n|---|---|---|"
    );
    for arm in arms {
        let (model, real): (Vec<f64>, Vec<f64>) =
            arm.runs.iter().flat_map(|r| r.non_enhancing_rises()).unzip();
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            arm.label,
            fmt_stat(&model, "rise"),
            fmt_stat(&real, "rise")
        );
    }
}

/// How weights were trained, in a sentence, and for fine-tuned weights where they started.
fn training_line(t: &vcnode_models::manifest::TrainingRecord) -> String {
    let frozen = match t.frozen_norm_epochs {
        0 => String::new(),
        k => format!(", the last {k} with batch norms frozen on whole-image statistics"),
    };
    let precision = t
        .precision
        .as_deref()
        .map(|p| format!(" in {p}"))
        .unwrap_or_default();
    let mut line = format!(
        "Trained on {} ({} pairs, {} epochs{frozen}, {} steps, {:.0} s on {}{precision}). {}",
        t.data, t.pairs, t.epochs, t.steps, t.seconds, t.device, t.note
    );
    if let Some(from) = &t.fine_tuned_from {
        line = format!("{} Started from {}", line.trim_end(), from.model_id);
        match &from.training {
            Some(before) => line = format!("{line}: {}", training_line(before)),
            None => line.push('.'),
        }
    }
    line
}
