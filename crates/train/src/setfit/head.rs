//! SetFit's second stage: a logistic regression on the frozen sentence embeddings, as the
//! `setfit` library fits scikit-learn's `LogisticRegression()` (L2, C = 1, lbfgs): binary for
//! two classes, multinomial for more, one binary regression per label for multi-label data.
//! The solver is linfa's (L-BFGS through argmin); its objective, `Σ log-loss + α/2·‖W‖²` with
//! α = 1/C and the intercept unpenalised, is scikit-learn's.
//!
//! The result is a linear layer's weights in torch layout: `weight [labels, dim]`, `bias
//! [labels]`, giving logits whose softmax (sigmoid for multi-label) is the regression's
//! probabilities. A binary regression's single vector becomes the rows `[0, w]`, so that
//! `softmax([0, z]) = sigmoid(z)`.

use linfa::prelude::*;
use linfa_logistic::{LogisticRegression, MultiLogisticRegression};
use ndarray::{Array1, Array2};

use crate::{Result, TrainError};

/// A fitted linear head in torch layout.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearFit {
    /// `[labels, dim]`, row-major.
    pub weight: Vec<f32>,
    /// `[labels]`.
    pub bias: Vec<f32>,
}

/// The regression's settings.
#[derive(Debug, Clone, Copy)]
pub struct RegressionOptions {
    /// Inverse regularisation strength (scikit-learn's `C`).
    pub c: f64,
    /// L-BFGS iterations at most (scikit-learn's `max_iter`, 100).
    pub max_iterations: u64,
}

fn matrix(x: &[Vec<f32>]) -> Array2<f64> {
    let d = x.first().map_or(0, |r| r.len());
    Array2::from_shape_fn((x.len(), d), |(i, j)| x[i][j] as f64)
}

fn fit_error(e: impl std::fmt::Display) -> TrainError {
    TrainError::Config(format!("the SetFit head's logistic regression failed: {e}"))
}

/// One binary regression of `y` (true = positive) on `x`: `(w, b)`.
fn binary(x: &Array2<f64>, y: &[bool], o: RegressionOptions) -> Result<(Vec<f64>, f64)> {
    let targets: Array1<usize> = y.iter().map(|&p| p as usize).collect();
    let data = Dataset::new(x.clone(), targets);
    let fit = LogisticRegression::default()
        .alpha(1.0 / o.c)
        .max_iterations(o.max_iterations)
        .fit(&data)
        .map_err(fit_error)?;
    // linfa's "positive" class is the larger label, 1 here; flip if it is not.
    let sign = if fit.labels().pos.class == 1 {
        1.0
    } else {
        -1.0
    };
    Ok((
        fit.params().iter().map(|w| sign * w).collect(),
        sign * fit.intercept(),
    ))
}

/// Single-label data: class ids `y` in `0..k`, every class present.
pub fn fit_single_label(
    x: &[Vec<f32>],
    y: &[usize],
    k: usize,
    o: RegressionOptions,
) -> Result<LinearFit> {
    let xm = matrix(x);
    let d = xm.ncols();
    if k == 2 {
        let (w, b) = binary(&xm, &y.iter().map(|&c| c == 1).collect::<Vec<_>>(), o)?;
        let mut weight = vec![0f32; d];
        weight.extend(w.iter().map(|&v| v as f32));
        return Ok(LinearFit {
            weight,
            bias: vec![0.0, b as f32],
        });
    }
    let targets: Array1<usize> = y.iter().copied().collect();
    let fit = MultiLogisticRegression::default()
        .alpha(1.0 / o.c)
        .max_iterations(o.max_iterations)
        .fit(&Dataset::new(xm, targets))
        .map_err(fit_error)?;
    // params: [dim, classes] in the order of `classes()` (sorted ids, all present).
    let classes = fit.classes().to_vec();
    if classes != (0..k).collect::<Vec<_>>() {
        return Err(fit_error(format!("classes {classes:?}, expected 0..{k}")));
    }
    let p = fit.params();
    let mut weight = Vec::with_capacity(k * d);
    for c in 0..k {
        weight.extend((0..d).map(|j| p[[j, c]] as f32));
    }
    Ok(LinearFit {
        weight,
        bias: fit.intercept().iter().map(|&b| b as f32).collect(),
    })
}

/// Multi-label data: `y[i][l]` = 1 when example `i` has label `l`; one binary regression
/// per label (one-vs-rest).
pub fn fit_multi_label(
    x: &[Vec<f32>],
    y: &[Vec<f32>],
    k: usize,
    o: RegressionOptions,
) -> Result<LinearFit> {
    let xm = matrix(x);
    let (mut weight, mut bias) = (Vec::new(), Vec::new());
    for l in 0..k {
        let (w, b) = binary(&xm, &y.iter().map(|r| r[l] > 0.5).collect::<Vec<_>>(), o)?;
        weight.extend(w.iter().map(|&v| v as f32));
        bias.push(b as f32);
    }
    Ok(LinearFit { weight, bias })
}

#[cfg(test)]
mod tests {
    use super::*;

    const O: RegressionOptions = RegressionOptions {
        c: 1.0,
        max_iterations: 200,
    };

    fn logits(f: &LinearFit, x: &[f32]) -> Vec<f32> {
        let d = x.len();
        f.bias
            .iter()
            .enumerate()
            .map(|(c, b)| b + (0..d).map(|j| f.weight[c * d + j] * x[j]).sum::<f32>())
            .collect()
    }

    fn argmax(v: &[f32]) -> usize {
        (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap()
    }

    /// Separable blobs: the fitted head classifies its own training points.
    #[test]
    fn binary_and_multinomial_heads_separate_blobs() {
        for k in [2usize, 3] {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            for i in 0..30 {
                let c = i % k;
                let jitter = (i as f32 * 0.37).sin() * 0.3;
                let mut v = vec![0.0f32; 4];
                v[c] = 3.0 + jitter;
                v[3] = jitter;
                x.push(v);
                y.push(c);
            }
            let f = fit_single_label(&x, &y, k, O).unwrap();
            assert_eq!((f.weight.len(), f.bias.len()), (k * 4, k));
            for (v, &c) in x.iter().zip(&y) {
                assert_eq!(argmax(&logits(&f, v)), c, "k = {k}");
            }
        }
    }

    /// A binary head's first row is zero: softmax([0, z]) is the regression's sigmoid(z).
    #[test]
    fn a_binary_head_is_the_logistic_regression() {
        let x: Vec<Vec<f32>> = (0..20).map(|i| vec![i as f32 / 10.0 - 1.0]).collect();
        let y: Vec<usize> = (0..20).map(|i| usize::from(i >= 10)).collect();
        let f = fit_single_label(&x, &y, 2, O).unwrap();
        assert_eq!((f.weight[0], f.bias[0]), (0.0, 0.0));
        assert!(f.weight[1] > 0.0, "larger x, class 1");
        let m = fit_multi_label(
            &x,
            &y.iter().map(|&c| vec![c as f32]).collect::<Vec<_>>(),
            1,
            O,
        )
        .unwrap();
        assert!((m.weight[0] - f.weight[1]).abs() < 1e-4 && (m.bias[0] - f.bias[1]).abs() < 1e-4);
    }
}
