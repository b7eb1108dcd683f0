//! SetFit's contrastive pairs, as the `setfit` library builds them (`ContrastiveDataset`):
//! every unordered combination of two training examples, the example with itself included, in
//! a seeded shuffle; a pair is positive (target 1) when its examples share a label and negative
//! (0) otherwise. `num_iterations × n` pairs of each kind are taken, cycling through each list
//! when it is shorter, and positives and negatives alternate.
//!
//! Indices only: this module knows nothing of texts or tensors.

use rand::SeedableRng;
use rand::seq::SliceRandom;

/// One contrastive pair: two example indices and the cosine similarity to learn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    /// The first example.
    pub a: usize,
    /// The second example.
    pub b: usize,
    /// 1 when the examples share a label, else 0.
    pub target: f32,
}

/// The pairs of a run and how they were drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct PairPlan {
    /// Positive and negative pairs, alternating.
    pub pairs: Vec<Pair>,
    /// Distinct positive pairs the data has.
    pub unique_positive: usize,
    /// Distinct negative pairs the data has.
    pub unique_negative: usize,
    /// Pairs of each kind taken (`num_iterations × n`).
    pub per_kind: usize,
}

impl PairPlan {
    /// What a run says when it takes more pairs of a kind than the data has: they are reused
    /// in turn (as the `setfit` library does). `None` when every pair taken is distinct.
    pub fn reuse_note(&self) -> Option<String> {
        let short = self.per_kind > self.unique_positive.min(self.unique_negative);
        short.then(|| {
            format!(
                "{} pairs of each kind asked for, but the data has {} distinct positive and {} distinct negative pairs: each is used in turn, about {:.1} and {:.1} times",
                self.per_kind,
                self.unique_positive,
                self.unique_negative,
                self.per_kind as f64 / self.unique_positive.max(1) as f64,
                self.per_kind as f64 / self.unique_negative.max(1) as f64,
            )
        })
    }
}

/// The pairs for examples with these label sets (one class id per example for single-label
/// data, several for multi-label; a pair is positive when the sets intersect).
/// Deterministic in `seed`. `labels` must hold at least one positive and one negative pair
/// (see [`super::check_classes`]).
pub fn contrastive_pairs(labels: &[Vec<usize>], num_iterations: usize, seed: u64) -> PairPlan {
    let n = labels.len();
    let mut combos: Vec<(usize, usize)> =
        (0..n).flat_map(|i| (i..n).map(move |j| (i, j))).collect();
    combos.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for (a, b) in combos {
        let shared = labels[a].iter().any(|l| labels[b].contains(l));
        match shared {
            true => pos.push(Pair { a, b, target: 1.0 }),
            false => neg.push(Pair { a, b, target: 0.0 }),
        }
    }
    let per_kind = num_iterations * n;
    let mut pairs = Vec::with_capacity(2 * per_kind);
    if !pos.is_empty() && !neg.is_empty() {
        for i in 0..per_kind {
            pairs.push(pos[i % pos.len()]);
            pairs.push(neg[i % neg.len()]);
        }
    }
    PairPlan {
        pairs,
        unique_positive: pos.len(),
        unique_negative: neg.len(),
        per_kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(ids: &[usize]) -> Vec<Vec<usize>> {
        ids.iter().map(|&i| vec![i]).collect()
    }

    #[test]
    fn pairs_are_balanced_labelled_right_and_deterministic() {
        let labels = single(&[0, 0, 0, 1, 1, 2, 2, 2]);
        let plan = contrastive_pairs(&labels, 5, 7);
        assert_eq!(plan.per_kind, 40);
        assert_eq!(plan.pairs.len(), 80);
        // 36 combinations with replacement: 6 + 3 + 6 same-label, 21 across.
        assert_eq!((plan.unique_positive, plan.unique_negative), (15, 21));
        let positives = plan.pairs.iter().filter(|p| p.target == 1.0).count();
        assert_eq!(positives, 40, "as many positive as negative pairs");
        for (i, p) in plan.pairs.iter().enumerate() {
            assert_eq!(
                p.target == 1.0,
                i % 2 == 0,
                "positives and negatives alternate"
            );
            assert_eq!(p.target == 1.0, labels[p.a] == labels[p.b], "{p:?}");
        }
        assert_eq!(
            plan,
            contrastive_pairs(&labels, 5, 7),
            "same seed, same pairs"
        );
        assert_ne!(plan.pairs, contrastive_pairs(&labels, 5, 8).pairs);
        assert!(plan.reuse_note().unwrap().contains("15 distinct positive"));
    }

    #[test]
    fn every_distinct_pair_is_used_before_any_repeats() {
        let labels = single(&[0, 0, 1, 1, 0, 1]);
        let plan = contrastive_pairs(&labels, 1, 3);
        // 21 combinations: 12 positive (6 + 6, self-pairs included), 9 negative; 6 of each
        // taken, all distinct.
        assert_eq!((plan.unique_positive, plan.unique_negative), (12, 9));
        let taken: std::collections::HashSet<(usize, usize)> =
            plan.pairs.iter().map(|p| (p.a, p.b)).collect();
        assert_eq!(taken.len(), 12);
        assert!(plan.reuse_note().is_none());
    }

    #[test]
    fn multi_label_pairs_are_positive_when_the_sets_meet() {
        let labels = vec![vec![0, 1], vec![1], vec![2], vec![0, 2]];
        let plan = contrastive_pairs(&labels, 2, 1);
        for p in &plan.pairs {
            let meet = labels[p.a].iter().any(|l| labels[p.b].contains(l));
            assert_eq!(p.target == 1.0, meet);
        }
        assert_eq!(plan.pairs.len(), 16);
    }
}
