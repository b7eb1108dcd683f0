//! Classification metrics, accumulated in a streaming way (a confusion matrix and a loss sum).

use serde::{Deserialize, Serialize};

/// A streaming confusion matrix: memory is `classes²`, whatever the dataset size.
#[derive(Debug, Clone)]
pub struct Confusion {
    k: usize,
    /// `counts[truth * k + pred]`
    counts: Vec<u64>,
    loss_sum: f64,
    n: u64,
}

/// Evaluation results.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Fraction of correct predictions.
    pub accuracy: f64,
    /// Unweighted mean of per-class F1 (a class never predicted nor present counts as 0).
    pub macro_f1: f64,
    /// Mean loss.
    pub loss: f64,
    /// Number of examples.
    pub n: u64,
    /// Multi-label: micro-averaged F1 over every (row, label) decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro_f1: Option<f64>,
    /// Regression: mean squared error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mse: Option<f64>,
    /// Regression: mean absolute error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    /// Regression: coefficient of determination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r2: Option<f64>,
}

impl EvalMetrics {
    /// The value of a metric named as `metric_for_best_model` names it (`accuracy`,
    /// `macro_f1`, `micro_f1`, `r2`, `loss`).
    pub fn score(&self, metric: &str) -> f64 {
        match metric {
            "macro_f1" => self.macro_f1,
            "micro_f1" => self.micro_f1.unwrap_or(self.macro_f1),
            "r2" => self.r2.unwrap_or(f64::NEG_INFINITY),
            "loss" => self.loss,
            _ => self.accuracy,
        }
    }
}

impl Confusion {
    /// An empty matrix for `k` classes.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            counts: vec![0; k * k],
            loss_sum: 0.0,
            n: 0,
        }
    }

    /// Adds one example.
    pub fn add(&mut self, truth: usize, pred: usize) {
        self.counts[truth * self.k + pred] += 1;
        self.n += 1;
    }

    /// Adds the summed loss of a batch.
    pub fn add_loss(&mut self, loss_sum: f64) {
        self.loss_sum += loss_sum;
    }

    /// The count of examples of class `truth` predicted as `pred`.
    pub fn get(&self, truth: usize, pred: usize) -> u64 {
        self.counts[truth * self.k + pred]
    }

    /// Accuracy, macro-F1 and mean loss so far.
    pub fn metrics(&self) -> EvalMetrics {
        let n = self.n.max(1) as f64;
        let correct: u64 = (0..self.k).map(|c| self.get(c, c)).sum();
        let f1 = (0..self.k)
            .map(|c| {
                let tp = self.get(c, c) as f64;
                let fp: f64 = (0..self.k)
                    .filter(|&t| t != c)
                    .map(|t| self.get(t, c) as f64)
                    .sum();
                let fn_: f64 = (0..self.k)
                    .filter(|&p| p != c)
                    .map(|p| self.get(c, p) as f64)
                    .sum();
                if tp == 0.0 {
                    0.0
                } else {
                    2.0 * tp / (2.0 * tp + fp + fn_)
                }
            })
            .sum::<f64>()
            / self.k.max(1) as f64;
        EvalMetrics {
            accuracy: correct as f64 / n,
            macro_f1: f1,
            loss: self.loss_sum / n,
            n: self.n,
            micro_f1: None,
            mse: None,
            mae: None,
            r2: None,
        }
    }
}

/// One class's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassReport {
    /// Class name.
    pub label: String,
    /// tp / (tp + fp).
    pub precision: f64,
    /// tp / (tp + fn).
    pub recall: f64,
    /// Harmonic mean of the two.
    pub f1: f64,
    /// Examples of this class.
    pub support: u64,
}

/// Every classification metric sequin reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Accuracy, macro-F1, loss, n.
    #[serde(flatten)]
    pub summary: EvalMetrics,
    /// Micro-averaged F1 (equals accuracy for single-label problems).
    pub micro_f1: f64,
    /// Support-weighted F1.
    pub weighted_f1: f64,
    /// Unweighted mean precision.
    pub macro_precision: f64,
    /// Unweighted mean recall.
    pub macro_recall: f64,
    /// Matthews correlation coefficient (Gorodkin's multi-class form).
    pub mcc: f64,
    /// Area under the ROC curve: the positive class for two classes, else the one-vs-rest
    /// macro average (`None` when a class never or always occurs).
    pub auroc: Option<f64>,
    /// `confusion[truth][pred]`.
    pub confusion: Vec<Vec<u64>>,
    /// Per-class figures, in id order.
    pub per_class: Vec<ClassReport>,
    /// Single-label: how calibrated the scores are (ECE, Brier, NLL), with `T = 1` and with
    /// the folder's temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationReport>,
}

/// The calibration part of a [`Report`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationReport {
    /// The temperature applied to the scores (1 when the folder has none, or with
    /// `--no-calibration`).
    pub temperature: f32,
    /// The measures of the raw softmax.
    pub before: crate::calibrate::CalibrationMetrics,
    /// The measures with the temperature (absent when it is 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<crate::calibrate::CalibrationMetrics>,
}

impl CalibrationReport {
    /// The report of logits against class ids under temperature `t`.
    pub fn of(logits: &[Vec<f32>], ids: &[usize], t: f32) -> Self {
        Self {
            temperature: t,
            before: crate::calibrate::CalibrationMetrics::of(logits, ids, 1.0),
            after: (t != 1.0)
                .then(|| crate::calibrate::CalibrationMetrics::of(logits, ids, f64::from(t))),
        }
    }
}

fn f1_of(tp: u64, fp: u64, fn_: u64) -> (f64, f64, f64) {
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let (p, r) = (ratio(tp, tp + fp), ratio(tp, tp + fn_));
    let f = if p + r == 0.0 {
        0.0
    } else {
        2.0 * p * r / (p + r)
    };
    (p, r, f)
}

/// Multi-label metrics at per-label thresholds, streaming: per label true/false positives
/// and false negatives, exact-match count, BCE sum.
#[derive(Debug, Clone)]
pub struct MultiLabelAccumulator {
    thresholds: Vec<f32>,
    tp: Vec<u64>,
    fp: Vec<u64>,
    fn_: Vec<u64>,
    exact: u64,
    loss_sum: f64,
    n: u64,
}

impl MultiLabelAccumulator {
    /// For labels with these decision thresholds (on sigmoid probabilities).
    pub fn new(thresholds: Vec<f32>) -> Self {
        let k = thresholds.len();
        Self {
            thresholds,
            tp: vec![0; k],
            fp: vec![0; k],
            fn_: vec![0; k],
            exact: 0,
            loss_sum: 0.0,
            n: 0,
        }
    }

    /// Adds one row: logits and its multi-hot truth. The loss is the mean BCE over labels.
    pub fn add(&mut self, logits: &[f32], truth: &[f32]) {
        let mut all = true;
        let mut bce = 0.0f64;
        for (j, (&z, &y)) in logits.iter().zip(truth).enumerate() {
            let (z, y) = (z as f64, y as f64);
            // log(1 + e^-|z|) + max(z, 0) - z·y, stable.
            bce += z.max(0.0) - z * y + (-z.abs()).exp().ln_1p();
            let p = 1.0 / (1.0 + (-z).exp());
            let pred = p >= self.thresholds[j] as f64;
            let t = y >= 0.5;
            match (pred, t) {
                (true, true) => self.tp[j] += 1,
                (true, false) => self.fp[j] += 1,
                (false, true) => self.fn_[j] += 1,
                (false, false) => {}
            }
            all &= pred == t;
        }
        self.exact += u64::from(all);
        self.loss_sum += bce / logits.len().max(1) as f64;
        self.n += 1;
    }

    /// Subset accuracy (every label right), macro- and micro-F1, mean BCE.
    pub fn metrics(&self) -> EvalMetrics {
        let k = self.thresholds.len();
        let macro_f1 = (0..k)
            .map(|j| f1_of(self.tp[j], self.fp[j], self.fn_[j]).2)
            .sum::<f64>()
            / k.max(1) as f64;
        let sum = |v: &[u64]| v.iter().sum::<u64>();
        let micro = f1_of(sum(&self.tp), sum(&self.fp), sum(&self.fn_)).2;
        let n = self.n.max(1) as f64;
        EvalMetrics {
            accuracy: self.exact as f64 / n,
            macro_f1,
            loss: self.loss_sum / n,
            n: self.n,
            micro_f1: Some(micro),
            mse: None,
            mae: None,
            r2: None,
        }
    }

    /// The full report: per-label precision, recall, F1 and support.
    pub fn report(&self, labels: &[String]) -> Report {
        let per_class: Vec<ClassReport> = (0..self.thresholds.len())
            .map(|j| {
                let (precision, recall, f1) = f1_of(self.tp[j], self.fp[j], self.fn_[j]);
                ClassReport {
                    label: labels[j].clone(),
                    precision,
                    recall,
                    f1,
                    support: self.tp[j] + self.fn_[j],
                }
            })
            .collect();
        let k = per_class.len().max(1) as f64;
        let support: u64 = per_class.iter().map(|c| c.support).sum();
        let summary = self.metrics();
        Report {
            micro_f1: summary.micro_f1.unwrap_or(0.0),
            weighted_f1: per_class
                .iter()
                .map(|c| c.f1 * c.support as f64)
                .sum::<f64>()
                / support.max(1) as f64,
            macro_precision: per_class.iter().map(|c| c.precision).sum::<f64>() / k,
            macro_recall: per_class.iter().map(|c| c.recall).sum::<f64>() / k,
            mcc: 0.0,
            auroc: None,
            confusion: Vec::new(),
            per_class,
            calibration: None,
            summary,
        }
    }
}

/// The per-label thresholds (from 0.05 to 0.95 by 0.05) that maximise each label's F1 on
/// `probs` (`[n][k]` sigmoid probabilities) against `truth`; ties go to the one nearest 0.5.
pub fn tune_thresholds(probs: &[Vec<f32>], truth: &[Vec<f32>]) -> Vec<f32> {
    let k = probs.first().map_or(0, Vec::len);
    (0..k)
        .map(|j| {
            let mut best = (f64::NEG_INFINITY, 0.5f32);
            for step in 1..20 {
                let t = step as f32 * 0.05;
                let (mut tp, mut fp, mut fn_) = (0, 0, 0);
                for (p, y) in probs.iter().zip(truth) {
                    match (p[j] >= t, y[j] >= 0.5) {
                        (true, true) => tp += 1,
                        (true, false) => fp += 1,
                        (false, true) => fn_ += 1,
                        _ => {}
                    }
                }
                let f = f1_of(tp, fp, fn_).2;
                let closer = (t - 0.5).abs() < (best.1 - 0.5).abs();
                if f > best.0 + 1e-12 || ((f - best.0).abs() <= 1e-12 && closer) {
                    best = (f, t);
                }
            }
            best.1
        })
        .collect()
}

/// Regression metrics, streaming: MSE (the loss), MAE and R².
#[derive(Debug, Clone, Default)]
pub struct RegressionAccumulator {
    sse: f64,
    sae: f64,
    sum_y: f64,
    sum_y2: f64,
    n: u64,
}

impl RegressionAccumulator {
    /// Adds one prediction and its target.
    pub fn add(&mut self, pred: f32, target: f32) {
        let (p, y) = (pred as f64, target as f64);
        self.sse += (p - y) * (p - y);
        self.sae += (p - y).abs();
        self.sum_y += y;
        self.sum_y2 += y * y;
        self.n += 1;
    }

    /// MSE, MAE, R² (accuracy and macro-F1 are 0: undefined for regression).
    pub fn metrics(&self) -> EvalMetrics {
        let n = self.n.max(1) as f64;
        let sst = self.sum_y2 - self.sum_y * self.sum_y / n;
        let mse = self.sse / n;
        EvalMetrics {
            accuracy: 0.0,
            macro_f1: 0.0,
            loss: mse,
            n: self.n,
            micro_f1: None,
            mse: Some(mse),
            mae: Some(self.sae / n),
            r2: Some(if sst > 0.0 { 1.0 - self.sse / sst } else { 0.0 }),
        }
    }
}

/// Streaming AUROC: per class, histograms of that class's probability among its positives and
/// its negatives (4096 bins). Memory does not grow with the data; ties within a bin count half.
#[derive(Debug, Clone)]
pub struct RocAccumulator {
    k: usize,
    pos: Vec<u64>,
    neg: Vec<u64>,
}

const BINS: usize = 4096;

impl RocAccumulator {
    /// For `k` classes.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            pos: vec![0; k * BINS],
            neg: vec![0; k * BINS],
        }
    }

    /// Adds one example: its true class and its class probabilities.
    pub fn add(&mut self, truth: usize, probs: &[f32]) {
        for (c, &p) in probs.iter().enumerate().take(self.k) {
            let bin = ((p.clamp(0.0, 1.0) as f64) * (BINS - 1) as f64).round() as usize;
            if c == truth {
                self.pos[c * BINS + bin] += 1;
            } else {
                self.neg[c * BINS + bin] += 1;
            }
        }
    }

    fn class_auc(&self, c: usize) -> Option<f64> {
        let pos = &self.pos[c * BINS..(c + 1) * BINS];
        let neg = &self.neg[c * BINS..(c + 1) * BINS];
        let (np, nn): (u64, u64) = (pos.iter().sum(), neg.iter().sum());
        if np == 0 || nn == 0 {
            return None;
        }
        let (mut below, mut wins) = (0u64, 0f64);
        for b in 0..BINS {
            wins += pos[b] as f64 * (below as f64 + 0.5 * neg[b] as f64);
            below += neg[b];
        }
        Some(wins / (np as f64 * nn as f64))
    }

    /// Binary: AUROC of class 1. Otherwise the one-vs-rest macro average.
    pub fn auroc(&self) -> Option<f64> {
        if self.k == 2 {
            return self.class_auc(1);
        }
        let aucs: Option<Vec<f64>> = (0..self.k).map(|c| self.class_auc(c)).collect();
        aucs.map(|a| a.iter().sum::<f64>() / a.len() as f64)
    }
}

impl Confusion {
    /// The full report, with class names and an optional AUROC accumulator.
    pub fn report(&self, labels: &[String], roc: Option<&RocAccumulator>) -> Report {
        let k = self.k;
        let row = |t: usize| (0..k).map(|p| self.get(t, p)).sum::<u64>();
        let col = |p: usize| (0..k).map(|t| self.get(t, p)).sum::<u64>();
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let per_class: Vec<ClassReport> = (0..k)
            .map(|c| {
                let tp = self.get(c, c);
                let (precision, recall) = (ratio(tp, col(c)), ratio(tp, row(c)));
                let f1 = if precision + recall == 0.0 {
                    0.0
                } else {
                    2.0 * precision * recall / (precision + recall)
                };
                ClassReport {
                    label: labels.get(c).cloned().unwrap_or_else(|| c.to_string()),
                    precision,
                    recall,
                    f1,
                    support: row(c),
                }
            })
            .collect();
        let n = self.n as f64;
        let mean = |f: &dyn Fn(&ClassReport) -> f64| {
            per_class.iter().map(f).sum::<f64>() / k.max(1) as f64
        };
        let weighted_f1 = if self.n == 0 {
            0.0
        } else {
            per_class
                .iter()
                .map(|c| c.f1 * c.support as f64)
                .sum::<f64>()
                / n
        };
        // Gorodkin (2004): MCC = (c·s − Σ p_k t_k) / sqrt((s² − Σ p_k²)(s² − Σ t_k²)).
        let correct: f64 = (0..k).map(|c| self.get(c, c) as f64).sum();
        let (mut pt, mut pp, mut tt) = (0f64, 0f64, 0f64);
        for c in 0..k {
            let (p, t) = (col(c) as f64, row(c) as f64);
            pt += p * t;
            pp += p * p;
            tt += t * t;
        }
        let denom = ((n * n - pp) * (n * n - tt)).sqrt();
        let mcc = if denom == 0.0 {
            0.0
        } else {
            (correct * n - pt) / denom
        };
        Report {
            summary: self.metrics(),
            micro_f1: ratio(correct as u64, self.n),
            weighted_f1,
            macro_precision: mean(&|c| c.precision),
            macro_recall: mean(&|c| c.recall),
            mcc,
            auroc: roc.and_then(RocAccumulator::auroc),
            confusion: (0..k)
                .map(|t| (0..k).map(|p| self.get(t, p)).collect())
                .collect(),
            per_class,
            calibration: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_matches_hand_computation() {
        let mut c = Confusion::new(2);
        for (t, p) in [(0, 0), (0, 0), (0, 1), (1, 1), (1, 0), (1, 0)] {
            c.add(t, p);
        }
        let r = c.report(&["a".into(), "b".into()], None);
        assert_eq!(r.confusion, vec![vec![2, 1], vec![2, 1]]);
        assert!((r.per_class[0].precision - 0.5).abs() < 1e-12);
        assert!((r.per_class[0].recall - 2.0 / 3.0).abs() < 1e-12);
        // binary MCC = (tp·tn − fp·fn)/sqrt(...) with class 1 positive: tp 1, tn 2, fp 1, fn 2
        let mcc = (1.0 * 2.0 - 1.0 * 2.0) / ((2.0f64) * 3.0 * 3.0 * 4.0).sqrt();
        assert!((r.mcc - mcc).abs() < 1e-12, "{} vs {mcc}", r.mcc);
        assert!((r.micro_f1 - 0.5).abs() < 1e-12);
    }

    #[test]
    fn auroc_of_separable_and_random_scores() {
        let mut roc = RocAccumulator::new(2);
        for i in 0..100 {
            let p = i as f32 / 100.0;
            roc.add(usize::from(p >= 0.5), &[1.0 - p, p]);
        }
        assert!((roc.auroc().unwrap() - 1.0).abs() < 1e-9);
        let mut roc = RocAccumulator::new(2);
        for i in 0..100 {
            roc.add(i % 2, &[0.5, 0.5]);
        }
        assert!((roc.auroc().unwrap() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn macro_f1_by_hand() {
        let mut c = Confusion::new(2);
        // truth, pred
        for (t, p) in [(0, 0), (0, 0), (0, 1), (1, 1), (1, 0), (1, 0)] {
            c.add(t, p);
        }
        let m = c.metrics();
        assert!((m.accuracy - 0.5).abs() < 1e-12);
        // class 0: tp 2 fp 2 fn 1 -> 4/7; class 1: tp 1 fp 1 fn 2 -> 2/5
        assert!((m.macro_f1 - (4.0 / 7.0 + 0.4) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn multi_label_and_regression_metrics() {
        let mut m = MultiLabelAccumulator::new(vec![0.5, 0.5]);
        m.add(&[2.0, -2.0], &[1.0, 0.0]); // both right
        m.add(&[2.0, 2.0], &[1.0, 0.0]); // label 1 false positive
        m.add(&[-2.0, -2.0], &[0.0, 1.0]); // label 1 false negative
        let r = m.metrics();
        assert!((r.accuracy - 1.0 / 3.0).abs() < 1e-12);
        // label 0: tp 2 → F1 1; label 1: tp 0 → F1 0.
        assert!((r.macro_f1 - 0.5).abs() < 1e-12);
        // micro: tp 2, fp 1, fn 1 → 2/3.
        assert!((r.micro_f1.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        let t = tune_thresholds(
            &[vec![0.9], vec![0.3], vec![0.2]],
            &[vec![1.0], vec![1.0], vec![0.0]],
        );
        assert!(t[0] > 0.2 && t[0] <= 0.3, "{t:?}");

        let mut g = RegressionAccumulator::default();
        for (p, y) in [(1.0, 1.0), (2.0, 3.0), (3.0, 2.0)] {
            g.add(p, y);
        }
        let r = g.metrics();
        assert!((r.mse.unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert!((r.mae.unwrap() - 2.0 / 3.0).abs() < 1e-9);
        // SST = 2, SSE = 2 → R² = 0.
        assert!(r.r2.unwrap().abs() < 1e-9);
    }
}
