//! The evaluation report: a Markdown summary and, per case, a PNG grid of LE, real RC,
//! generated RC, absolute error and the last SCPA layer's attention map.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tch::{Kind, Tensor};
use vcnode_models::manifest::Manifest;
use vcnode_models::stats::summary;

use super::dataset::PreparedPair;
use super::eval::{Comparison, Scored, DRAWN_SHARE, METRICS};

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

fn fmt_stat(values: &[f64]) -> String {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    let s = summary(&v);
    if s.n == 0 {
        "–".into()
    } else {
        format!("{:.3} ± {:.3}", s.mean, s.sd)
    }
}

pub fn markdown(
    model: &Manifest,
    data: &Path,
    scored: &[Scored],
    comparisons: &[Comparison],
    pictures: &[(String, PathBuf)],
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Evaluation of {}\n", model.model_id());
    let _ = writeln!(
        s,
        "Data: `{}`, {} cases. Metrics at the model input ({}×{}), on [0, 1] windowed values:",
        data.display(),
        scored[0].cases.len(),
        model.input.rows,
        model.input.cols
    );
    let _ = writeln!(s, "whole = the resized breast crop (padding excluded); ROI = mean over the lesion boxes of each case.\n");
    if let Some(t) = &model.training {
        let _ = writeln!(s, "{}\n", training_line(t));
    }
    let _ = writeln!(
        s,
        "| model | PSNR (dB) | SSIM | ROI PSNR (dB) | ROI SSIM |\n|---|---|---|---|---|"
    );
    for m in scored {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            m.label,
            fmt_stat(&m.values("psnr")),
            fmt_stat(&m.values("ssim")),
            fmt_stat(&m.values("roi_psnr")),
            fmt_stat(&m.values("roi_ssim"))
        );
    }
    if scored
        .iter()
        .any(|m| m.cases.iter().any(|c| !c.lesions.is_empty()))
    {
        let _ = writeln!(
            s,
            "\nBy lesion, split by what LE shows (hidden = in dense tissue, hard to see on LE):\n"
        );
        let count = |hidden: bool| scored[0].lesions().filter(|l| l.hidden == hidden).count();
        let _ = writeln!(
            s,
            "| model | {} visible: ROI PSNR (dB) | ROI SSIM | {} hidden: ROI PSNR (dB) | ROI SSIM |\n|---|---|---|---|---|",
            count(false),
            count(true)
        );
        for m in scored {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                m.label,
                fmt_stat(&m.lesion_values(|s| s.psnr, |l| !l.hidden)),
                fmt_stat(&m.lesion_values(|s| s.ssim, |l| !l.hidden)),
                fmt_stat(&m.lesion_values(|s| s.psnr, |l| l.hidden)),
                fmt_stat(&m.lesion_values(|s| s.ssim, |l| l.hidden))
            );
        }
    }
    let (_, judged) = scored[0].drawn();
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
        for m in scored {
            let (drawn, judged) = m.drawn();
            let _ = writeln!(
                s,
                "| {} | {drawn} of {judged} | {} | {} |",
                m.label,
                fmt_stat(&m.lesion_values(|s| s.ssim, |l| l.drawn == Some(true))),
                fmt_stat(&m.lesion_values(|s| s.ssim, |l| l.drawn == Some(false)))
            );
        }
    }
    let _ = writeln!(s, "\n## Paired tests ({} vs each baseline)\n", scored[0].label);
    let _ = writeln!(
        s,
        "Shapiro–Wilk on the paired differences; p ≥ 0.05 → paired t-test, else Wilcoxon signed-rank.\n"
    );
    let _ = writeln!(
        s,
        "| baseline | metric | mean difference | Shapiro–Wilk p | test | p |\n|---|---|---|---|---|---|"
    );
    for c in comparisons {
        match &c.result {
            Some(r) => {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:+.4} | {} | {} | {:.3e} |",
                    c.baseline,
                    c.metric,
                    r.mean_difference,
                    r.normality
                        .map(|n| format!("{:.3}", n.p))
                        .unwrap_or_else(|| "–".into()),
                    r.test.test,
                    r.test.p
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "| {} | {} | – | – | not computable | – |",
                    c.baseline, c.metric
                );
            }
        }
    }
    debug_assert!(METRICS.len() * (scored.len() - 1) == comparisons.len());
    if !pictures.is_empty() {
        let _ = writeln!(s, "\n## Cases\n\nLeft to right: LE input, real RC, generated RC, |error| (×4), attention of the last SCPA layer.\n");
        for (name, path) in pictures {
            let _ = writeln!(s, "{name}\n\n![{name}]({})\n", path.display());
        }
    }
    s
}

/// How weights were trained, in a sentence, and for fine-tuned weights where they started.
fn training_line(t: &vcnode_models::manifest::TrainingRecord) -> String {
    let frozen = match t.frozen_norm_epochs {
        0 => String::new(),
        k => format!(", the last {k} with batch norms frozen on whole-image statistics"),
    };
    let mut line = format!(
        "Trained on {} ({} pairs, {} epochs{frozen}, {} steps, {:.0} s on {}). {}",
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
