//! Data-parallel training steps on one device: a batch split into row shards whose forward and
//! backward passes run at the same time on rayon's pool.
//!
//! Why: on the CPU backend, burn's matmuls use every core but most element-wise work
//! (activations, softmax, LayerNorm, their backward passes) runs on the calling thread alone,
//! so a single training step leaves cores idle for about half its time. Two shards keep both
//! busy. Each shard runs on its own copy of the model whose parameters are fresh autodiff leaves
//! (same [`ParamId`](burn::module::ParamId)s, shared data), so the shards' graphs stay apart and
//! their backward passes do not serialise on one graph lock. The shards' gradients are summed
//! by parameter id; with each shard's loss weighted by its share of the rows, the sum is the
//! full batch's gradient.
//!
//! Dropout stays deterministic: shard `i` draws its masks from its own region of the dropout
//! stream ([`sequin_encoders::common::with_dropout_region`]), whichever thread runs it.

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Tensor;
use rayon::prelude::*;

/// A copy of `model` whose float parameters are new autodiff leaves: the same ids and data, but
/// no shared graph nodes with `model` or any other copy. Parameters that do not require a
/// gradient stay so.
pub fn detached_copy<M: Module>(model: &M) -> M {
    struct Detach;
    impl ModuleMapper for Detach {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|t| {
                let grad = t.is_require_grad();
                let t = t.detach();
                if grad { t.require_grad() } else { t }
            })
        }
    }
    model.clone().map(&mut Detach)
}

/// Splits `rows` rows into at most `shards` contiguous ranges of near-equal size (none empty).
pub fn split_rows(rows: usize, shards: usize) -> Vec<std::ops::Range<usize>> {
    let shards = shards.clamp(1, rows.max(1));
    let (base, extra) = (rows / shards, rows % shards);
    let mut start = 0;
    (0..shards)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let r = start..start + len;
            start += len;
            r
        })
        .filter(|r| !r.is_empty())
        .collect()
}

/// Runs `step` on every row range of a batch of `rows` rows, `shards` at a time in parallel, and
/// returns the loss values (as `step` returned them) and the summed gradients.
///
/// `step(model, rows, shard_index)` must return the shard's loss *weighted by its share of the
/// batch* (`rows.len() / batch rows` for a mean loss), so that the gradients add up to the full
/// batch's. It runs with shard `shard_index`'s dropout region in force.
pub fn sharded_step<M, F>(
    model: &M,
    rows: usize,
    shards: usize,
    step: F,
) -> Result<(Vec<f32>, GradientsParams), crate::TrainError>
where
    M: Module + Sync,
    F: Fn(&M, std::ops::Range<usize>, usize) -> Result<Tensor<1>, crate::TrainError> + Sync,
{
    let ranges = split_rows(rows, shards);
    let base = sequin_encoders::common::dropout_take_regions(ranges.len());
    let run = |i: usize, range: std::ops::Range<usize>, m: &M| {
        sequin_encoders::common::with_dropout_region(base, i, || {
            let loss = step(m, range, i)?;
            let v: f32 = loss.clone().into_scalar();
            Ok::<_, crate::TrainError>((v, GradientsParams::from_grads(loss.backward(), m)))
        })
    };
    let results: Vec<Result<(f32, GradientsParams), crate::TrainError>> = if ranges.len() == 1 {
        vec![run(0, ranges[0].clone(), model)]
    } else {
        let copies: Vec<M> = ranges.iter().map(|_| detached_copy(model)).collect();
        ranges
            .into_par_iter()
            .zip(copies.par_iter())
            .enumerate()
            .map(|(i, (r, m))| run(i, r, m))
            .collect()
    };
    let mut acc = GradientsAccumulator::new();
    let mut losses = Vec::with_capacity(results.len());
    for r in results {
        let (v, g) = r?;
        losses.push(v);
        acc.accumulate(model, g);
    }
    Ok((losses, acc.grads()))
}

/// Runs `f` on every row range of a batch of `rows` rows, `shards` at a time in parallel, and
/// returns the results in row order (inference: concatenate the shards' logits).
pub fn sharded_map<T, F>(rows: usize, shards: usize, f: F) -> Vec<T>
where
    T: Send,
    F: Fn(std::ops::Range<usize>) -> T + Sync + Send,
{
    split_rows(rows, shards).into_par_iter().map(f).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use burn::module::Module;
    use burn::tensor::{Device, Int, TensorData};
    use sequin_heads::{BertForSequenceClassification, loss};

    /// Every parameter's gradient as plain numbers, by id.
    fn grads_by_param(
        model: &BertForSequenceClassification,
        grads: &GradientsParams,
    ) -> Vec<(String, Vec<f32>)> {
        struct Collect<'a>(&'a GradientsParams, Vec<(String, Vec<f32>)>);
        impl burn::module::ModuleVisitor for Collect<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if let Some(g) = self.0.get::<D>(param.id) {
                    let v: Vec<f32> = g.into_data().try_to_vec::<f32>().unwrap();
                    self.1.push((param.id.to_string(), v));
                }
            }
        }
        let mut c = Collect(grads, Vec::new());
        model.visit(&mut c);
        c.1
    }

    /// A batch's gradient is the same whether it runs whole or as 2 or 3 parallel shards
    /// (dropout off, so only float rounding differs), and the shards' weighted losses add up
    /// to the batch's mean loss.
    #[test]
    fn shards_give_the_batch_gradient() {
        let device = Device::flex().autodiff();
        let config: sequin_encoders::BertConfig = serde_json::from_str(
            r#"{"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 2,
                "num_attention_heads": 2, "intermediate_size": 32,
                "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}"#,
        )
        .unwrap();
        device.seed(3);
        use sequin_heads::Family;
        let model = BertForSequenceClassification::init(&config, 3, &device)
            .unwrap()
            .train();
        let (b, s) = (7, 6);
        let ids: Vec<i64> = (0..b * s).map(|i| (i * 7 % 47 + 1) as i64).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, s]), &device);
        let labels = Tensor::<1, Int>::from_data(
            TensorData::new(vec![0i64, 1, 2, 1, 0, 2, 2], [b]),
            &device,
        );
        let run = |shards: usize| {
            sharded_step(&model, b, shards, |m, rows, _| {
                let share = rows.len() as f64 / b as f64;
                let logits = m.forward(ids.clone().slice(rows.clone()), None, None);
                Ok(loss::cross_entropy(logits, labels.clone().slice(rows)).mul_scalar(share))
            })
            .unwrap()
        };
        let (l1, g1) = run(1);
        let whole = grads_by_param(&model, &g1);
        // Every float parameter has a gradient.
        struct Count(usize);
        impl burn::module::ModuleVisitor for Count {
            fn visit_float<const D: usize>(&mut self, _: &Param<Tensor<D>>) {
                self.0 += 1;
            }
        }
        let mut count = Count(0);
        model.visit(&mut count);
        assert_eq!(whole.len(), count.0);
        for shards in [2, 3] {
            let (l, g) = run(shards);
            assert_eq!(l.len(), shards);
            let total: f32 = l.iter().sum();
            assert!(
                (total - l1[0]).abs() < 1e-5,
                "{shards} shards: loss {total} vs {}",
                l1[0]
            );
            let parts = grads_by_param(&model, &g);
            assert_eq!(parts.len(), whole.len());
            for ((id, a), (id2, b)) in whole.iter().zip(&parts) {
                assert_eq!(id, id2);
                let scale = a.iter().fold(1e-3f32, |m, x| m.max(x.abs()));
                for (x, y) in a.iter().zip(b) {
                    assert!(
                        (x - y).abs() <= 1e-4 * scale,
                        "{shards} shards, param {id}: {x} vs {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn rows_split_evenly_and_cover_the_batch() {
        assert_eq!(split_rows(32, 2), vec![0..16, 16..32]);
        assert_eq!(split_rows(5, 2), vec![0..3, 3..5]);
        assert_eq!(split_rows(1, 2), vec![0..1]);
        assert_eq!(split_rows(7, 1), vec![0..7]);
        assert_eq!(split_rows(0, 2), Vec::<std::ops::Range<usize>>::new());
    }
}
