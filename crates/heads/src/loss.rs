//! Losses for HF's problem types, with HF's reductions (mean over the batch).

use burn::tensor::activation::{log_sigmoid, log_softmax};
use burn::tensor::{Int, Tensor};

/// Mean cross-entropy of `logits` `[batch, classes]` against class ids `[batch]`.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [b, _] = logits.dims();
    let logp = log_softmax(logits, 1);
    logp.gather(1, targets.reshape([b, 1])).mean().neg()
}

/// Mean binary cross-entropy with logits over every element (multi-label).
pub fn bce_with_logits(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
    let pos = log_sigmoid(logits.clone());
    let neg = log_sigmoid(logits.neg());
    (targets.clone() * pos + (targets.neg() + 1.0) * neg)
        .mean()
        .neg()
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
