//! Score calibration of single-label classifiers: temperature scaling (Guo et al. 2017), and
//! the measures it is judged by: expected calibration error (15 equal-width confidence bins),
//! Brier score and negative log-likelihood.
//!
//! One temperature `T > 0` divides every logit before the softmax. It is fitted on held-out
//! labelled data by minimising the NLL; since it scales all logits of a row alike, the arg-max,
//! and so every prediction, is unchanged. Multi-label models are not temperature-scaled: their
//! per-label decision thresholds (tuned on validation data, `sequin.json`'s `thresholds`) are
//! what sequin calibrates for them.

use serde::{Deserialize, Serialize};

/// The bins of the expected calibration error.
pub const ECE_BINS: usize = 15;

/// A fitted calibration, saved in `sequin.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The method: `temperature`.
    pub method: CalibrationMethod,
    /// The temperature the logits are divided by before the softmax.
    pub temperature: f32,
    /// The data it was fitted on (a file, or `validation`).
    pub fitted_on: String,
    /// Its examples.
    pub n: usize,
    /// The measures on that data with `T = 1`.
    pub before: CalibrationMetrics,
    /// The measures on that data with the fitted `T`.
    pub after: CalibrationMetrics,
}

/// How scores are calibrated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CalibrationMethod {
    /// One temperature for all logits.
    Temperature,
}

/// How well probabilities match outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CalibrationMetrics {
    /// Expected calibration error: the mean |accuracy − confidence| of the top class over
    /// [`ECE_BINS`] equal-width confidence bins, weighted by the bins' sizes.
    pub ece: f64,
    /// Brier score: the mean over examples of Σ_k (p_k − y_k)².
    pub brier: f64,
    /// Mean negative log-likelihood of the true class.
    pub nll: f64,
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReliabilityBin {
    /// The bin's lower confidence edge.
    pub lower: f64,
    /// Its upper edge.
    pub upper: f64,
    /// Examples whose top-class confidence falls in it.
    pub count: usize,
    /// Their mean confidence (0 when empty).
    pub confidence: f64,
    /// Their accuracy (0 when empty).
    pub accuracy: f64,
}

/// Softmax of `logits / t`, in f64.
fn probs(logits: &[f32], t: f64) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64 / t;
    let e: Vec<f64> = logits.iter().map(|&x| (x as f64 / t - max).exp()).collect();
    let z: f64 = e.iter().sum();
    e.into_iter().map(|x| x / z).collect()
}

/// Mean NLL of the targets under `softmax(logits / t)`.
pub fn nll(logits: &[Vec<f32>], targets: &[usize], t: f64) -> f64 {
    let sum: f64 = logits
        .iter()
        .zip(targets)
        .map(|(l, &y)| -probs(l, t)[y].max(f64::MIN_POSITIVE).ln())
        .sum();
    sum / logits.len().max(1) as f64
}

/// The reliability diagram of `softmax(logits / t)`: [`ECE_BINS`] equal-width bins of the
/// top-class confidence (a confidence of exactly 1 falls in the last bin).
pub fn reliability(logits: &[Vec<f32>], targets: &[usize], t: f64) -> Vec<ReliabilityBin> {
    let mut count = [0usize; ECE_BINS];
    let mut conf = [0f64; ECE_BINS];
    let mut correct = [0f64; ECE_BINS];
    for (l, &y) in logits.iter().zip(targets) {
        let p = probs(l, t);
        let (best, &c) = p
            .iter()
            .enumerate()
            .fold((0, &p[0]), |b, (i, v)| if *v > *b.1 { (i, v) } else { b });
        let bin = ((c * ECE_BINS as f64) as usize).min(ECE_BINS - 1);
        count[bin] += 1;
        conf[bin] += c;
        correct[bin] += f64::from(u8::from(best == y));
    }
    (0..ECE_BINS)
        .map(|b| {
            let n = count[b].max(1) as f64;
            ReliabilityBin {
                lower: b as f64 / ECE_BINS as f64,
                upper: (b + 1) as f64 / ECE_BINS as f64,
                count: count[b],
                confidence: conf[b] / n,
                accuracy: correct[b] / n,
            }
        })
        .collect()
}

impl CalibrationMetrics {
    /// The measures of `softmax(logits / t)` against class ids.
    pub fn of(logits: &[Vec<f32>], targets: &[usize], t: f64) -> Self {
        let n = logits.len().max(1) as f64;
        let ece = reliability(logits, targets, t)
            .iter()
            .map(|b| b.count as f64 / n * (b.accuracy - b.confidence).abs())
            .sum();
        let brier = logits
            .iter()
            .zip(targets)
            .map(|(l, &y)| {
                let p = probs(l, t);
                p.iter()
                    .enumerate()
                    .map(|(k, &pk)| (pk - f64::from(u8::from(k == y))).powi(2))
                    .sum::<f64>()
            })
            .sum::<f64>()
            / n;
        Self {
            ece,
            brier,
            nll: nll(logits, targets, t),
        }
    }
}

/// The temperature that minimises the NLL of the targets: golden-section search on `ln T` over
/// [ln 0.05, ln 20] (the NLL is convex in 1/T, so unimodal in ln T), to 1e-6 in `ln T`.
pub fn fit_temperature(logits: &[Vec<f32>], targets: &[usize]) -> f64 {
    let f = |u: f64| nll(logits, targets, u.exp());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut a, mut b) = (0.05f64.ln(), 20f64.ln());
    let mut c = b - g * (b - a);
    let mut d = a + g * (b - a);
    let (mut fc, mut fd) = (f(c), f(d));
    while b - a > 1e-6 {
        if fc < fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    ((a + b) / 2.0).exp()
}

impl Calibration {
    /// Fits a temperature on labelled logits (`fitted_on` names the data).
    pub fn fit(logits: &[Vec<f32>], targets: &[usize], fitted_on: String) -> Self {
        let t = fit_temperature(logits, targets);
        Self {
            method: CalibrationMethod::Temperature,
            temperature: t as f32,
            fitted_on,
            n: logits.len(),
            before: CalibrationMetrics::of(logits, targets, 1.0),
            after: CalibrationMetrics::of(logits, targets, f64::from(t as f32)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over-confident logits: right 70% of the time at ~97% confidence.
    fn overconfident() -> (Vec<Vec<f32>>, Vec<usize>) {
        let mut logits = Vec::new();
        let mut targets = Vec::new();
        for i in 0..200 {
            let pred = i % 3;
            logits.push((0..3).map(|k| if k == pred { 4.0 } else { 0.5 }).collect());
            targets.push(if i % 10 < 7 { pred } else { (pred + 1) % 3 });
        }
        (logits, targets)
    }

    #[test]
    fn temperature_lowers_ece_and_nll_and_keeps_predictions() {
        let (l, y) = overconfident();
        let c = Calibration::fit(&l, &y, "test".into());
        assert!(
            c.temperature > 1.0,
            "over-confident logits are softened: {}",
            c.temperature
        );
        assert!(c.after.nll < c.before.nll);
        assert!(
            c.after.ece < c.before.ece / 4.0,
            "{:?} -> {:?}",
            c.before,
            c.after
        );
        // The confidence after scaling is the accuracy (0.7): the exact optimum for this data.
        let p = probs(&l[0], f64::from(c.temperature));
        assert!((p[0] - 0.7).abs() < 1e-3, "{p:?}");
    }

    #[test]
    fn metrics_match_hand_computed_values() {
        // Two examples, two classes: p = (0.5, 0.5) right, and softmax(ln 3, 0) = (0.75, 0.25) wrong.
        let l = vec![vec![0.0, 0.0], vec![3f32.ln(), 0.0]];
        let y = vec![0, 1];
        let m = CalibrationMetrics::of(&l, &y, 1.0);
        assert!((m.nll - (-(0.5f64.ln()) - 0.25f64.ln()) / 2.0).abs() < 1e-6);
        assert!((m.brier - (0.5 + (0.75f64.powi(2) * 2.0)) / 2.0).abs() < 1e-6);
        // Bins: 0.5 (bin 7, acc 1) and 0.75 (bin 11, acc 0): ECE = (0.5 + 0.75) / 2.
        assert!((m.ece - 0.625).abs() < 1e-6, "{}", m.ece);
    }
}
