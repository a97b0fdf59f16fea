//! Paired significance tests for comparing two models on the same cases.
//!
//! Each model is scored on the same images (or regions), giving two paired samples. Following the
//! evaluation protocol, the paired differences are first checked for normality with the Shapiro–Wilk
//! test; if normality is not rejected the paired Student's t-test compares the means, otherwise the
//! Wilcoxon signed-rank test does ([`compare_paired`]). All tests are two-sided and reproduce SciPy's
//! `shapiro`, `ttest_rel` and `wilcoxon` (see each function for the exact correspondence).
//!
//! Inputs that no test can handle (mismatched lengths, too few values, non-finite values, or all
//! differences zero) give `None` instead of a panic or a `NaN` result.

use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

/// Largest sample (including zero differences) for which [`wilcoxon_signed_rank`] uses the exact
/// distribution of the statistic when there are no ties and no zero differences, as SciPy's
/// `method='auto'` does (SciPy releases before 1.7 used 25).
pub const WILCOXON_EXACT_MAX_N: usize = 50;

/// Largest sample (including zero differences) for which [`wilcoxon_signed_rank`] uses the exact
/// permutation distribution when there are ties or zero differences, as SciPy's `method='auto'` does
/// (since SciPy 1.15; earlier releases used the normal approximation there).
pub const WILCOXON_PERMUTATION_MAX_N: usize = 13;

/// Sample size, mean and sample standard deviation of a set of values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of values.
    pub n: usize,
    /// Arithmetic mean (`NaN` when `n == 0`).
    pub mean: f64,
    /// Sample standard deviation with `n − 1` in the denominator (`NaN` when `n < 2`).
    pub sd: f64,
}

/// Size, mean and sample standard deviation of `x` (mean `NaN` if empty, sd `NaN` if fewer than two).
pub fn summary(x: &[f64]) -> Summary {
    let n = x.len();
    let mean = x.iter().sum::<f64>() / n as f64;
    let sd = if n < 2 {
        f64::NAN
    } else {
        (x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64).sqrt()
    };
    Summary { n, mean, sd }
}

/// Result of the Shapiro–Wilk normality test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShapiroWilk {
    /// The W statistic, in `(0, 1]`; values near 1 are consistent with normality.
    pub w: f64,
    /// p-value of the null hypothesis that the sample comes from a normal distribution.
    pub p: f64,
}

/// Shapiro–Wilk test of normality by Royston's algorithm (AS R94, 1995), as `scipy.stats.shapiro`.
///
/// `None` unless `3 <= x.len() <= 5000` and all values are finite and not all equal.
pub fn shapiro_wilk(x: &[f64]) -> Option<ShapiroWilk> {
    let n = x.len();
    if !(3..=5000).contains(&n) || x.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mut sorted = x.to_vec();
    sorted.sort_by(f64::total_cmp);
    let range = sorted[n - 1] - sorted[0];
    if !(range.is_finite() && range > 0.0) {
        return None;
    }
    // W is invariant to location and scale; centring and scaling by the range keeps the sums well
    // conditioned.
    let mean = sorted.iter().sum::<f64>() / n as f64;
    let centred: Vec<f64> = sorted.iter().map(|v| (v - mean) / range).collect();

    let a = shapiro_wilk_coefficients(n);
    let (mut saa, mut sxx, mut sax) = (0.0, 0.0, 0.0);
    for (ai, xi) in a.iter().zip(&centred) {
        saa += ai * ai;
        sxx += xi * xi;
        sax += ai * xi;
    }
    // W is the squared correlation of the coefficients with the order statistics; 1 − W is formed as
    // a product so that it keeps its relative precision when W is close to 1.
    let root = (saa * sxx).sqrt();
    let one_minus_w = (root - sax) * (root + sax) / (saa * sxx);
    let w = 1.0 - one_minus_w;
    Some(ShapiroWilk {
        w,
        p: shapiro_wilk_p(w, one_minus_w, n),
    })
}

/// Royston's approximation to the Shapiro–Wilk coefficients for the ascending order statistics of a
/// sample of size `n` (antisymmetric, unit sum of squares).
fn shapiro_wilk_coefficients(n: usize) -> Vec<f64> {
    let half = n / 2;
    // Upper-half coefficients, largest order statistic first.
    let upper = if n == 3 {
        vec![std::f64::consts::FRAC_1_SQRT_2]
    } else {
        let normal = Normal::standard();
        let nf = n as f64;
        // Expected normal order statistics m_i (Blom scores), largest first, and m'm over the full sample.
        let m: Vec<f64> = (0..half)
            .map(|i| -normal.inverse_cdf((i as f64 + 0.625) / (nf + 0.25)))
            .collect();
        let mm = 2.0 * m.iter().map(|v| v * v).sum::<f64>();
        // The one (n <= 5) or two largest coefficients come from Royston's polynomials in 1/√n; the rest
        // are m_i rescaled so that the coefficients have unit sum of squares.
        let u = 1.0 / nf.sqrt();
        let mut fixed = vec![
            m[0] / mm.sqrt() + polynomial(&[0.0, 0.221157, -0.147981, -2.071190, 4.434685, -2.706056], u),
        ];
        if n > 5 {
            fixed.push(
                m[1] / mm.sqrt() + polynomial(&[0.0, 0.042981, -0.293762, -1.752461, 5.682633, -3.582633], u),
            );
        }
        let m_rest: f64 = m[fixed.len()..].iter().map(|v| 2.0 * v * v).sum();
        let a_rest: f64 = 1.0 - fixed.iter().map(|v| 2.0 * v * v).sum::<f64>();
        let scale = (m_rest / a_rest).sqrt();
        fixed
            .iter()
            .copied()
            .chain(m[fixed.len()..].iter().map(|v| v / scale))
            .collect()
    };
    let mut a = vec![0.0; n];
    for (i, &c) in upper.iter().enumerate() {
        a[i] = -c;
        a[n - 1 - i] = c;
    }
    a
}

/// Royston's p-value for the Shapiro–Wilk statistic `w` (with `one_minus_w` = 1 − W to full precision).
fn shapiro_wilk_p(w: f64, one_minus_w: f64, n: usize) -> f64 {
    if n == 3 {
        // Exact for n = 3, where W >= 3/4.
        return if w < 0.75 {
            0.0
        } else {
            (1.0 - 6.0 / std::f64::consts::PI * w.sqrt().acos()).max(0.0)
        };
    }
    let nf = n as f64;
    let (y, mu, sigma) = if n <= 11 {
        let gamma = polynomial(&[-2.273, 0.459], nf);
        let y = one_minus_w.ln();
        if y >= gamma {
            // Beyond the range of the transformation: as SciPy, report the smallest p it reports.
            return 1e-19;
        }
        (
            -(gamma - y).ln(),
            polynomial(&[0.5440, -0.39978, 0.025054, -0.0006714], nf),
            polynomial(&[1.3822, -0.77857, 0.062767, -0.0020322], nf).exp(),
        )
    } else {
        let ln_n = nf.ln();
        (
            one_minus_w.ln(),
            polynomial(&[-1.5861, -0.31082, -0.083751, 0.0038915], ln_n),
            polynomial(&[-0.4803, -0.082676, 0.0030302], ln_n).exp(),
        )
    };
    Normal::standard().sf((y - mu) / sigma)
}

/// `c[0] + c[1]·x + c[2]·x² + …`
fn polynomial(c: &[f64], x: f64) -> f64 {
    c.iter().rev().fold(0.0, |acc, &ci| acc * x + ci)
}

/// Result of a two-sided paired test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestResult {
    /// `"paired t-test"` or `"Wilcoxon signed-rank"`.
    pub test: &'static str,
    /// The t statistic of `a − b`, or the Wilcoxon statistic min(R+, R−).
    pub statistic: f64,
    /// Two-sided p-value.
    pub p: f64,
}

/// Paired differences `a − b`; `None` if the lengths differ or a value is not finite.
fn differences(a: &[f64], b: &[f64]) -> Option<Vec<f64>> {
    if a.len() != b.len() {
        return None;
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    d.iter().all(|v| v.is_finite()).then_some(d)
}

/// Two-sided paired Student's t-test of `a − b`, as `scipy.stats.ttest_rel(a, b)`.
///
/// `None` if the lengths differ, there are fewer than two pairs, a value is not finite, or all
/// differences are equal (zero variance, t undefined).
pub fn paired_t_test(a: &[f64], b: &[f64]) -> Option<TestResult> {
    let d = differences(a, b)?;
    let s = summary(&d);
    if s.n < 2 || s.sd == 0.0 || !s.sd.is_finite() {
        return None;
    }
    let t = s.mean / (s.sd / (s.n as f64).sqrt());
    let dist = StudentsT::new(0.0, 1.0, (s.n - 1) as f64).ok()?;
    Some(TestResult {
        test: "paired t-test",
        statistic: t,
        p: (2.0 * dist.sf(t.abs())).min(1.0),
    })
}

/// Two-sided Wilcoxon signed-rank test of `a − b`.
///
/// Zero differences are dropped (`zero_method='wilcox'`) and tied absolute differences get their average
/// rank. The statistic is min(R+, R−). The p-value is exact, from the distribution of R+ under random
/// signs of the actual ranks, when there are at most [`WILCOXON_EXACT_MAX_N`] pairs and neither ties nor
/// zeros, or at most [`WILCOXON_PERMUTATION_MAX_N`] pairs; otherwise it is the normal approximation with
/// the tie correction of the variance and a continuity correction. This is
/// `scipy.stats.wilcoxon(a, b, method='auto')` for the exact cases and
/// `scipy.stats.wilcoxon(a, b, correction=True)` for the normal approximation (SciPy's default there is
/// `correction=False`).
///
/// `None` if the lengths differ, a value is not finite, or every difference is zero.
pub fn wilcoxon_signed_rank(a: &[f64], b: &[f64]) -> Option<TestResult> {
    let d = differences(a, b)?;
    let n_total = d.len();
    let mut nonzero: Vec<f64> = d.into_iter().filter(|&v| v != 0.0).collect();
    let n = nonzero.len();
    if n == 0 {
        return None;
    }
    nonzero.sort_by(|x, y| x.abs().total_cmp(&y.abs()));

    // Ranks are multiples of ½, so twice the rank is an integer; tie groups feed the variance correction.
    let mut doubled_ranks = vec![0_usize; n];
    let mut tie_term = 0.0;
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n && nonzero[end].abs() == nonzero[start].abs() {
            end += 1;
        }
        // Positions start..end hold ranks start + 1 ..= end, whose average doubled is start + end + 1.
        doubled_ranks[start..end].fill(start + end + 1);
        let t = (end - start) as f64;
        tie_term += t * t * t - t;
        start = end;
    }
    let has_ties = tie_term > 0.0;

    let doubled_r_plus: usize = nonzero
        .iter()
        .zip(&doubled_ranks)
        .filter(|(v, _)| **v > 0.0)
        .map(|(_, r)| r)
        .sum();
    let r_plus = doubled_r_plus as f64 / 2.0;
    let nf = n as f64;
    let r_minus = nf * (nf + 1.0) / 2.0 - r_plus;

    let exact = (n_total <= WILCOXON_EXACT_MAX_N && !has_ties && n == n_total)
        || n_total <= WILCOXON_PERMUTATION_MAX_N;
    let p = if exact {
        signed_rank_exact_p(&doubled_ranks, doubled_r_plus)
    } else {
        let mean = nf * (nf + 1.0) / 4.0;
        let se = ((nf * (nf + 1.0) * (2.0 * nf + 1.0) - tie_term / 2.0) / 24.0).sqrt();
        // Continuity correction as SciPy and R apply it: z = (R+ − mean − sign(R+ − mean)·½) / se.
        let deviation = r_plus - mean;
        let z = if deviation == 0.0 {
            0.0
        } else {
            (deviation.abs() - 0.5) / se
        };
        (2.0 * Normal::standard().sf(z.abs())).min(1.0)
    };
    Some(TestResult {
        test: "Wilcoxon signed-rank",
        statistic: r_plus.min(r_minus),
        p,
    })
}

/// Two-sided p-value of the observed (doubled) positive rank sum when each rank's sign is + or − with
/// probability ½ independently: `min(1, 2·min(P(R+ ≤ obs), P(R+ ≥ obs)))`.
fn signed_rank_exact_p(doubled_ranks: &[usize], observed: usize) -> f64 {
    let total: usize = doubled_ranks.iter().sum();
    // probability[s]: chance that the doubled positive rank sum is s.
    let mut probability = vec![0.0; total + 1];
    probability[0] = 1.0;
    let mut reachable = 0;
    for &r in doubled_ranks {
        for s in (0..=reachable).rev() {
            let q = probability[s] / 2.0;
            probability[s] = q;
            probability[s + r] += q;
        }
        reachable += r;
    }
    let lower: f64 = probability[..=observed].iter().sum();
    let upper: f64 = probability[observed..].iter().sum();
    (2.0 * lower.min(upper)).min(1.0)
}

/// Outcome of comparing two models on paired scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedComparison {
    /// Shapiro–Wilk test of the differences `a − b`; `None` if it could not be run (all differences
    /// equal, or more than 5000 pairs), in which case the Wilcoxon test was used.
    pub normality: Option<ShapiroWilk>,
    /// The test that decided: the paired t-test if normality was not rejected, else Wilcoxon.
    pub test: TestResult,
    /// Mean of `a − b`.
    pub mean_difference: f64,
}

/// Compares paired scores `a` and `b` (model A and model B on the same cases) the way the evaluation
/// protocol does: Shapiro–Wilk on `a − b`; if its p-value is at least `alpha`, the paired t-test,
/// otherwise (or when normality cannot be assessed) the Wilcoxon signed-rank test.
///
/// `None` if the lengths differ, there are fewer than three pairs, a value is not finite, or all
/// differences are zero.
pub fn compare_paired(a: &[f64], b: &[f64], alpha: f64) -> Option<PairedComparison> {
    let d = differences(a, b)?;
    if d.len() < 3 || d.iter().all(|&v| v == 0.0) {
        return None;
    }
    let normality = shapiro_wilk(&d);
    let test = match normality {
        Some(sw) if sw.p >= alpha => paired_t_test(a, b)?,
        _ => wilcoxon_signed_rank(a, b)?,
    };
    Some(PairedComparison {
        normality,
        test,
        mean_difference: summary(&d).mean,
    })
}

/// Holm–Bonferroni adjusted p-values, in the order of `p`: with the m p-values sorted ascending,
/// the k-th smallest (k from 1) becomes `max over j <= k of min(1, (m − j + 1)·p_(j))`. Rejecting
/// where the adjusted value is below α controls the family-wise error rate at α across the m tests.
/// As `statsmodels.stats.multitest.multipletests(p, method="holm")[1]`.
///
/// A `NaN` input gives `NaN` for itself and does not count in m.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p.len()).filter(|&i| !p[i].is_nan()).collect();
    order.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    let m = order.len();
    let mut adjusted = vec![f64::NAN; p.len()];
    let mut running = 0.0_f64;
    for (k, &i) in order.iter().enumerate() {
        running = running.max(((m - k) as f64 * p[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

/// The mean of `values` per group, groups in order of first appearance: e.g. per-image scores
/// averaged per patient, since the views of one patient are not independent cases. Non-finite
/// values are left out of their group's mean; a group with none has mean `NaN`.
pub fn group_means<'a>(values: &[f64], groups: &[&'a str]) -> Vec<(&'a str, f64)> {
    let mut out: Vec<(&'a str, f64, usize)> = Vec::new();
    for (&v, &g) in values.iter().zip(groups) {
        let at = match out.iter().position(|(name, ..)| *name == g) {
            Some(at) => at,
            None => {
                out.push((g, 0.0, 0));
                out.len() - 1
            }
        };
        if v.is_finite() {
            out[at].1 += v;
            out[at].2 += 1;
        }
    }
    out.into_iter()
        .map(|(g, sum, n)| (g, if n == 0 { f64::NAN } else { sum / n as f64 }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Samples and reference values. SciPy 1.17.1 (NumPy 2.4.6, Python 3.11), with `a`, `b` the arrays
    // below and `from scipy import stats`:
    //
    //   stats.shapiro(a - b)
    //   stats.ttest_rel(a, b)
    //   stats.wilcoxon(a, b)                                          # method='auto': exact cases
    //   stats.wilcoxon(a, b, correction=True, method='asymptotic')    # normal approximation
    //
    // S10: n = 10, no ties, no zeros (roughly normal differences).
    const A10: [f64; 10] = [
        28.55, 28.81, 28.16, 27.23, 27.94, 27.62, 28.19, 29.6, 27.34, 27.39,
    ];
    const B10: [f64; 10] = [28.0, 28.3, 27.73, 27.11, 27.55, 27.01, 28.06, 29.34, 27.51, 27.38];
    // TIES30: n = 30 on a 1/8 grid: one zero difference and many tied |differences|.
    const AT: [f64; 30] = [
        25.25, 22.375, 24.625, 25.125, 24.0, 24.75, 24.125, 25.125, 27.0, 23.625, 24.5, 23.875, 24.375,
        23.125, 23.375, 24.375, 25.0, 26.25, 21.5, 22.0, 25.125, 20.875, 23.625, 25.25, 25.75, 25.0, 23.875,
        24.0, 23.875, 26.5,
    ];
    const BT: [f64; 30] = [
        25.125, 22.25, 24.125, 24.875, 23.75, 25.0, 23.875, 25.0, 26.125, 23.0, 24.25, 23.25, 24.25, 22.25,
        23.125, 23.75, 25.375, 25.75, 22.0, 22.75, 25.0, 21.0, 23.25, 23.875, 25.875, 25.0, 23.5, 23.5,
        23.625, 26.25,
    ];
    // SKEW30: n = 30, right-skewed differences, no ties, no zeros.
    const AS: [f64; 30] = [
        0.7402, 0.7331, 0.6707, 0.7045, 0.741, 0.6445, 0.719, 0.659, 0.7651, 0.7142, 0.7717, 0.6834, 0.7427,
        0.629, 0.6614, 0.7374, 0.6005, 0.7438, 0.613, 0.7351, 0.6989, 0.7466, 0.7075, 0.6447, 0.7688, 0.7855,
        0.7409, 0.6859, 0.7046, 0.6482,
    ];
    const BS: [f64; 30] = [
        0.7351, 0.726, 0.6483, 0.696, 0.7018, 0.6473, 0.713, 0.6571, 0.7486, 0.7096, 0.7045, 0.6704, 0.6941,
        0.6001, 0.6434, 0.7181, 0.5936, 0.7423, 0.6127, 0.7378, 0.6577, 0.7389, 0.7065, 0.6232, 0.7625,
        0.7721, 0.6967, 0.6863, 0.692, 0.6512,
    ];
    // TIES12: n = 12 on a 1/4 grid: four zero differences and ties (SciPy 'auto' → exact permutation).
    const A12: [f64; 12] = [1.0, 1.0, 1.0, 1.0, 0.75, 1.0, 1.25, 1.0, 1.5, 0.75, 0.75, 1.25];
    const B12: [f64; 12] = [1.25, 1.25, 1.0, 1.25, 1.0, 1.25, 1.0, 1.0, 1.5, 1.0, 1.25, 1.25];

    fn assert_close(got: f64, want: f64, tol: f64, what: &str) {
        assert!(
            (got - want).abs() <= tol,
            "{what}: got {got}, want {want} (tolerance {tol})"
        );
    }

    fn diff(a: &[f64], b: &[f64]) -> Vec<f64> {
        a.iter().zip(b).map(|(x, y)| x - y).collect()
    }

    #[test]
    fn summary_of_known_values() {
        let s = summary(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(s.n, 8);
        assert_close(s.mean, 5.0, 1e-15, "mean");
        assert_close(s.sd, (32.0_f64 / 7.0).sqrt(), 1e-15, "sd");
        assert!(summary(&[1.0]).sd.is_nan());
    }

    fn check_shapiro(name: &str, x: &[f64], w: f64, p: f64) {
        let got = shapiro_wilk(x).expect(name);
        assert_close(got.w, w, 1e-6, name);
        assert_close(got.p, p, 1e-4, name);
    }

    fn check_t(name: &str, a: &[f64], b: &[f64], t: f64, p: f64) {
        let got = paired_t_test(a, b).expect(name);
        assert_eq!(got.test, "paired t-test");
        assert_close(got.statistic, t, 1e-6, name);
        assert_close(got.p, p, 1e-4, name);
    }

    fn check_wilcoxon(name: &str, a: &[f64], b: &[f64], statistic: f64, p: f64) {
        let got = wilcoxon_signed_rank(a, b).expect(name);
        assert_eq!(got.test, "Wilcoxon signed-rank");
        assert_close(got.statistic, statistic, 1e-6, name);
        assert_close(got.p, p, 1e-4, name);
    }

    #[test]
    fn shapiro_wilk_matches_scipy() {
        check_shapiro("S10", &diff(&A10, &B10), 0.950492071109147, 0.6743249899047454);
        check_shapiro("TIES30", &diff(&AT, &BT), 0.9687190644103619, 0.5047478837320222);
        check_shapiro(
            "SKEW30",
            &diff(&AS, &BS),
            0.8531091271226621,
            0.0007207929284804368,
        );
        check_shapiro(
            "TIES12",
            &diff(&A12, &B12),
            0.8754227782765235,
            0.07659847536564768,
        );
        check_shapiro("n=3", &[1.0, 2.0, 4.0], 0.9642857142857142, 0.6368868450289689);
        check_shapiro(
            "n=5",
            &[0.3, 0.1, 0.45, 0.2, 0.9],
            0.8941961034187889,
            0.3786434056975998,
        );
    }

    #[test]
    fn t_test_matches_scipy() {
        check_t("S10", &A10, &B10, 3.4986266600878575, 0.006738056552775115);
        check_t("TIES30", &AT, &BT, 3.199264621385211, 0.003324681730618077);
        check_t("SKEW30", &AS, &BS, 4.743798835579068, 5.168289609233886e-05);
        check_t("TIES12", &A12, &B12, -2.5483280604377567, 0.02707557060924949);
    }

    #[test]
    fn wilcoxon_matches_scipy() {
        // Exact distribution (SciPy 'auto': n <= 50, no ties, no zeros).
        check_wilcoxon("S10", &A10, &B10, 4.0, 0.013671875);
        check_wilcoxon("SKEW30", &AS, &BS, 23.0, 1.1920928955078125e-06);
        // Exact permutation distribution (SciPy 'auto': n <= 13 with ties or zeros).
        check_wilcoxon("TIES12", &A12, &B12, 4.0, 0.0625);
        // Normal approximation: `correction=True, method='asymptotic'`.
        check_wilcoxon("TIES30", &AT, &BT, 83.0, 0.0036019732021022512);
    }

    #[test]
    fn wilcoxon_is_symmetric_in_its_arguments() {
        for (name, a, b) in [
            ("TIES30", &AT[..], &BT[..]),
            ("S10", &A10, &B10),
            ("TIES12", &A12, &B12),
        ] {
            let ab = wilcoxon_signed_rank(a, b).expect(name);
            let ba = wilcoxon_signed_rank(b, a).expect(name);
            assert_eq!(ab.statistic, ba.statistic, "{name}");
            assert_close(ab.p, ba.p, 1e-12, name);
        }
    }

    #[test]
    fn compare_paired_follows_normality() {
        let normal = compare_paired(&A10, &B10, 0.05).expect("S10");
        assert_eq!(normal.test.test, "paired t-test");
        assert_close(normal.mean_difference, 0.284, 1e-12, "S10 mean difference");
        assert!(normal.normality.is_some_and(|sw| sw.p >= 0.05));

        let skewed = compare_paired(&AS, &BS, 0.05).expect("SKEW30");
        assert_eq!(skewed.test.test, "Wilcoxon signed-rank");
        assert!(skewed.normality.is_some_and(|sw| sw.p < 0.05));

        // Constant non-zero differences: normality cannot be assessed, Wilcoxon still applies.
        let shifted: Vec<f64> = B10.iter().map(|v| v + 0.5).collect();
        let constant = compare_paired(&shifted, &B10, 0.05).expect("constant shift");
        assert!(constant.normality.is_none());
        assert_eq!(constant.test.test, "Wilcoxon signed-rank");
    }

    #[test]
    fn degenerate_inputs_give_none() {
        assert!(compare_paired(&A10, &A10, 0.05).is_none());
        assert!(compare_paired(&[1.0, 2.0], &[0.0, 0.0], 0.05).is_none());
        assert!(compare_paired(&A10, &B10[..9], 0.05).is_none());
        assert!(paired_t_test(&A10, &A10).is_none());
        assert!(paired_t_test(&[1.0], &[0.0]).is_none());
        assert!(paired_t_test(&[1.0, f64::NAN], &[0.0, 0.0]).is_none());
        assert!(wilcoxon_signed_rank(&A10, &A10).is_none());
        assert!(wilcoxon_signed_rank(&[], &[]).is_none());
        assert!(wilcoxon_signed_rank(&A10, &B10[..9]).is_none());
        assert!(shapiro_wilk(&[1.0, 2.0]).is_none());
        assert!(shapiro_wilk(&[3.0; 10]).is_none());
        assert!(shapiro_wilk(&[1.0, f64::INFINITY, 2.0]).is_none());
        assert!(shapiro_wilk(&vec![0.0; 5001]).is_none());
    }

    // Holm references: statsmodels 0.15.0 (SciPy 1.17.1, NumPy 2.4.6, Python 3.11):
    //
    //   from statsmodels.stats.multitest import multipletests
    //   multipletests(P, method="holm")[1]
    const HOLM_P: [f64; 6] = [0.01, 0.04, 0.03, 0.005, 0.2, 0.04];
    const HOLM_WANT: [f64; 6] = [0.05, 0.12, 0.12, 0.03, 0.2, 0.12];
    const HOLM_P2: [f64; 5] = [0.3, 0.02, 0.6, 0.25, 0.001];
    const HOLM_ADJUSTED2: [f64; 5] = [0.75, 0.08, 0.75, 0.75, 0.005];

    #[test]
    fn holm_matches_statsmodels() {
        for (got, want) in holm(&HOLM_P).iter().zip(HOLM_WANT) {
            assert_close(*got, want, 1e-12, "holm");
        }
        for (got, want) in holm(&HOLM_P2).iter().zip(HOLM_ADJUSTED2) {
            assert_close(*got, want, 1e-12, "holm, capped at 1");
        }
        let with_nan = holm(&[0.01, f64::NAN, 0.02]);
        assert!(with_nan[1].is_nan());
        assert_close(with_nan[0], 0.02, 1e-15, "m counts only the tests that ran");
        assert_close(with_nan[2], 0.02, 1e-15, "monotone");
        assert!(holm(&[]).is_empty());
    }

    // Per-patient paired tests: two models scored on 4 views of each of 8 patients; the views are
    // averaged per patient before testing. SciPy 1.17.1, NumPy 2.4.6:
    //
    //   pa = np.array(VIEW_A).reshape(8, 4).mean(axis=1)   # the patients' views are consecutive
    //   pb = np.array(VIEW_B).reshape(8, 4).mean(axis=1)
    //   stats.ttest_rel(pa, pb); stats.wilcoxon(pa, pb)
    //   stats.ttest_rel(VIEW_A, VIEW_B)                    # views as if independent
    //
    // The views were drawn as patient level + view noise, model A adding a per-patient effect:
    //   rng = np.random.default_rng(17); patient = rng.normal(30, 2, 8); eff = rng.normal(0.3, 0.5, 8)
    //   per patient i, 4 views: base = patient[i] + rng.normal(0, 1)
    //                           B = round(base, 3); A = round(base + eff[i] + rng.normal(0, 0.1), 3)
    const VIEW_A: [f64; 32] = [
        33.737, 33.093, 33.594, 31.423, 31.273, 28.869, 28.568, 29.731, 29.854, 27.708, 27.723, 26.986,
        28.391, 28.148, 28.722, 26.819, 25.96, 24.848, 24.621, 25.426, 32.217, 29.687, 31.763, 30.81, 29.214,
        28.637, 28.162, 27.98, 27.295, 26.742, 27.411, 28.189,
    ];
    const VIEW_B: [f64; 32] = [
        33.546, 32.893, 33.299, 31.295, 31.02, 28.392, 28.502, 29.401, 30.716, 28.529, 28.553, 27.78, 27.872,
        27.369, 28.041, 26.151, 26.759, 25.447, 25.425, 26.12, 31.075, 28.469, 30.681, 29.55, 28.61, 28.122,
        27.451, 27.262, 26.941, 26.518, 27.359, 28.19,
    ];
    const PATIENT_A: [f64; 8] = [
        32.96175,
        29.61025,
        28.06775,
        28.02,
        25.21375,
        31.11925,
        28.498250000000002,
        27.40925,
    ];
    /// (t, p) of `ttest_rel` on the patient means.
    const PATIENT_T: (f64, f64) = (0.8096783847566542, 0.4447722686832609);
    /// (statistic, p) of `wilcoxon` on the patient means (exact: n = 8, no ties).
    const PATIENT_W: (f64, f64) = (13.0, 0.546875);
    const VIEWS_T_P: f64 = 0.10201115491595798;
    #[test]
    fn per_patient_means_then_paired_tests_match_scipy() {
        let patients: Vec<String> = (0..32).map(|i| format!("P{}", i / 4)).collect();
        let groups: Vec<&str> = patients.iter().map(String::as_str).collect();
        let a = group_means(&VIEW_A, &groups);
        let b = group_means(&VIEW_B, &groups);
        assert_eq!(a.len(), 8);
        assert_eq!(a[3].0, "P3");
        let (pa, pb): (Vec<f64>, Vec<f64>) = (
            a.iter().map(|(_, v)| *v).collect(),
            b.iter().map(|(_, v)| *v).collect(),
        );
        for (got, want) in pa.iter().zip(PATIENT_A) {
            assert_close(*got, want, 1e-12, "patient mean");
        }
        check_t("per patient", &pa, &pb, PATIENT_T.0, PATIENT_T.1);
        check_wilcoxon("per patient", &pa, &pb, PATIENT_W.0, PATIENT_W.1);
        // Testing the 32 views as if independent gives another (smaller) p: the reason to aggregate.
        let views = paired_t_test(&VIEW_A, &VIEW_B).unwrap();
        assert_close(views.p, VIEWS_T_P, 1e-6, "views as independent cases");
        assert!(views.p < PATIENT_T.1);
    }

    #[test]
    fn group_means_skip_non_finite_values() {
        let g = group_means(&[1.0, f64::NAN, 3.0, f64::NAN], &["x", "x", "y", "z"]);
        assert_eq!(g[0], ("x", 1.0));
        assert_eq!(g[1], ("y", 3.0));
        assert_eq!(g[2].0, "z");
        assert!(g[2].1.is_nan());
    }
}
