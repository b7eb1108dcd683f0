//! Longformer: `transformers.LongformerForSequenceClassification`.

use burn::module::Module;
use burn::tensor::{Bool, Device, Int, Tensor};
use sequin_encoders::{EncoderError, LongformerConfig, LongformerModel};

use super::roberta::RobertaClassificationHead;
use super::{CheckpointKeys, Family, Inputs};

/// `transformers.LongformerForSequenceClassification`: RoBERTa's head on `<s>`, with global
/// attention on `<s>` unless the caller gives a global-attention mask.
#[derive(Module, Debug)]
pub struct LongformerForSequenceClassification {
    /// `longformer`: the encoder, without pooler.
    pub longformer: LongformerModel,
    /// `classifier`
    pub classifier: RobertaClassificationHead,
}

impl LongformerForSequenceClassification {
    /// Logits with a caller-given global-attention mask (`None`: the first token).
    ///
    /// # Shapes
    /// - input_ids, token_type_ids, pad_mask (true = pad), global_mask (true = global):
    ///   `[batch, seq]`
    /// - output: logits `[batch, num_labels]`
    pub fn forward_with_global(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
        pad_mask: Option<Tensor<2, Bool>>,
        global_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<2> {
        let hidden = self
            .longformer
            .forward(input_ids, token_type_ids, pad_mask, global_mask);
        self.classifier.forward(hidden)
    }
}

impl Family for LongformerForSequenceClassification {
    type Config = LongformerConfig;
    const MODEL_TYPES: &'static [(&'static str, &'static str)] =
        &[("longformer", "LongformerForSequenceClassification")];
    const KEYS: CheckpointKeys = CheckpointKeys {
        prefix: "longformer",
        base_roots: "embeddings|encoder|pooler",
        head: &["classifier."],
        head_rows: "classifier.out_proj.weight",
        fresh_ok: &[],
        ignored: &["lm_head.", "longformer.pooler."],
        bare_pooler_unused: true,
    };

    fn check(config: &LongformerConfig) -> Result<(), EncoderError> {
        config.validate()
    }
    fn max_length(config: &LongformerConfig) -> usize {
        config.max_length()
    }
    fn vocab_size(config: &LongformerConfig) -> usize {
        config.bert.vocab_size
    }
    fn init(
        config: &LongformerConfig,
        num_labels: usize,
        device: &Device,
    ) -> Result<Self, EncoderError> {
        Ok(Self {
            longformer: config.init(device)?,
            classifier: RobertaClassificationHead::new(&config.bert, num_labels, device),
        })
    }
    fn num_labels(&self) -> usize {
        self.classifier.out_proj.weight.dims()[1]
    }
    fn pooled_size(&self) -> usize {
        self.classifier.out_proj.weight.dims()[0]
    }
    /// With global attention on the first token.
    fn pooled(&self, x: Inputs) -> Tensor<2> {
        let hidden = self.longformer.forward(x.ids, x.token_types, x.pad, None);
        self.classifier.pool(hidden)
    }
    fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.classifier.classify(pooled)
    }
}
