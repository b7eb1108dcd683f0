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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
