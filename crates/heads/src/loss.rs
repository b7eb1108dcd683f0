//! Losses for HF's problem types, with HF's reductions (mean over the batch).

use burn::tensor::activation::{log_sigmoid, log_softmax};
use burn::tensor::{Int, Tensor};

/// Mean cross-entropy of `logits` `[batch, classes]` against class ids `[batch]`.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [b, _] = logits.dims();
    let logp = log_softmax(logits, 1);
    logp.gather(1, targets.reshape([b, 1])).mean().neg()
}

/// Class-weighted cross-entropy, as `torch.nn.CrossEntropyLoss(weight=w)`:
/// `Σ w[yᵢ]·(−log pᵢ[yᵢ]) / Σ w[yᵢ]`.
pub fn weighted_cross_entropy(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    weights: Tensor<1>,
) -> Tensor<1> {
    let [b, _] = logits.dims();
    let logp = log_softmax(logits, 1)
        .gather(1, targets.clone().reshape([b, 1]))
        .reshape([b]);
    let w = weights.gather(0, targets);
    (logp * w.clone()).sum().neg() / w.sum()
}

/// Focal loss (Lin et al. 2017): `−αᵧ·(1 − p_y)^γ·log p_y`, averaged as
/// [`weighted_cross_entropy`] averages (`α` = class weights, or 1). `γ = 0` is cross-entropy.
pub fn focal(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    gamma: f64,
    weights: Option<Tensor<1>>,
) -> Tensor<1> {
    let [b, _] = logits.dims();
    let logp = log_softmax(logits, 1)
        .gather(1, targets.clone().reshape([b, 1]))
        .reshape([b]);
    let modulator = (logp.clone().exp().neg() + 1.0)
        .clamp_min(0.0)
        .powf_scalar(gamma);
    let per = logp * modulator;
    match weights {
        Some(w) => {
            let w = w.gather(0, targets);
            (per * w.clone()).sum().neg() / w.sum()
        }
        None => per.mean().neg(),
    }
}

/// Binary cross-entropy with logits and a weight on each label's positives, as
/// `torch.nn.BCEWithLogitsLoss(pos_weight=w)`; mean over every element.
pub fn bce_with_logits_pos_weight(
    logits: Tensor<2>,
    targets: Tensor<2>,
    pos_weight: Tensor<1>,
) -> Tensor<2> {
    let [b, k] = logits.dims();
    let pos = log_sigmoid(logits.clone());
    let neg = log_sigmoid(logits.neg());
    let pw = pos_weight.reshape([1, k]).expand([b, k]);
    (targets.clone() * pw * pos + (targets.neg() + 1.0) * neg).neg()
}

/// Mean binary cross-entropy with logits over every element (multi-label).
pub fn bce_with_logits(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
    let pos = log_sigmoid(logits.clone());
    let neg = log_sigmoid(logits.neg());
    (targets.clone() * pos + (targets.neg() + 1.0) * neg)
        .mean()
        .neg()
}

/// Cross-entropy against soft targets `[batch, classes]` (rows summing to 1), as
/// `torch.nn.CrossEntropyLoss` with probability targets: with class weights `w`,
/// `Σᵢ Σ_c w_c·yᵢc·(−log pᵢc) / Σᵢ Σ_c w_c·yᵢc` (for one-hot rows, [`weighted_cross_entropy`]);
/// without, the mean over the batch of `Σ_c yᵢc·(−log pᵢc)`. Mixup's loss.
pub fn soft_cross_entropy(
    logits: Tensor<2>,
    targets: Tensor<2>,
    weights: Option<Tensor<1>>,
) -> Tensor<1> {
    let [b, k] = logits.dims();
    let logp = log_softmax(logits, 1);
    match weights {
        Some(w) => {
            let wy = targets * w.reshape([1, k]).expand([b, k]);
            (logp * wy.clone()).sum().neg() / wy.sum()
        }
        None => (logp * targets).sum().neg().div_scalar(b as f64),
    }
}

/// Mean squared error (regression).
pub fn mse(pred: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
    (pred - targets).powi_scalar(2).mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn weighted_and_focal_losses() {
        let d = Device::flex();
        let logits =
            Tensor::<2>::from_data(TensorData::from([[1.0f32, 2.0, 0.5], [0.0, 0.0, 0.0]]), &d);
        let t = Tensor::<1, Int>::from_data(TensorData::from([1i64, 2]), &d);
        let l0 = -(2.0f32 - (1f32.exp() + 2f32.exp() + 0.5f32.exp()).ln());
        let l1 = (3f32).ln();
        let w = Tensor::<1>::from_data(TensorData::from([1.0f32, 2.0, 3.0]), &d);
        let got: f32 = weighted_cross_entropy(logits.clone(), t.clone(), w.clone()).into_scalar();
        assert!((got - (2.0 * l0 + 3.0 * l1) / 5.0).abs() < 1e-6, "{got}");
        // γ = 0 is cross-entropy; γ = 2 scales each term by (1 − p)².
        let ce: f32 = cross_entropy(logits.clone(), t.clone()).into_scalar();
        let f0: f32 = focal(logits.clone(), t.clone(), 0.0, None).into_scalar();
        assert!((ce - f0).abs() < 1e-6);
        let (p0, p1) = ((-l0).exp(), (-l1).exp());
        let want = ((1.0 - p0).powi(2) * l0 + (1.0 - p1).powi(2) * l1) / 2.0;
        let f2: f32 = focal(logits.clone(), t.clone(), 2.0, None).into_scalar();
        assert!((f2 - want).abs() < 1e-6, "{f2} vs {want}");
        // pos_weight 1 is plain BCE.
        let y = Tensor::<2>::from_data(TensorData::from([[1.0f32, 0.0, 1.0], [0.0, 1.0, 0.0]]), &d);
        let ones = Tensor::<1>::ones([3], &d);
        let a: f32 = bce_with_logits(logits.clone(), y.clone()).into_scalar();
        let b: f32 = bce_with_logits_pos_weight(logits, y, ones)
            .mean()
            .into_scalar();
        assert!((a - b).abs() < 1e-6);
    }

    #[test]
    fn soft_cross_entropy_of_one_hot_rows_is_cross_entropy() {
        let d = Device::flex();
        let logits =
            Tensor::<2>::from_data(TensorData::from([[1.0f32, 2.0, 0.5], [0.0, 0.3, 0.0]]), &d);
        let t = Tensor::<1, Int>::from_data(TensorData::from([1i64, 2]), &d);
        let y = Tensor::<2>::from_data(TensorData::from([[0.0f32, 1.0, 0.0], [0.0, 0.0, 1.0]]), &d);
        let w = Tensor::<1>::from_data(TensorData::from([1.0f32, 2.0, 3.0]), &d);
        let a: f32 = cross_entropy(logits.clone(), t.clone()).into_scalar();
        let b: f32 = soft_cross_entropy(logits.clone(), y.clone(), None).into_scalar();
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        let a: f32 = weighted_cross_entropy(logits.clone(), t, w.clone()).into_scalar();
        let b: f32 = soft_cross_entropy(logits.clone(), y, Some(w)).into_scalar();
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        // A 0.3/0.7 mix is the 0.3/0.7 mix of the two losses.
        let y0 = Tensor::<2>::from_data(TensorData::from([[0.3f32, 0.7, 0.0]]), &d);
        let l = logits.slice([0..1, 0..3]);
        let got: f32 = soft_cross_entropy(l.clone(), y0, None).into_scalar();
        let z = (1f32.exp() + 2f32.exp() + 0.5f32.exp()).ln();
        let want = 0.3 * (z - 1.0) + 0.7 * (z - 2.0);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn cross_entropy_matches_hand_computation() {
        let d = Device::flex();
        let logits =
            Tensor::<2>::from_data(TensorData::from([[1.0f32, 2.0, 0.5], [0.0, 0.0, 0.0]]), &d);
        let t = Tensor::<1, Int>::from_data(TensorData::from([1i64, 2]), &d);
        let got: f32 = cross_entropy(logits, t).into_scalar();
        let l0 = -(2.0f32 - (1f32.exp() + 2f32.exp() + 0.5f32.exp()).ln());
        let l1 = (3f32).ln();
        assert!((got - (l0 + l1) / 2.0).abs() < 1e-6, "{got}");
    }
}
