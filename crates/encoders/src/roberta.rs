//! RoBERTa (and XLM-RoBERTa, the same code), as `transformers`' `RobertaModel`.
//!
//! The architecture is BERT's, with two differences that matter for parity: position ids start
//! at `padding_idx + 1` and skip padding tokens, and sequence classification uses no pooler.
//! Checkpoint keys are BERT's under `roberta.`.

use burn::module::Module;
use burn::tensor::{Bool, Device, Int, Tensor};

use crate::EncoderError;
use crate::bert::{BertConfig, BertEmbeddings, BertEncoder};

/// RoBERTa's `config.json` has BERT's fields (`pad_token_id` is the padding index).
pub type RobertaConfig = BertConfig;

impl BertConfig {
    /// Builds a randomly initialised [`RobertaModel`] (no pooler).
    pub fn init_roberta(&self, device: &Device) -> Result<RobertaModel, EncoderError> {
        if self.max_position_embeddings <= self.pad_token_id + 1 {
            return Err(EncoderError::Config(format!(
                "max_position_embeddings {} leaves no positions after padding_idx {}",
                self.max_position_embeddings, self.pad_token_id
            )));
        }
        let (embeddings, encoder) = self.init_parts(Some(self.pad_token_id), device)?;
        Ok(RobertaModel {
            embeddings,
            encoder,
        })
    }

    /// The longest input (special tokens included) RoBERTa's position table allows.
    pub fn roberta_max_length(&self) -> usize {
        self.max_position_embeddings
            .saturating_sub(self.pad_token_id + 1)
    }
}

/// `transformers.RobertaModel` without its pooler (`add_pooling_layer=False`).
#[derive(Module, Debug)]
pub struct RobertaModel {
    /// `embeddings`
    pub embeddings: BertEmbeddings,
    /// `encoder`
    pub encoder: BertEncoder,
}

impl RobertaModel {
    /// The last hidden state, `[batch, seq, hidden]`, as [`crate::BertModel::forward`] (with
    /// RoBERTa's positions).
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
        pad_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<3> {
        crate::bert::encode(
            &self.embeddings,
            &self.encoder,
            input_ids,
            token_type_ids,
            pad_mask,
        )
    }
}
