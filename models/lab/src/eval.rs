//! `vcnode-lab eval`: MSE, PSNR and SSIM of models against the real RC — on the breast (the resized
//! crop, not the padding), on the lesion boxes and on non-lesion enhancement boxes — per image,
//! averaged per patient, compared between arms by paired tests across patients with a Holm
//! correction, with the spread between training seeds, and a report.
//!
//! An arm is one model configuration, possibly trained with several seeds: the `--model`
//! manifests form the model's arm, the `--baseline` manifests are grouped into arms by model
//! kind and generator configuration, and copying the LE image is always an arm of its own.
//! The paired tests use, per patient, the mean over the patient's images of the mean over the
//! arm's seeds (one number per patient and arm): seeds are replicates of one training
//! procedure, not more cases, and the views of one patient are not independent. How much the
//! seeds differ is reported beside the tests as the mean ± SD across seeds of each seed's mean
//! over patients.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::metrics::{crop, roi_scores, scores, ImageScores, Region, SsimMap, SSIM_WIN_SIZE};
use crate::stats::{compare_paired, group_means, holm, summary, PairedComparison, Summary};
use anyhow::{bail, Context};
use tch::{Kind, Tensor};
use vcnode_models::manifest::Manifest;
use vcnode_models::model::RcModel;

use super::dataset::{discover, prepare_all, PairPaths, PreparedPair};
use super::report;

/// What an evaluation set is to the models it scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Used for any choice (of epochs, seeds, variants, hyper-parameters) or for training:
    /// its differences carry that selection.
    Development,
    /// Never used for any choice: its numbers carry no selection.
    HeldOut,
}

impl Role {
    /// The name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::Development => "development",
            Role::HeldOut => "held-out",
        }
    }

    /// The key under `metrics` in a manifest.
    pub fn key(self) -> &'static str {
        match self {
            Role::Development => "development",
            Role::HeldOut => "held_out",
        }
    }
}

/// Scores of one case.
#[derive(Debug, Clone)]
pub struct CaseScores {
    pub name: String,
    /// The patient the image belongs to (the image's own name when the data does not say).
    pub patient: String,
    pub whole: ImageScores,
    pub lesions: Vec<LesionScores>,
    /// Non-lesion enhancement boxes ([`enhancement_boxes`]).
    pub enhancing: Vec<ImageScores>,
    /// Per non-enhancing mass (cyst, fibroadenoma): (rise of the prediction, rise of the real
    /// RC) above the ring around its box ([`rise`], windowed RC units). The real RC does not
    /// rise there; a model that draws uptake does.
    pub non_enhancing: Vec<(f64, f64)>,
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

/// Most non-lesion enhancement boxes per image.
pub const ENHANCEMENT_BOXES: usize = 3;
/// How far above the breast's typical tile a tile's mean must be, in robust SDs of the tile
/// means (1.4826 × their median absolute deviation), to count as enhancing.
pub const ENHANCEMENT_SDS: f64 = 3.0;

/// Non-lesion enhancement ROIs: where the real RC enhances outside the lesions (background
/// parenchymal enhancement, vessels), as the paper scores beside the lesions. Chosen from the
/// real RC alone, never from a prediction, so every model is scored on the same boxes:
///
/// 1. Tile the breast crop `content` from its top-left corner into squares of side
///    max(11, ⌊min(rows, cols) / 16⌋) pixels (11 = the SSIM window); partial tiles at the edges
///    are dropped.
/// 2. Drop tiles that overlap a lesion box grown by one tile side on every side, so that no
///    lesion or its halo counts.
/// 3. The breast's typical level is the median of all tiles' mean RC, its spread 1.4826 × the
///    median absolute deviation of those means. A tile enhances when its mean exceeds the median
///    by more than [`ENHANCEMENT_SDS`] spreads (tiles outside the skin line, darker, never do).
/// 4. Keep the [`ENHANCEMENT_BOXES`] enhancing tiles with the highest mean (ties: the tile
///    nearer the top, then the left).
pub fn enhancement_boxes(truth: &[f32], cols: usize, content: Region, lesions: &[Region]) -> Vec<Region> {
    let side = (content.rows().min(content.cols()) / 16).max(SSIM_WIN_SIZE);
    let mut tiles: Vec<(Region, f64)> = Vec::new();
    let mut row0 = content.row0;
    while row0 + side <= content.row1 {
        let mut col0 = content.col0;
        while col0 + side <= content.col1 {
            let tile = Region {
                row0,
                col0,
                row1: row0 + side,
                col1: col0 + side,
            };
            let v = crop(truth, cols, tile);
            if !v.is_empty() {
                tiles.push((
                    tile,
                    v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64,
                ));
            }
            col0 += side;
        }
        row0 += side;
    }
    if tiles.len() < 2 {
        return Vec::new();
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    let level = median(tiles.iter().map(|t| t.1).collect());
    let spread = 1.4826 * median(tiles.iter().map(|t| (t.1 - level).abs()).collect());
    let near_lesion = |t: &Region| {
        lesions.iter().any(|l| {
            t.row0 < l.row1 + side
                && l.row0 < t.row1 + side
                && t.col0 < l.col1 + side
                && l.col0 < t.col1 + side
        })
    };
    let mut enhancing: Vec<(Region, f64)> = tiles
        .into_iter()
        .filter(|(t, mean)| *mean > level + ENHANCEMENT_SDS * spread && !near_lesion(t))
        .collect();
    // Tiles were made top to bottom, left to right: a stable sort keeps that order among ties.
    enhancing.sort_by(|a, b| b.1.total_cmp(&a.1));
    enhancing
        .into_iter()
        .take(ENHANCEMENT_BOXES)
        .map(|(t, _)| t)
        .collect()
}

/// Mean of the finite values; `NaN` if there are none.
fn finite_mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

/// The mean scores of a set of boxes; `None` without boxes.
fn mean_scores<'a>(boxes: impl Iterator<Item = &'a ImageScores> + Clone) -> Option<ImageScores> {
    boxes.clone().next()?;
    Some(ImageScores {
        mse: finite_mean(boxes.clone().map(|s| s.mse)),
        psnr: finite_mean(boxes.clone().map(|s| s.psnr)),
        ssim: finite_mean(boxes.map(|s| s.ssim)),
    })
}

impl CaseScores {
    /// The mean over the case's lesion boxes; None without lesions.
    pub fn roi(&self) -> Option<ImageScores> {
        mean_scores(self.lesions.iter().map(|l| &l.scores))
    }

    /// The mean over the case's non-lesion enhancement boxes; None without any.
    pub fn nonlesion(&self) -> Option<ImageScores> {
        mean_scores(self.enhancing.iter())
    }
}

/// One model's (one seed's) scores over a data set.
pub struct Scored {
    pub label: String,
    /// The training seed of the weights, if the manifest records it.
    pub seed: Option<i64>,
    pub cases: Vec<CaseScores>,
}

/// The metrics the summaries and tests use, by name: whole breast, lesion ROIs (`roi_`) and
/// non-lesion enhancement ROIs (`nonlesion_`), each MSE, PSNR and SSIM.
pub const METRICS: [&str; 9] = [
    "mse",
    "psnr",
    "ssim",
    "roi_mse",
    "roi_psnr",
    "roi_ssim",
    "nonlesion_mse",
    "nonlesion_psnr",
    "nonlesion_ssim",
];

/// The arm that copies the LE input: the floor every model must clear.
pub const COPY_LE: &str = "copy-LE";

/// Significance level of the Shapiro–Wilk choice between the t-test and Wilcoxon.
pub const ALPHA: f64 = 0.05;

fn metric_of(c: &CaseScores, metric: &str) -> f64 {
    let pick = |s: Option<ImageScores>, what: &str| {
        s.map_or(f64::NAN, |s| match what {
            "mse" => s.mse,
            "psnr" => s.psnr,
            "ssim" => s.ssim,
            _ => f64::NAN,
        })
    };
    match metric.split_once('_') {
        None => pick(Some(c.whole), metric),
        Some(("roi", m)) => pick(c.roi(), m),
        Some(("nonlesion", m)) => pick(c.nonlesion(), m),
        _ => f64::NAN,
    }
}

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

    /// (prediction's rise, real RC's rise) in every non-enhancing mass box.
    pub fn non_enhancing_rises(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.cases.iter().flat_map(|c| c.non_enhancing.iter().copied())
    }

    /// A metric per case (see [`METRICS`]); `NaN` where the case has no such box.
    pub fn values(&self, metric: &str) -> Vec<f64> {
        self.cases.iter().map(|c| metric_of(c, metric)).collect()
    }

    /// mean ± sd per metric, over the cases where the metric is defined.
    pub fn summary_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("cases".into(), self.cases.len().into());
        for metric in METRICS {
            let v: Vec<f64> = self
                .values(metric)
                .into_iter()
                .filter(|x| x.is_finite())
                .collect();
            m.insert(metric.into(), summary_value(summary(&v)));
        }
        let (drawn, judged) = self.drawn();
        m.insert(
            "lesions_drawn".into(),
            serde_json::json!({ "drawn": drawn, "of": judged, "share": DRAWN_SHARE }),
        );
        serde_json::Value::Object(m)
    }
}

fn summary_value(s: Summary) -> serde_json::Value {
    let num = |v: f64| {
        if v.is_finite() {
            v.into()
        } else {
            serde_json::Value::Null
        }
    };
    serde_json::json!({ "mean": num(s.mean), "sd": num(s.sd), "n": s.n })
}

/// One model configuration: its runs (one per training seed) on the same cases.
pub struct Arm {
    pub label: String,
    /// The model kind (`scpa-unet`, `pix2pix`, …, or `copy-LE`): how `--compare` names the arm.
    pub kind: String,
    pub runs: Vec<Scored>,
}

impl Arm {
    /// A metric per case, averaged over the arm's seeds.
    pub fn case_values(&self, metric: &str) -> Vec<f64> {
        let per_run: Vec<Vec<f64>> = self.runs.iter().map(|r| r.values(metric)).collect();
        (0..self.runs[0].cases.len())
            .map(|i| finite_mean(per_run.iter().map(|v| v[i])))
            .collect()
    }

    /// The patients in order of first appearance, with the metric averaged over their images
    /// (and over the arm's seeds).
    pub fn patient_values(&self, metric: &str) -> Vec<(String, f64)> {
        patient_means(&self.runs[0].cases, &self.case_values(metric))
    }

    /// Each seed's mean over patients of the metric (per-patient means first): what the spread
    /// between seeds is taken over.
    pub fn seed_means(&self, metric: &str) -> Vec<f64> {
        self.runs
            .iter()
            .map(|r| {
                finite_mean(
                    patient_means(&r.cases, &r.values(metric))
                        .into_iter()
                        .map(|(_, v)| v),
                )
            })
            .collect()
    }

    /// The lesion boxes of all seeds.
    pub fn lesion_values(
        &self,
        metric: fn(&ImageScores) -> f64,
        keep: fn(&LesionScores) -> bool,
    ) -> Vec<f64> {
        self.runs
            .iter()
            .flat_map(|r| r.lesion_values(metric, keep))
            .collect()
    }

    /// (drawn, judged) summed over the seeds.
    pub fn drawn(&self) -> (usize, usize) {
        self.runs
            .iter()
            .map(Scored::drawn)
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    }
}

/// Per-patient means of per-case `values` (patients in order of first appearance).
pub fn patient_means(cases: &[CaseScores], values: &[f64]) -> Vec<(String, f64)> {
    let groups: Vec<&str> = cases.iter().map(|c| c.patient.as_str()).collect();
    group_means(values, &groups)
        .into_iter()
        .map(|(p, v)| (p.to_string(), v))
        .collect()
}

fn tensor_vec(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).expect("a float tensor")
}

/// Scores predictions against the pairs' targets. `predict` maps a batch [B, 1, H, W] of
/// normalized LE to normalized RC; both are compared in [0, 1] (the windowed RC scale).
pub fn score_pairs(pairs: &[PreparedPair], predict: impl Fn(&Tensor) -> Tensor) -> anyhow::Result<Scored> {
    let predictions = predict_all(pairs, predict);
    Ok(score_predictions("", None, pairs, &predictions))
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

/// Scores one prediction per pair. Whole-image scores are those of the breast crop (padding
/// excluded); every box's SSIM is the mean of that crop's SSIM map inside the box.
pub fn score_predictions(
    label: &str,
    seed: Option<i64>,
    pairs: &[PreparedPair],
    predictions: &[Tensor],
) -> Scored {
    let cases = pairs
        .iter()
        .zip(predictions)
        .map(|(pair, pred)| {
            let cols = pair.le.size()[3] as usize;
            let truth = tensor_vec(&pair.rc);
            let pred = tensor_vec(pred);
            let content = Region {
                row0: 0,
                col0: 0,
                row1: pair.geometry.content[0] as usize,
                col1: pair.geometry.content[1] as usize,
            };
            let (crows, ccols) = (content.rows(), content.cols());
            let (p, t) = (crop(&pred, cols, content), crop(&truth, cols, content));
            let whole = scores(&p, &t, crows, ccols, 1.0);
            let map = SsimMap::new(&p, &t, crows, ccols, 1.0);
            // Boxes in content coordinates (the content starts at the origin), clipped to it.
            let clip = |r: Region| Region {
                row0: r.row0,
                col0: r.col0,
                row1: r.row1.min(crows),
                col1: r.col1.min(ccols),
            };
            let box_scores = |r: Region| roi_scores(&p, &t, crows, ccols, map.as_ref(), clip(r), 1.0);
            let lesion_regions: Vec<(Region, bool)> = pair
                .rois
                .iter()
                .map(|&([row0, row1, col0, col1], hidden)| {
                    (
                        Region {
                            row0,
                            col0,
                            row1,
                            col1,
                        },
                        hidden,
                    )
                })
                .collect();
            let lesions = lesion_regions
                .iter()
                .map(|&(region, hidden)| {
                    let drawn = match (
                        rise(&truth, cols, region, content),
                        rise(&pred, cols, region, content),
                    ) {
                        (Some(real), Some(shown)) if real > 0.0 => Some(shown >= DRAWN_SHARE * real),
                        _ => None,
                    };
                    LesionScores {
                        scores: box_scores(region),
                        hidden,
                        drawn,
                    }
                })
                .collect();
            let lesion_boxes: Vec<Region> = lesion_regions.iter().map(|(r, _)| *r).collect();
            let enhancing = enhancement_boxes(&truth, cols, content, &lesion_boxes)
                .into_iter()
                .map(box_scores)
                .collect();
            let non_enhancing = pair
                .non_enhancing
                .iter()
                .filter_map(|&[row0, row1, col0, col1]| {
                    let region = Region {
                        row0,
                        col0,
                        row1,
                        col1,
                    };
                    Some((
                        rise(&pred, cols, region, content)?,
                        rise(&truth, cols, region, content)?,
                    ))
                })
                .collect();
            CaseScores {
                name: pair.name.clone(),
                patient: pair.patient.clone().unwrap_or_else(|| pair.name.clone()),
                whole,
                lesions,
                enhancing,
                non_enhancing,
            }
        })
        .collect();
    Scored {
        label: label.to_string(),
        seed,
        cases,
    }
}

/// `vcnode-lab eval` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// The model's manifest (.json); repeat it for the same configuration trained with other
    /// seeds (one arm: the tests use the mean over seeds, the report the spread between them).
    #[arg(long = "model", required = true)]
    pub models: Vec<PathBuf>,
    /// Baseline manifests, repeatable; manifests of the same model kind and generator
    /// configuration are seeds of one arm. "Copy the LE image" is always included.
    #[arg(long = "baseline")]
    pub baselines: Vec<PathBuf>,
    /// pairs.csv (columns le,rc[,rois][,patient]), a folder of *_LE.dcm/*_RC.dcm pairs, or a
    /// CDD-CESM folder (ROIs from its hand-drawn segmentation CSV).
    #[arg(long)]
    pub data: PathBuf,
    /// What the data is to these models: `development` if it was used for any choice (or
    /// training), `held-out` if never. Held-out is refused when a manifest records the data's
    /// patients or path among its training or validation data, or as a development set.
    #[arg(long, value_enum)]
    pub role: Role,
    #[arg(long)]
    pub out: PathBuf,
    /// How many cases get a picture grid.
    #[arg(long, default_value_t = 6)]
    pub pictures: usize,
    #[arg(long, default_value = "auto")]
    pub device: vcnode_models::DeviceRequest,
    /// Write the summary into the manifests, under `metrics.held_out` or
    /// `metrics.development` by --role.
    #[arg(long)]
    pub record: bool,
    /// A further paired comparison between two arms named by model kind, e.g.
    /// `scpa-cgan:pix2pix` (the paper's cGAN against its own baseline); repeatable. The
    /// `--model` arm is compared with every other arm anyway; this scores no model twice.
    #[arg(long = "compare", value_name = "KIND:KIND", value_parser = parse_arm_pair)]
    pub compare: Vec<(String, String)>,
}

fn parse_arm_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() && a != b => Ok((a.into(), b.into())),
        _ => Err(format!(
            "{s:?}: expected two different model kinds, e.g. scpa-cgan:pix2pix"
        )),
    }
}

/// One comparison row: one arm (the model's, or the first of a `--compare` pair) vs another
/// arm on a metric, across patients.
pub struct Comparison {
    pub model: String,
    pub baseline: String,
    pub metric: &'static str,
    /// Patients with the metric defined in both arms.
    pub patients: usize,
    pub result: Option<PairedComparison>,
    /// The test's p-value after Holm's correction across the metrics of this comparison (`NaN`
    /// when the test could not run).
    pub p_holm: f64,
}

/// What the paired tests say of the model against one baseline: the metrics on which it is
/// significantly better or worse (Holm-corrected p below [`ALPHA`]; lower is better for MSE,
/// higher for PSNR and SSIM), and those without a significant difference or a test.
#[derive(Debug, PartialEq)]
pub struct Verdict {
    pub model: String,
    pub baseline: String,
    pub better: Vec<&'static str>,
    pub worse: Vec<&'static str>,
    pub undecided: Vec<&'static str>,
}

impl Verdict {
    /// Beats the baseline: significantly better on at least one metric and worse on none.
    pub fn beats(&self) -> bool {
        !self.better.is_empty() && self.worse.is_empty()
    }
}

/// One [`Verdict`] per pair of arms, in the order of `comparisons`.
pub fn verdicts(comparisons: &[Comparison]) -> Vec<Verdict> {
    let mut out: Vec<Verdict> = Vec::new();
    for c in comparisons {
        if out
            .last()
            .is_none_or(|v| v.model != c.model || v.baseline != c.baseline)
        {
            out.push(Verdict {
                model: c.model.clone(),
                baseline: c.baseline.clone(),
                better: Vec::new(),
                worse: Vec::new(),
                undecided: Vec::new(),
            });
        }
        let v = out.last_mut().expect("just pushed");
        let lower_is_better = c.metric.ends_with("mse");
        match &c.result {
            Some(r) if c.p_holm < ALPHA && r.mean_difference != 0.0 => {
                if (r.mean_difference < 0.0) == lower_is_better {
                    v.better.push(c.metric)
                } else {
                    v.worse.push(c.metric)
                }
            }
            _ => v.undecided.push(c.metric),
        }
    }
    out
}

/// Paired tests of `model` against `other` on every metric, across patients (per-patient means
/// over images and seeds), Holm-corrected across the metrics.
pub fn compare_arms(model: &Arm, other: &Arm) -> Vec<Comparison> {
    let mut rows: Vec<Comparison> = METRICS
        .iter()
        .map(|&metric| {
            let (a, b): (Vec<f64>, Vec<f64>) = model
                .patient_values(metric)
                .into_iter()
                .zip(other.patient_values(metric))
                .map(|((pa, x), (pb, y))| {
                    // Both arms scored the same prepared pairs, in the same order.
                    debug_assert_eq!(pa, pb);
                    (x, y)
                })
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .unzip();
            Comparison {
                model: model.label.clone(),
                baseline: other.label.clone(),
                metric,
                patients: a.len(),
                result: compare_paired(&a, &b, ALPHA),
                p_holm: f64::NAN,
            }
        })
        .collect();
    let p: Vec<f64> = rows
        .iter()
        .map(|c| c.result.map_or(f64::NAN, |r| r.test.p))
        .collect();
    for (row, adjusted) in rows.iter_mut().zip(holm(&p)) {
        row.p_holm = adjusted;
    }
    rows
}

/// Why the data cannot be called held-out for this manifest: its patients or its path are among
/// those the weights were trained or chosen on, or an earlier evaluation recorded it as
/// development data. Empty if nothing says so.
pub fn development_reasons(manifest: &Manifest, data_path: &str, patients: &[&str]) -> Vec<String> {
    let id = manifest.model_id();
    let mut reasons = Vec::new();
    let overlap = |known: &[&str]| patients.iter().filter(|p| known.contains(p)).count();
    if let Some(t) = &manifest.training {
        if t.development_paths().contains(&data_path) {
            reasons.push(format!("{id} was trained on this data source"));
        }
        let n = overlap(&t.development_patients());
        if n > 0 {
            reasons.push(format!(
                "{n} of its patients trained or validated {id} (validation chose epochs and seeds)"
            ));
        }
    }
    let dev = &manifest.metrics[Role::Development.key()];
    let recorded: Vec<&str> = dev["patients"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    if dev["data"].as_str() == Some(data_path) || overlap(&recorded) > 0 {
        reasons.push(format!("{id}'s manifest records this data as a development set"));
    }
    reasons
}

/// Groups manifests into arms: same model kind and generator configuration → one arm.
fn group_arms(models: Vec<(PathBuf, RcModel)>) -> Vec<Vec<(PathBuf, RcModel)>> {
    let mut arms: Vec<Vec<(PathBuf, RcModel)>> = Vec::new();
    for m in models {
        let same = |a: &Vec<(PathBuf, RcModel)>| {
            a[0].1.manifest.model == m.1.manifest.model && a[0].1.manifest.generator == m.1.manifest.generator
        };
        match arms.iter_mut().find(|a| same(a)) {
            Some(arm) => arm.push(m),
            None => arms.push(vec![m]),
        }
    }
    arms
}

fn arm_label(members: &[(PathBuf, RcModel)]) -> String {
    match members {
        [(_, only)] => only.manifest.model_id(),
        many => format!("{} ×{} seeds", many[0].1.manifest.model.name(), many.len()),
    }
}

fn load(path: &Path, device: tch::Device) -> anyhow::Result<(PathBuf, RcModel)> {
    let model = RcModel::load(path, device).with_context(|| format!("loading {}", path.display()))?;
    Ok((path.to_path_buf(), model))
}

pub fn run(args: &EvalArgs) -> anyhow::Result<PathBuf> {
    let device = vcnode_models::device::resolve(args.device, None)?;
    let models = args
        .models
        .iter()
        .map(|p| load(p, device))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let baselines = args
        .baselines
        .iter()
        .map(|p| load(p, device))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let spec = models[0].1.manifest.input;
    let main_kind = (&models[0].1.manifest.model, &models[0].1.manifest.generator);
    for (path, m) in &models {
        if (&m.manifest.model, &m.manifest.generator) != main_kind {
            bail!(
                "--model {} is a different configuration from the first --model: several --model \
                 manifests must be seeds of one configuration (compare others with --baseline)",
                path.display()
            );
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (path, m) in models.iter().chain(&baselines) {
        if m.manifest.input != spec {
            bail!(
                "{} has input {:?}, the model {:?}: they must match",
                path.display(),
                m.manifest.input,
                spec
            );
        }
        if !seen.insert(m.manifest.weights.sha256.clone()) {
            bail!("{} holds weights already given: each seed once", path.display());
        }
    }

    let kind_of = |m: &RcModel| m.manifest.model.name().to_string();
    let known: Vec<String> = models
        .iter()
        .chain(&baselines)
        .map(|(_, m)| kind_of(m))
        .chain([COPY_LE.to_string()])
        .collect();
    for (a, b) in &args.compare {
        for k in [a, b] {
            if !known.contains(k) {
                bail!(
                    "--compare {a}:{b}: no arm of kind {k} is evaluated (arms: {})",
                    known.join(", ")
                );
            }
        }
    }

    let pairs = discover(&args.data)?;
    let data_path = super::train::absolute(&args.data);
    let patient_ids = patients_of(&pairs);
    if args.role == Role::HeldOut {
        let ids: Vec<&str> = patient_ids.iter().map(String::as_str).collect();
        let reasons: Vec<String> = models
            .iter()
            .chain(&baselines)
            .flat_map(|(_, m)| development_reasons(&m.manifest, &data_path, &ids))
            .collect();
        if !reasons.is_empty() {
            bail!(
                "{} is not held-out: {}. Evaluate it with --role development",
                args.data.display(),
                reasons.join("; ")
            );
        }
    }
    eprintln!(
        "evaluating {} on {} pairs ({}) …",
        models[0].1.manifest.model_id(),
        pairs.len(),
        args.role.name()
    );
    let prepared = prepare_all(&pairs, &spec)?;

    // The first seed of the model: its predictions and attention make the pictures.
    let mut attention = Vec::new();
    let first_pred = predict_all(&prepared, |x: &Tensor| {
        let (y, a) = models[0].1.synthesize_with_attention(x);
        if let Some(a) = a {
            for i in 0..a.size()[0] {
                attention.push(a.get(i));
            }
        }
        y
    });
    let seed_of = |m: &RcModel| m.manifest.training.as_ref().and_then(|t| t.seed);
    let score_model = |m: &RcModel| {
        let pred = predict_all(&prepared, |x: &Tensor| m.synthesize(x));
        score_predictions(&m.manifest.model_id(), seed_of(m), &prepared, &pred)
    };
    let mut model_runs = vec![score_predictions(
        &models[0].1.manifest.model_id(),
        seed_of(&models[0].1),
        &prepared,
        &first_pred,
    )];
    model_runs.extend(models[1..].iter().map(|(_, m)| score_model(m)));
    let mut arms = vec![Arm {
        label: arm_label(&models),
        kind: kind_of(&models[0].1),
        runs: model_runs,
    }];
    let manifests: Vec<(PathBuf, Manifest)> = models
        .iter()
        .chain(&baselines)
        .map(|(p, m)| (p.clone(), m.manifest.clone()))
        .collect();
    for members in group_arms(baselines) {
        arms.push(Arm {
            label: arm_label(&members),
            kind: kind_of(&members[0].1),
            runs: members.iter().map(|(_, m)| score_model(m)).collect(),
        });
    }
    let le_copy: Vec<Tensor> = prepared.iter().map(|p| p.le.get(0)).collect();
    arms.push(Arm {
        label: COPY_LE.into(),
        kind: COPY_LE.into(),
        runs: vec![score_predictions(COPY_LE, None, &prepared, &le_copy)],
    });

    std::fs::create_dir_all(&args.out)?;
    write_csv(&args.out.join("scores.csv"), &arms)?;
    let arm = |kind: &str| arms.iter().find(|a| a.kind == kind).expect("checked above");
    let comparisons: Vec<Comparison> = arms[1..]
        .iter()
        .flat_map(|other| compare_arms(&arms[0], other))
        .chain(
            args.compare
                .iter()
                .flat_map(|(a, b)| compare_arms(arm(a), arm(b))),
        )
        .collect();
    let evaluation = Evaluation {
        model: &models[0].1.manifest,
        data: &args.data,
        data_path: &data_path,
        role: args.role,
        patients_known: pairs.iter().all(|p| p.patient.is_some()),
        arms: &arms,
        comparisons: &comparisons,
    };
    // The out-of-distribution guard of each model with a profile: how much of this set it flags.
    let guarded: Vec<&Manifest> = manifests.iter().map(|(_, m)| m).collect();
    let guard = super::calibrate::guard_rates(&guarded, &prepared, &spec)?;
    let mut json = evaluation.json();
    json["ood_guard"] = serde_json::to_value(&guard)?;
    std::fs::write(
        args.out.join("eval.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    let pictures = report::write_pictures(&args.out, &prepared, &first_pred, &attention, args.pictures)?;
    let report_path = args.out.join("REPORT.md");
    let markdown = report::markdown(&evaluation, &pictures)
        + &report::training_section(&guarded)
        + &report::ood_guard_section(&guard, args.role);
    std::fs::write(&report_path, markdown)?;

    if args.record {
        for (path, manifest) in &manifests {
            let id = manifest.model_id();
            if let Some(scored) = arms.iter().flat_map(|a| &a.runs).find(|r| r.label == id) {
                record(path, scored, args.role, &data_path, &patient_ids)?;
            }
        }
    }
    Ok(report_path)
}

/// The distinct known patients of `pairs`, in order.
fn patients_of(pairs: &[PairPaths]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in pairs.iter().filter_map(|p| p.patient.as_ref()) {
        if !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}

/// Everything one evaluation found, for the report and `eval.json`.
pub struct Evaluation<'a> {
    pub model: &'a Manifest,
    /// The data as given on the command line.
    pub data: &'a Path,
    pub data_path: &'a str,
    pub role: Role,
    /// Whether every pair named its patient (else an unnamed image counts as its own patient).
    pub patients_known: bool,
    /// The model's arm first, copy-LE last.
    pub arms: &'a [Arm],
    pub comparisons: &'a [Comparison],
}

impl Evaluation<'_> {
    pub fn cases(&self) -> usize {
        self.arms[0].runs[0].cases.len()
    }

    pub fn patients(&self) -> usize {
        self.arms[0].patient_values("mse").len()
    }

    /// `eval.json`: role, data, per arm its runs (seeds), the per-patient summaries and the
    /// spread between seeds of every metric, and the comparisons with raw and Holm p-values.
    pub fn json(&self) -> serde_json::Value {
        let num = |v: f64| {
            if v.is_finite() {
                v.into()
            } else {
                serde_json::Value::Null
            }
        };
        let arms: Vec<serde_json::Value> = self
            .arms
            .iter()
            .map(|arm| {
                let mut per_patient = serde_json::Map::new();
                let mut seeds = serde_json::Map::new();
                for metric in METRICS {
                    let v: Vec<f64> = arm
                        .patient_values(metric)
                        .into_iter()
                        .map(|(_, v)| v)
                        .filter(|v| v.is_finite())
                        .collect();
                    per_patient.insert(metric.into(), summary_value(summary(&v)));
                    let s: Vec<f64> = arm
                        .seed_means(metric)
                        .into_iter()
                        .filter(|v| v.is_finite())
                        .collect();
                    seeds.insert(metric.into(), summary_value(summary(&s)));
                }
                serde_json::json!({
                    "label": arm.label,
                    "runs": arm.runs.iter().map(|r| serde_json::json!({
                        "model_id": r.label,
                        "seed": r.seed,
                        "summary": r.summary_json(),
                    })).collect::<Vec<_>>(),
                    "per_patient": per_patient,
                    "seed_spread": seeds,
                })
            })
            .collect();
        let comparisons: Vec<serde_json::Value> = self
            .comparisons
            .iter()
            .map(|c| {
                let r = c.result.as_ref();
                serde_json::json!({
                    "model": c.model,
                    "baseline": c.baseline,
                    "metric": c.metric,
                    "patients": c.patients,
                    "mean_difference": r.map_or(serde_json::Value::Null, |r| num(r.mean_difference)),
                    "normality_p": r.and_then(|r| r.normality).map_or(serde_json::Value::Null, |n| num(n.p)),
                    "test": r.map(|r| r.test.test),
                    "statistic": r.map_or(serde_json::Value::Null, |r| num(r.test.statistic)),
                    "p": r.map_or(serde_json::Value::Null, |r| num(r.test.p)),
                    "p_holm": num(c.p_holm),
                })
            })
            .collect();
        serde_json::json!({
            "model": self.model.model_id(),
            "role": self.role.name(),
            "data": self.data_path,
            "cases": self.cases(),
            "patients": self.patients(),
            "patients_known": self.patients_known,
            "metrics": METRICS,
            "alpha": ALPHA,
            "tests": "per patient (mean over the patient's images and the arm's seeds); Shapiro–Wilk \
                      p >= alpha: paired t-test, else Wilcoxon signed-rank; Holm across the metrics \
                      of each comparison",
            "enhancement_boxes": { "per_image": ENHANCEMENT_BOXES, "sds": ENHANCEMENT_SDS },
            "arms": arms,
            "comparisons": comparisons,
        })
    }
}

fn record(
    manifest_path: &Path,
    scored: &Scored,
    role: Role,
    data_path: &str,
    patients: &[String],
) -> anyhow::Result<()> {
    let mut m = Manifest::load(manifest_path)?;
    let mut metrics = match m.metrics.take() {
        serde_json::Value::Object(o) => o,
        _ => serde_json::Map::new(),
    };
    let mut entry = scored.summary_json();
    entry["data"] = data_path.into();
    entry["role"] = role.name().into();
    entry["patients"] = patients.into();
    metrics.insert(role.key().into(), entry);
    m.metrics = serde_json::Value::Object(metrics);
    m.save(manifest_path)?;
    Ok(())
}

fn write_csv(path: &Path, arms: &[Arm]) -> anyhow::Result<()> {
    let mut s = format!("case,patient,model,seed,{}\n", METRICS.join(","));
    for arm in arms {
        for run in &arm.runs {
            for c in &run.cases {
                let _ = write!(
                    s,
                    "{},{},{},{}",
                    c.name,
                    c.patient,
                    run.label,
                    run.seed.map(|v| v.to_string()).unwrap_or_default()
                );
                for metric in METRICS {
                    let v = metric_of(c, metric);
                    let _ = if metric.ends_with("mse") {
                        write!(s, ",{v:.6e}")
                    } else if metric.ends_with("psnr") {
                        write!(s, ",{v:.4}")
                    } else {
                        write!(s, ",{v:.5}")
                    };
                }
                s.push('\n');
            }
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
            non_enhancing: Vec::new(),
            patient: Some("P1".into()),
        };
        let predictions = [
            image([0.3, 0.1]), // the first at 75% of its uptake, the second at 25%
            image([0.4, 0.4]),
        ];
        let scored = score_predictions("m", None, std::slice::from_ref(&pair), &predictions[..1]);
        let drawn: Vec<_> = scored.lesions().map(|l| l.drawn).collect();
        assert_eq!(drawn, [Some(true), Some(false)]);
        assert_eq!(scored.drawn(), (1, 2));
        let perfect = score_predictions("m", None, std::slice::from_ref(&pair), &predictions[1..]);
        assert_eq!(perfect.drawn(), (2, 2));
        assert_eq!(
            perfect.lesion_values(|s| s.ssim, |l| l.drawn == Some(true)),
            [1.0, 1.0]
        );
        // Copying the LE shows no uptake at all.
        let copy = score_predictions("copy", None, std::slice::from_ref(&pair), &[pair.le.get(0)]);
        assert_eq!(copy.drawn(), (0, 2));
        assert_eq!(copy.summary_json()["lesions_drawn"]["drawn"], 0);
    }

    /// A `rows × cols` target: breast at 0.3 right of column 10 (0.05 outside), a lesion at
    /// 0.9, a brighter spot beside it at 0.95, and a 33×33 patch of enhancement at 0.6.
    fn target(rows: usize, cols: usize) -> Vec<f32> {
        let mut t = vec![0.3_f32; rows * cols];
        let mut fill = |r0: usize, r1: usize, c0: usize, c1: usize, v: f32| {
            for r in r0..r1 {
                t[r * cols + c0..r * cols + c1].fill(v);
            }
        };
        fill(0, rows, 0, 10, 0.05);
        fill(11, 22, 11, 22, 0.9);
        fill(22, 33, 22, 33, 0.95);
        fill(77, 110, 55, 88, 0.6);
        t
    }

    #[test]
    fn non_lesion_enhancement_boxes_follow_the_documented_rule() {
        let (rows, cols) = (128, 96);
        let truth = target(rows, cols);
        let content = Region::new(0, 120, 0, 96);
        let lesion = Region::new(11, 22, 11, 22);
        // Tiles of 11 (96 / 16 < 11); the spot next to the lesion is brighter than the patch but
        // within one tile of the lesion; the nine tiles inside the patch tie at 0.6 and the first
        // three in reading order are kept.
        let boxes = enhancement_boxes(&truth, cols, content, &[lesion]);
        assert_eq!(
            boxes,
            [
                Region::new(77, 88, 55, 66),
                Region::new(77, 88, 66, 77),
                Region::new(77, 88, 77, 88)
            ]
        );
        // Without the lesion box, its own tile and the spot beside it are the brightest.
        let unguarded = enhancement_boxes(&truth, cols, content, &[]);
        assert_eq!(unguarded[0], Region::new(22, 33, 22, 33));
        assert_eq!(unguarded[1], Region::new(11, 22, 11, 22));
        // A flat breast has nothing that enhances.
        assert!(enhancement_boxes(&vec![0.3; rows * cols], cols, content, &[]).is_empty());
    }

    #[test]
    fn cases_are_scored_on_enhancement_boxes_of_the_target_only() {
        let (rows, cols) = (128usize, 96usize);
        let truth = target(rows, cols);
        let as_tensor = |v: &[f32]| Tensor::from_slice(v).view([1, 1, rows as i64, cols as i64]);
        let pair = PreparedPair {
            name: "case".into(),
            le: as_tensor(&vec![0.3; rows * cols]),
            rc: as_tensor(&truth),
            geometry: Geometry {
                src_rows: rows,
                src_cols: cols,
                flipped: false,
                crop: [0, rows, 0, cols],
                content: [120, 96],
            },
            rois: vec![([11, 22, 11, 22], false)],
            non_enhancing: Vec::new(),
            patient: None,
        };
        let perfect = score_predictions("m", None, std::slice::from_ref(&pair), &[pair.rc.get(0)]);
        let case = &perfect.cases[0];
        assert_eq!(
            case.patient, "case",
            "an image without a patient is its own patient"
        );
        assert_eq!(case.enhancing.len(), 3);
        assert_eq!(perfect.values("nonlesion_ssim"), [1.0]);
        assert_eq!(perfect.values("nonlesion_mse"), [0.0]);
        // A prediction that lights up elsewhere is still judged on the target's boxes.
        let mut elsewhere = truth.clone();
        for r in 77..110 {
            elsewhere[r * cols + 55..r * cols + 88].fill(0.3);
        }
        for r in 40..60 {
            elsewhere[r * cols + 40..r * cols + 60].fill(0.9);
        }
        let missed = score_predictions(
            "m",
            None,
            std::slice::from_ref(&pair),
            &[as_tensor(&elsewhere).get(0)],
        );
        assert_eq!(missed.cases[0].enhancing.len(), 3);
        let mse = missed.values("nonlesion_mse")[0];
        assert!(
            (mse - 0.09).abs() < 1e-6,
            "the patch's (0.6 - 0.3)² = 0.09, got {mse}"
        );
        assert!(missed.values("nonlesion_ssim")[0] < 0.9);
        assert_eq!(missed.values("roi_mse"), [0.0], "the lesion itself is right");
    }

    /// Cases of `patients` × `views` with the given whole-image PSNR and SSIM.
    fn scored(label: &str, seed: i64, views: usize, psnr: &[f64]) -> Scored {
        let cases = psnr
            .iter()
            .enumerate()
            .map(|(i, &p)| CaseScores {
                name: format!("view{}", i % views),
                patient: format!("P{}", i / views),
                whole: ImageScores {
                    mse: 10f64.powf(-p / 10.0),
                    psnr: p,
                    ssim: 0.5 + p / 100.0,
                },
                lesions: Vec::new(),
                enhancing: Vec::new(),
                non_enhancing: Vec::new(),
            })
            .collect();
        Scored {
            label: label.into(),
            seed: Some(seed),
            cases,
        }
    }

    #[test]
    fn arms_are_compared_on_patient_means_over_seeds_with_holm_across_metrics() {
        // 6 patients x 2 views; the model's two seeds differ by a constant 0.2 dB.
        let base: Vec<f64> = (0..12).map(|i| 30.0 + (i as f64 * 1.7) % 3.0).collect();
        let shifted = |d: &[f64]| -> Vec<f64> { base.iter().zip(d).map(|(b, x)| b + x).collect() };
        let effect = [0.5, 0.1, -0.2, 0.4, 0.3, 0.9, 0.0, 0.6, 0.2, 0.1, 0.7, 0.3];
        let seed_a = shifted(&effect);
        let seed_b: Vec<f64> = seed_a.iter().map(|v| v + 0.2).collect();
        let model = Arm {
            label: "model".into(),
            kind: "scpa-unet".into(),
            runs: vec![scored("a", 1, 2, &seed_a), scored("b", 2, 2, &seed_b)],
        };
        let baseline = Arm {
            label: "base".into(),
            kind: "unet".into(),
            runs: vec![scored("u", 1, 2, &base)],
        };
        let patients = model.patient_values("psnr");
        assert_eq!(patients.len(), 6);
        // Patient 0: views 0 and 1, averaged over the two seeds.
        let want = (seed_a[0] + seed_a[1] + seed_b[0] + seed_b[1]) / 4.0;
        assert!((patients[0].1 - want).abs() < 1e-12);
        let spread = summary(&model.seed_means("psnr"));
        assert_eq!(spread.n, 2);
        assert!((spread.sd - 0.2 / 2f64.sqrt()).abs() < 1e-9, "{spread:?}");

        let rows = compare_arms(&model, &baseline);
        assert_eq!(rows.len(), METRICS.len());
        let psnr = rows.iter().find(|r| r.metric == "psnr").unwrap();
        assert_eq!(psnr.patients, 6);
        let (a, b): (Vec<f64>, Vec<f64>) = (
            patients.iter().map(|p| p.1).collect(),
            baseline.patient_values("psnr").iter().map(|p| p.1).collect(),
        );
        let direct = compare_paired(&a, &b, ALPHA).unwrap();
        assert_eq!(psnr.result.unwrap().test.p, direct.test.p);
        // No boxes: the ROI rows cannot be tested and do not count in Holm's m (3 tests ran).
        let ran: Vec<&Comparison> = rows.iter().filter(|r| r.result.is_some()).collect();
        assert_eq!(ran.len(), 3);
        let raw: Vec<f64> = ran.iter().map(|r| r.result.unwrap().test.p).collect();
        for (r, want) in ran.iter().zip(holm(&raw)) {
            assert_eq!(r.p_holm, want);
            assert!(r.p_holm >= r.result.unwrap().test.p);
        }
        assert!(rows
            .iter()
            .filter(|r| r.result.is_none())
            .all(|r| r.p_holm.is_nan()));
    }

    #[test]
    fn a_verdict_counts_only_holm_significant_differences_in_each_metrics_better_direction() {
        let row = |baseline: &str, metric: &'static str, diff: f64, p_holm: f64| Comparison {
            model: "scpa-unet".into(),
            baseline: baseline.into(),
            metric,
            patients: 12,
            result: Some(PairedComparison {
                normality: None,
                test: crate::stats::TestResult {
                    test: "paired t-test",
                    statistic: 0.0,
                    p: p_holm / 2.0,
                },
                mean_difference: diff,
            }),
            p_holm,
        };
        let untested = Comparison {
            model: "scpa-unet".into(),
            baseline: "unet".into(),
            metric: "roi_ssim",
            patients: 0,
            result: None,
            p_holm: f64::NAN,
        };
        let rows = vec![
            row("unet", "mse", -1e-4, 0.01),    // lower MSE: better
            row("unet", "psnr", 0.3, 0.2),      // not significant
            row("unet", "roi_psnr", 1.1, 0.04), // better
            untested,
            row("copy-LE", "mse", 2e-3, 0.001), // higher MSE: worse
            row("copy-LE", "ssim", 0.2, 0.001), // better
        ];
        let v = verdicts(&rows);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].better, vec!["mse", "roi_psnr"]);
        assert_eq!(v[0].undecided, vec!["psnr", "roi_ssim"]);
        assert!(v[0].beats());
        assert_eq!(v[1].worse, vec!["mse"]);
        assert!(!v[1].beats(), "worse on one metric is not beating it");
    }

    #[test]
    fn data_a_manifest_trained_validated_or_developed_on_is_not_held_out() {
        let mut m =
            Manifest::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../weights/unet.json")).unwrap();
        let fresh = ["PHANTOM-7-0000", "PHANTOM-7-0001"];
        assert!(development_reasons(&m, "/data/seed7/pairs.csv", &fresh).is_empty());

        let t = m.training.as_mut().unwrap();
        t.data_path = Some("/data/seed1/pairs.csv".into());
        t.patients = vec!["PHANTOM-1-0000".into()];
        t.validation_patients = vec!["PHANTOM-1-0049".into()];
        let reasons = development_reasons(&m, "/data/seed1/pairs.csv", &["PHANTOM-1-0049"]);
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].contains("trained on this data source"));
        assert!(reasons[1].contains("1 of its patients"));
        // The same patients written elsewhere (another size, another folder) are still seen.
        assert_eq!(
            development_reasons(&m, "/elsewhere.csv", &["PHANTOM-1-0000"]).len(),
            1
        );

        // An evaluation recorded as development marks that set for good.
        m.metrics["development"] = serde_json::json!({
            "data": "/data/seed2/pairs.csv",
            "patients": ["PHANTOM-2-0000", "PHANTOM-2-0001"],
        });
        let by_path = development_reasons(&m, "/data/seed2/pairs.csv", &[]);
        assert_eq!(by_path.len(), 1);
        assert!(by_path[0].contains("records this data as a development set"));
        assert_eq!(
            development_reasons(&m, "/copy/pairs.csv", &["PHANTOM-2-0001"]).len(),
            1
        );
        assert!(development_reasons(&m, "/data/seed7/pairs.csv", &fresh).is_empty());
    }
}
