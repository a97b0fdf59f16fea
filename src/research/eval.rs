//! `vcnode eval`: MSE, PSNR and SSIM of a model against the real RC — on the breast (the
//! resized crop, not the padding) and on the lesion boxes — per image and summarized, compared
//! with baselines by paired tests, with a report.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use tch::{Kind, Tensor};
use vcnode_models::manifest::Manifest;
use vcnode_models::metrics::{crop, region_scores, ImageScores, Region};
use vcnode_models::model::RcModel;
use vcnode_models::stats::{compare_paired, summary, PairedComparison};

use super::dataset::{discover, prepare_all, PreparedPair};
use super::report;

/// Scores of one case.
#[derive(Debug, Clone)]
pub struct CaseScores {
    pub name: String,
    pub whole: ImageScores,
    pub lesions: Vec<LesionScores>,
}

/// One lesion box of a case.
#[derive(Debug, Clone, Copy)]
pub struct LesionScores {
    pub scores: ImageScores,
    /// The lesion is hidden on LE (in dense tissue).
    pub hidden: bool,
    /// Whether the image shows the lesion's uptake: its box rises above the surrounding ring by
    /// at least half as much as the real RC's does. A box with the rest of the breast's
    /// brightness scores a middling SSIM whether or not a lesion is drawn in it, so this says
    /// what the scores cannot: how many lesions a radiologist would see. `None` where the real
    /// RC's box does not rise above its ring (nothing to show).
    pub drawn: Option<bool>,
}

/// Share of the real RC's rise a generated box must reach to count as drawn.
pub const DRAWN_SHARE: f64 = 0.5;

/// Mean of `img` over `r` minus its mean over a ring around `r` as wide as half the box's larger
/// side, both inside `within`. `None` if the box or the ring is empty.
fn rise(img: &[f32], cols: usize, r: Region, within: Region) -> Option<f64> {
    let m = r.rows().max(r.cols()).div_ceil(2);
    let grow = |by: usize| Region {
        row0: r.row0.saturating_sub(by).max(within.row0),
        col0: r.col0.saturating_sub(by).max(within.col0),
        row1: (r.row1 + by).min(within.row1),
        col1: (r.col1 + by).min(within.col1),
    };
    let sum_len = |reg: Region| {
        let v = crop(img, cols, reg);
        (v.iter().map(|&x| x as f64).sum::<f64>(), v.len())
    };
    let ((inside, n_in), (outer, n_outer)) = (sum_len(grow(0)), sum_len(grow(m)));
    let n_ring = n_outer - n_in;
    (n_in > 0 && n_ring > 0).then(|| inside / n_in as f64 - (outer - inside) / n_ring as f64)
}

impl CaseScores {
    /// The mean over the case's scorable lesion boxes; None without lesions.
    pub fn roi(&self) -> Option<ImageScores> {
        let mean = |f: fn(&ImageScores) -> f64| {
            let v: Vec<f64> = self
                .lesions
                .iter()
                .map(|l| f(&l.scores))
                .filter(|x| x.is_finite())
                .collect();
            if v.is_empty() {
                f64::NAN
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        (!self.lesions.is_empty()).then(|| ImageScores {
            mse: mean(|s| s.mse),
            psnr: mean(|s| s.psnr),
            ssim: mean(|s| s.ssim),
        })
    }
}

/// A model's scores over a data set.
pub struct Scored {
    pub label: String,
    pub cases: Vec<CaseScores>,
}

/// The metrics the summaries and tests use, by name.
pub const METRICS: [&str; 4] = ["psnr", "ssim", "roi_psnr", "roi_ssim"];

impl Scored {
    /// A per-lesion metric over the lesions that `keep` selects (e.g. those hidden on LE, or
    /// those the images draw).
    pub fn lesion_values(
        &self,
        metric: fn(&ImageScores) -> f64,
        keep: fn(&LesionScores) -> bool,
    ) -> Vec<f64> {
        self.lesions()
            .filter(|l| keep(l))
            .map(|l| metric(&l.scores))
            .collect()
    }

    pub fn lesions(&self) -> impl Iterator<Item = &LesionScores> {
        self.cases.iter().flat_map(|c| &c.lesions)
    }

    /// (drawn, judged): how many lesions the images show, of those the real RC shows.
    pub fn drawn(&self) -> (usize, usize) {
        let judged: Vec<bool> = self.lesions().filter_map(|l| l.drawn).collect();
        (judged.iter().filter(|d| **d).count(), judged.len())
    }

    pub fn values(&self, metric: &str) -> Vec<f64> {
        self.cases
            .iter()
            .map(|c| match metric {
                "psnr" => c.whole.psnr,
                "ssim" => c.whole.ssim,
                "mse" => c.whole.mse,
                "roi_psnr" => c.roi().map_or(f64::NAN, |r| r.psnr),
                "roi_ssim" => c.roi().map_or(f64::NAN, |r| r.ssim),
                "roi_mse" => c.roi().map_or(f64::NAN, |r| r.mse),
                _ => f64::NAN,
            })
            .collect()
    }

    /// mean ± sd per metric, over the cases where the metric is defined.
    pub fn summary_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("cases".into(), self.cases.len().into());
        for metric in ["mse", "psnr", "ssim", "roi_mse", "roi_psnr", "roi_ssim"] {
            let v: Vec<f64> = self
                .values(metric)
                .into_iter()
                .filter(|x| x.is_finite())
                .collect();
            let s = summary(&v);
            m.insert(
                metric.into(),
                serde_json::json!({ "mean": s.mean, "sd": s.sd, "n": s.n }),
            );
        }
        let (drawn, judged) = self.drawn();
        m.insert(
            "lesions_drawn".into(),
            serde_json::json!({ "drawn": drawn, "of": judged, "share": DRAWN_SHARE }),
        );
        serde_json::Value::Object(m)
    }
}

fn tensor_vec(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).expect("a float tensor")
}

/// Scores predictions against the pairs' targets. `predict` maps a batch [B, 1, H, W] of
/// normalized LE to normalized RC; both are compared in [0, 1] (the windowed RC scale).
pub fn score_pairs(pairs: &[PreparedPair], predict: impl Fn(&Tensor) -> Tensor) -> anyhow::Result<Scored> {
    let predictions = predict_all(pairs, predict);
    Ok(score_predictions("", pairs, &predictions))
}

pub fn predict_all(pairs: &[PreparedPair], mut predict: impl FnMut(&Tensor) -> Tensor) -> Vec<Tensor> {
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(4) {
        let x = Tensor::cat(&chunk.iter().map(|p| &p.le).collect::<Vec<_>>(), 0);
        let y = predict(&x).to_device(tch::Device::Cpu);
        for i in 0..chunk.len() as i64 {
            out.push(y.get(i));
        }
    }
    out
}

pub fn score_predictions(label: &str, pairs: &[PreparedPair], predictions: &[Tensor]) -> Scored {
    let cases = pairs
        .iter()
        .zip(predictions)
        .map(|(pair, pred)| {
            let size = pair.le.size();
            let (rows, cols) = (size[2] as usize, size[3] as usize);
            let truth = tensor_vec(&pair.rc);
            let pred = tensor_vec(pred);
            let content = Region {
                row0: 0,
                col0: 0,
                row1: pair.geometry.content[0] as usize,
                col1: pair.geometry.content[1] as usize,
            };
            let whole = region_scores(&pred, &truth, rows, cols, content, 1.0);
            let lesions = pair
                .rois
                .iter()
                .map(|&([row0, row1, col0, col1], hidden)| {
                    let region = Region {
                        row0,
                        col0,
                        row1,
                        col1,
                    };
                    let drawn = match (
                        rise(&truth, cols, region, content),
                        rise(&pred, cols, region, content),
                    ) {
                        (Some(real), Some(shown)) if real > 0.0 => Some(shown >= DRAWN_SHARE * real),
                        _ => None,
                    };
                    LesionScores {
                        scores: region_scores(&pred, &truth, rows, cols, region, 1.0),
                        hidden,
                        drawn,
                    }
                })
                .collect();
            CaseScores {
                name: pair.name.clone(),
                whole,
                lesions,
            }
        })
        .collect();
    Scored {
        label: label.to_string(),
        cases,
    }
}

/// `vcnode eval` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// The model's manifest (.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Baseline manifests; "copy the LE image" is always included.
    #[arg(long = "baseline")]
    pub baselines: Vec<PathBuf>,
    /// pairs.csv (columns le,rc[,rois]), a folder of *_LE.dcm/*_RC.dcm pairs, or a CDD-CESM
    /// folder (ROIs from its hand-drawn segmentation CSV).
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// How many cases get a picture grid.
    #[arg(long, default_value_t = 6)]
    pub pictures: usize,
    #[arg(long, default_value = "auto")]
    pub device: vcnode_models::DeviceRequest,
    /// Write the held-out summary into the manifests.
    #[arg(long)]
    pub record: bool,
}

/// One comparison row: model vs baseline on a metric.
pub struct Comparison {
    pub baseline: String,
    pub metric: &'static str,
    pub result: Option<PairedComparison>,
}

pub fn run(args: &EvalArgs) -> anyhow::Result<PathBuf> {
    let device = vcnode_models::device::resolve(args.device, None)?;
    let model =
        RcModel::load(&args.model, device).with_context(|| format!("loading {}", args.model.display()))?;
    let spec = model.manifest.input;
    let baselines = args
        .baselines
        .iter()
        .map(|p| RcModel::load(p, device).with_context(|| format!("loading {}", p.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for b in &baselines {
        if b.manifest.input != spec {
            bail!(
                "baseline {} has input {:?}, the model {:?}: they must match",
                b.manifest.model_id(),
                b.manifest.input,
                spec
            );
        }
    }
    let pairs = discover(&args.data)?;
    eprintln!(
        "evaluating {} on {} pairs …",
        model.manifest.model_id(),
        pairs.len()
    );
    let prepared = prepare_all(&pairs, &spec)?;

    let mut attention = Vec::new();
    let main_pred = predict_all(&prepared, |x: &Tensor| {
        let (y, a) = model.synthesize_with_attention(x);
        if let Some(a) = a {
            for i in 0..a.size()[0] {
                attention.push(a.get(i));
            }
        }
        y
    });
    let mut scored = vec![score_predictions(
        &model.manifest.model_id(),
        &prepared,
        &main_pred,
    )];
    for b in &baselines {
        let pred = predict_all(&prepared, |x: &Tensor| b.synthesize(x));
        scored.push(score_predictions(&b.manifest.model_id(), &prepared, &pred));
    }
    let le_copy: Vec<Tensor> = prepared.iter().map(|p| p.le.get(0)).collect();
    scored.push(score_predictions("copy-LE", &prepared, &le_copy));

    std::fs::create_dir_all(&args.out)?;
    write_csv(&args.out.join("scores.csv"), &scored)?;
    let mut comparisons = Vec::new();
    for other in &scored[1..] {
        for metric in METRICS {
            let (a, b): (Vec<f64>, Vec<f64>) = scored[0]
                .values(metric)
                .into_iter()
                .zip(other.values(metric))
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .unzip();
            comparisons.push(Comparison {
                baseline: other.label.clone(),
                metric,
                result: compare_paired(&a, &b, 0.05),
            });
        }
    }
    let pictures = report::write_pictures(&args.out, &prepared, &main_pred, &attention, args.pictures)?;
    let report_path = args.out.join("REPORT.md");
    std::fs::write(
        &report_path,
        report::markdown(&model.manifest, &args.data, &scored, &comparisons, &pictures),
    )?;

    if args.record {
        record(&args.model, &scored[0], &args.data)?;
        for (path, s) in args.baselines.iter().zip(&scored[1..]) {
            record(path, s, &args.data)?;
        }
    }
    Ok(report_path)
}

fn record(manifest_path: &Path, scored: &Scored, data: &Path) -> anyhow::Result<()> {
    let mut m = Manifest::load(manifest_path)?;
    let mut metrics = match m.metrics.take() {
        serde_json::Value::Object(o) => o,
        _ => serde_json::Map::new(),
    };
    let mut held = scored.summary_json();
    held["data"] = data.display().to_string().into();
    metrics.insert("held_out".into(), held);
    m.metrics = serde_json::Value::Object(metrics);
    m.save(manifest_path)?;
    Ok(())
}

fn write_csv(path: &Path, scored: &[Scored]) -> anyhow::Result<()> {
    let mut s = String::from("case,model,mse,psnr,ssim,roi_mse,roi_psnr,roi_ssim\n");
    for m in scored {
        for c in &m.cases {
            let r = c.roi().unwrap_or(ImageScores::UNSCORABLE);
            let _ = writeln!(
                s,
                "{},{},{:.6e},{:.4},{:.5},{:.6e},{:.4},{:.5}",
                c.name, m.label, c.whole.mse, c.whole.psnr, c.whole.ssim, r.mse, r.psnr, r.ssim
            );
        }
    }
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vcnode_models::preprocess::Geometry;

    /// A 64×48 breast of 0.2 with two textured 14×14 boxes raised by `amplitude`.
    fn image(amplitude: [f64; 2]) -> Tensor {
        let t = Tensor::full([1, 1, 64, 48], 0.2, (Kind::Float, tch::Device::Cpu));
        for (k, (r0, c0)) in [(8i64, 8i64), (40, 24)].into_iter().enumerate() {
            let texture = Tensor::arange(196, (Kind::Float, tch::Device::Cpu)).view([14, 14]) / 2000.0;
            t.narrow(2, r0, 14)
                .narrow(3, c0, 14)
                .copy_(&(texture + 0.2 + amplitude[k]).view([1, 1, 14, 14]));
        }
        t
    }

    #[test]
    fn a_lesion_counts_as_drawn_only_where_the_image_shows_its_uptake() {
        let pair = PreparedPair {
            name: "case".into(),
            le: image([0.0, 0.0]),
            rc: image([0.4, 0.4]),
            geometry: Geometry {
                src_rows: 64,
                src_cols: 48,
                flipped: false,
                crop: [0, 64, 0, 48],
                content: [64, 48],
            },
            rois: vec![([8, 22, 8, 22], false), ([40, 54, 24, 38], true)],
        };
        let predictions = [
            image([0.3, 0.1]), // the first at 75% of its uptake, the second at 25%
            image([0.4, 0.4]),
        ];
        let scored = score_predictions("m", std::slice::from_ref(&pair), &predictions[..1]);
        let drawn: Vec<_> = scored.lesions().map(|l| l.drawn).collect();
        assert_eq!(drawn, [Some(true), Some(false)]);
        assert_eq!(scored.drawn(), (1, 2));
        let perfect = score_predictions("m", std::slice::from_ref(&pair), &predictions[1..]);
        assert_eq!(perfect.drawn(), (2, 2));
        assert_eq!(
            perfect.lesion_values(|s| s.ssim, |l| l.drawn == Some(true)),
            [1.0, 1.0]
        );
        // Copying the LE shows no uptake at all.
        let copy = score_predictions("copy", std::slice::from_ref(&pair), &[pair.le.get(0)]);
        assert_eq!(copy.drawn(), (0, 2));
        assert_eq!(copy.summary_json()["lesions_drawn"]["drawn"], 0);
    }
}
