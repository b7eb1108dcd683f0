//! Records → tensors.

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use rand::seq::SliceRandom;
use sequin_tokenize::{EncodeOptions, Encoded, LongText, Tokenizer};

use crate::{Record, Result, Seeds};

/// A tokenized, padded batch on a device.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    /// `[batch, seq]`
    pub input_ids: Tensor<2, Int>,
    /// `[batch, seq]`
    pub token_type_ids: Tensor<2, Int>,
    /// `[batch, seq]`, `true` = padding (burn convention).
    pub pad_mask: Tensor<2, Bool>,
    /// `[documents]` class ids, when the records were labelled.
    pub labels: Option<Tensor<1, Int>>,
    /// Rows per document, in order, when a document was split into several windows
    /// (`None`: one row per document).
    pub chunks: Option<Vec<usize>>,
}

/// HF attention mask (1 = real token) → burn pad mask (`true` = padding).
///
/// This is the only place in sequin where the two conventions meet.
pub fn to_pad_mask(
    attention_mask: &[u32],
    rows: usize,
    seq_len: usize,
    device: &Device,
) -> Tensor<2, Bool> {
    let pad: Vec<bool> = attention_mask.iter().map(|&m| m == 0).collect();
    Tensor::from_data(TensorData::new(pad, [rows, seq_len]), device)
}

fn int_tensor(v: &[u32], rows: usize, seq_len: usize, device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = v.iter().map(|&x| x as i64).collect();
    Tensor::from_data(TensorData::new(data, [rows, seq_len]), device)
}

/// Documents as the rows a model reads: one row per document, or its windows under a
/// long-text policy. Training batches ([`EncodedBatch::new_long`]) and inference (which runs
/// the rows in bounded batches) tokenise documents through this one function.
#[derive(Debug, Clone, Default)]
pub struct DocumentRows {
    /// Every document's rows, in document order.
    pub rows: Vec<Encoded>,
    /// Rows per document.
    pub counts: Vec<usize>,
}

impl DocumentRows {
    /// Tokenises `records` under `policy`.
    pub fn encode(
        tokenizer: &Tokenizer,
        records: &[&Record],
        opts: EncodeOptions,
        policy: LongText,
    ) -> Result<Self> {
        let mut docs = Self {
            rows: Vec::with_capacity(records.len()),
            counts: Vec::with_capacity(records.len()),
        };
        for r in records {
            let e = tokenizer.encode_long(&r.text, r.text_pair.as_deref(), opts, policy)?;
            docs.counts.push(e.len());
            docs.rows.extend(e);
        }
        Ok(docs)
    }

    /// The document of every row.
    pub fn row_documents(&self) -> Vec<usize> {
        self.counts
            .iter()
            .enumerate()
            .flat_map(|(d, &n)| std::iter::repeat_n(d, n))
            .collect()
    }
}

impl EncodedBatch {
    /// Tokenizes `records` (padded to the longest row) and moves them to `device`.
    pub fn new(
        tokenizer: &Tokenizer,
        records: &[&Record],
        labels: Option<&[usize]>,
        opts: EncodeOptions,
        device: &Device,
    ) -> Result<Self> {
        let items: Vec<(&str, Option<&str>)> = records
            .iter()
            .map(|r| (r.text.as_str(), r.text_pair.as_deref()))
            .collect();
        let b = tokenizer.encode_batch(&items, opts)?;
        Ok(Self::from_padded(&b, labels, None, device))
    }

    /// As [`EncodedBatch::new`], under a long-text policy: with `chunk`, a document becomes
    /// several rows and [`EncodedBatch::chunks`] says how many.
    pub fn new_long(
        tokenizer: &Tokenizer,
        records: &[&Record],
        labels: Option<&[usize]>,
        opts: EncodeOptions,
        policy: LongText,
        device: &Device,
    ) -> Result<Self> {
        if policy == LongText::Truncate {
            return Self::new(tokenizer, records, labels, opts, device);
        }
        let docs = DocumentRows::encode(tokenizer, records, opts, policy)?;
        let refs: Vec<&Encoded> = docs.rows.iter().collect();
        let b = tokenizer.pad(&refs, opts.pad_to_multiple_of);
        let split = matches!(policy, LongText::Chunk { .. });
        Ok(Self::from_padded(
            &b,
            labels,
            split.then_some(docs.counts),
            device,
        ))
    }

    /// Float targets `[rows, k]` (multi-hot labels, or regression values with k = 1).
    pub fn float_targets(rows: &[Vec<f32>], device: &Device) -> Tensor<2> {
        let k = rows.first().map_or(0, Vec::len);
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), k]), device)
    }

    /// A batch of already encoded rows (windows of documents, say), padded to the longest.
    pub fn from_rows(
        tokenizer: &Tokenizer,
        rows: &[&Encoded],
        pad_to_multiple_of: Option<usize>,
        device: &Device,
    ) -> Self {
        let b = tokenizer.pad(rows, pad_to_multiple_of);
        Self::from_padded(&b, None, None, device)
    }

    fn from_padded(
        b: &sequin_tokenize::Batch,
        labels: Option<&[usize]>,
        chunks: Option<Vec<usize>>,
        device: &Device,
    ) -> Self {
        Self {
            input_ids: int_tensor(&b.input_ids, b.rows, b.seq_len, device),
            token_type_ids: int_tensor(&b.token_type_ids, b.rows, b.seq_len, device),
            pad_mask: to_pad_mask(&b.attention_mask, b.rows, b.seq_len, device),
            labels: labels.map(|l| {
                let data: Vec<i64> = l.iter().map(|&x| x as i64).collect();
                Tensor::from_data(TensorData::new(data, [l.len()]), device)
            }),
            chunks,
        }
    }
}

/// A permutation of `0..n`, determined by `seed` and `epoch` alone.
pub fn shuffled_indices(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut Seeds::new(seed).epoch_order(epoch));
    idx
}

/// Batches for one epoch, grouped by length so that little padding is needed: a seeded
/// shuffle, then windows of 50 batches sorted by length, cut into batches, and the batches
/// shuffled again (as transformers' `group_by_length` / length-grouped sampler does).
/// Every index appears exactly once; the result depends only on `seed` and `epoch`.
pub fn length_grouped_batches(
    lengths: &[usize],
    batch_size: usize,
    seed: u64,
    epoch: usize,
) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let order = shuffled_indices(lengths.len(), seed, epoch);
    let mut batches: Vec<Vec<usize>> = Vec::with_capacity(lengths.len().div_ceil(batch_size));
    for window in order.chunks(batch_size * 50) {
        let mut w = window.to_vec();
        w.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
        batches.extend(w.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches.shuffle(&mut Seeds::new(seed).length_batches(epoch));
    batches
}

#[cfg(test)]
mod tests {
    #[test]
    fn length_groups_cover_everything_once_and_pad_little() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 7919) % 300).collect();
        let b = length_grouped_batches(&lengths, 32, 3, 1);
        assert_eq!(b, length_grouped_batches(&lengths, 32, 3, 1));
        let mut all: Vec<usize> = b.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        let padded: usize = b
            .iter()
            .map(|x| x.iter().map(|&i| lengths[i]).max().unwrap() * x.len())
            .sum();
        let random: usize = shuffled_indices(1000, 3, 1)
            .chunks(32)
            .map(|x| x.iter().map(|&i| lengths[i]).max().unwrap() * x.len())
            .sum();
        assert!(
            padded * 10 < random * 8,
            "grouping saves little: {padded} vs {random}"
        );
    }

    use super::*;

    #[test]
    fn shuffle_is_seeded() {
        assert_eq!(shuffled_indices(50, 7, 1), shuffled_indices(50, 7, 1));
        assert_ne!(shuffled_indices(50, 7, 1), shuffled_indices(50, 7, 2));
        let mut s = shuffled_indices(50, 7, 1);
        s.sort();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn pad_mask_inverts_attention_mask() {
        let d = Device::flex();
        let m = to_pad_mask(&[1, 1, 0, 1, 0, 0], 2, 3, &d);
        let v: Vec<bool> = m.into_data().try_into_vec_as().unwrap();
        assert_eq!(v, vec![false, false, true, false, true, true]);
    }
}
