//! Classification heads for sequin, each exactly as its `transformers` counterpart, plus the
//! losses of HF's three `problem_type`s.
//!
//! Heads return logits, never probabilities. This crate knows nothing of strings or files.

#![allow(non_snake_case)]

pub mod fusion;
pub mod loss;

pub use fusion::{FusionConfig, FusionHead, FusionMethod};

use burn::module::{Module, Param};
use burn::nn::LayerNorm;
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::activation::{relu, tanh};
use burn::tensor::{Bool, Device, Int, Tensor};
use sequin_encoders::common::{dropout, first_token};
use sequin_encoders::modernbert::Pooling;
use sequin_encoders::{
    Activation, BertConfig, BertModel, DistilBertConfig, DistilBertModel, EncoderError,
    LongformerConfig, LongformerModel, ModernBertConfig, ModernBertModel, RobertaModel,
};
use serde::{Deserialize, Serialize};

/// How the logits of a document's windows become the document's logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregate {
    /// Mean of the windows' logits.
    #[default]
    Mean,
    /// Element-wise maximum of the windows' logits.
    Max,
}

/// Aggregates window logits `[rows, k]` into document logits `[documents, k]`, where
/// `chunks[d]` consecutive rows belong to document `d`. Differentiable.
pub fn aggregate_chunks(logits: Tensor<2>, chunks: &[usize], how: Aggregate) -> Tensor<2> {
    let [rows, k] = logits.dims();
    debug_assert_eq!(chunks.iter().sum::<usize>(), rows);
    let device = logits.device();
    match how {
        Aggregate::Mean => {
            // A [documents, rows] averaging matrix.
            let mut w = vec![0f32; chunks.len() * rows];
            let mut start = 0;
            for (d, &n) in chunks.iter().enumerate() {
                for r in start..start + n {
                    w[d * rows + r] = 1.0 / n as f32;
                }
                start += n;
            }
            let w = Tensor::<2>::from_data(
                burn::tensor::TensorData::new(w, [chunks.len(), rows]),
                &device,
            );
            w.matmul(logits)
        }
        Aggregate::Max => {
            let mut start = 0;
            let docs: Vec<Tensor<2>> = chunks
                .iter()
                .map(|&n| {
                    let m = logits.clone().slice([start..start + n, 0..k]).max_dim(0);
                    start += n;
                    m
                })
                .collect();
            Tensor::cat(docs, 0)
        }
    }
}

impl Aggregate {
    /// Aggregates one document's window logits on the host (`rows[w][k]`, at least one row):
    /// the same rule as [`aggregate_chunks`], for inference results already read back.
    pub fn rows(self, rows: &[Vec<f32>]) -> Vec<f32> {
        let n = rows.len();
        if n == 1 {
            return rows[0].clone();
        }
        let k = rows[0].len();
        match self {
            Aggregate::Mean => (0..k)
                .map(|j| rows.iter().map(|r| r[j]).sum::<f32>() / n as f32)
                .collect(),
            Aggregate::Max => (0..k)
                .map(|j| rows.iter().map(|r| r[j]).fold(f32::NEG_INFINITY, f32::max))
                .collect(),
        }
    }
}

/// HF `problem_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ProblemType {
    /// One class per example; cross-entropy.
    #[default]
    SingleLabelClassification,
    /// Any number of classes per example; BCE with logits.
    MultiLabelClassification,
    /// One real target (`num_labels` = 1); MSE.
    Regression,
}

/// `transformers.BertForSequenceClassification`: pooler (dense + tanh on `[CLS]`), dropout
/// (`classifier_dropout`, else `hidden_dropout_prob`), linear → logits.
///
/// Field names give the HF checkpoint keys: `bert.*`, `classifier.*`.
#[derive(Module, Debug)]
pub struct BertForSequenceClassification {
    /// `bert`: the encoder with its pooler.
    pub bert: BertModel,
    /// Dropout before the classifier.
    pub dropout: Dropout,
    /// `classifier`
    pub classifier: Linear,
}

impl BertForSequenceClassification {
    /// A new classifier on top of `bert`, with a freshly initialised head (normal weights with
    /// `initializer_range`, zero bias, as transformers initialises it).
    pub fn new(bert: BertModel, config: &BertConfig, num_labels: usize, device: &Device) -> Self {
        let classifier = zero_bias(
            config.linear(config.hidden_size, num_labels, device),
            num_labels,
            device,
        );
        Self {
            bert,
            dropout: DropoutConfig::new(
                config
                    .classifier_dropout
                    .unwrap_or(config.hidden_dropout_prob),
            )
            .init(),
            classifier,
        }
    }

    /// Builds a randomly initialised model from a config.
    pub fn init(
        config: &BertConfig,
        num_labels: usize,
        device: &Device,
    ) -> Result<Self, EncoderError> {
        Ok(Self::new(config.init(device)?, config, num_labels, device))
    }

    /// Number of output logits.
    pub fn num_labels(&self) -> usize {
        self.classifier.weight.dims()[1]
    }

    /// # Shapes
    /// - input_ids, token_type_ids: `[batch, seq]`
    /// - pad_mask: `[batch, seq]`, `true` = padding
    /// - output: logits `[batch, num_labels]`
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
        pad_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<2> {
        self.classify(self.pooled(input_ids, token_type_ids, pad_mask))
    }

    /// The pooler output (dense + tanh on `[CLS]`): what the classifier reads.
    ///
    /// # Shapes
    /// - inputs `[batch, seq]` → `[batch, hidden]`
    pub fn pooled(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
        pad_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<2> {
        self.bert
            .forward_pooled(input_ids, token_type_ids, pad_mask)
            .1
    }

    /// Dropout → `classifier` on a pooled vector: `[batch, hidden]` → `[batch, num_labels]`.
    pub fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.classifier.forward(dropout(&self.dropout, pooled))
    }
}

/// `RobertaClassificationHead`: on `<s>`, dropout → `dense` → tanh → dropout → `out_proj`.
#[derive(Module, Debug)]
pub struct RobertaClassificationHead {
    /// `classifier.dense`
    pub dense: Linear,
    /// Dropout (`classifier_dropout`, else `hidden_dropout_prob`), used twice.
    pub dropout: Dropout,
    /// `classifier.out_proj`
    pub out_proj: Linear,
}

/// `transformers.RobertaForSequenceClassification` (also XLM-RoBERTa's).
#[derive(Module, Debug)]
pub struct RobertaForSequenceClassification {
    /// `roberta`: the encoder, without pooler.
    pub roberta: RobertaModel,
    /// `classifier`
    pub classifier: RobertaClassificationHead,
}

fn zero_bias(mut l: Linear, n: usize, device: &Device) -> Linear {
    l.bias = Some(Param::from_tensor(Tensor::zeros([n], device)));
    l
}

impl RobertaForSequenceClassification {
    /// A fresh head on top of `roberta`.
    pub fn new(
        roberta: RobertaModel,
        config: &BertConfig,
        num_labels: usize,
        device: &Device,
    ) -> Self {
        Self {
            roberta,
            classifier: RobertaClassificationHead::new(config, num_labels, device),
        }
    }

    /// Number of output logits.
    pub fn num_labels(&self) -> usize {
        self.classifier.out_proj.weight.dims()[1]
    }

    /// # Shapes
    /// - input_ids, token_type_ids, pad_mask (true = pad): `[batch, seq]`
    /// - output: logits `[batch, num_labels]`
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
        pad_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<2> {
        self.classifier
            .forward(self.roberta.forward(input_ids, token_type_ids, pad_mask))
    }

    /// `tanh(dense(<s>))`: the vector `out_proj` reads, `[batch, hidden]`.
    pub fn pooled(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
        pad_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<2> {
        self.classifier
            .pool(self.roberta.forward(input_ids, token_type_ids, pad_mask))
    }
}

impl RobertaClassificationHead {
    fn new(config: &BertConfig, num_labels: usize, device: &Device) -> Self {
        let h = config.hidden_size;
        Self {
            dense: zero_bias(config.linear(h, h, device), h, device),
            dropout: DropoutConfig::new(
                config
                    .classifier_dropout
                    .unwrap_or(config.hidden_dropout_prob),
            )
            .init(),
            out_proj: zero_bias(config.linear(h, num_labels, device), num_labels, device),
        }
    }

    /// On the first token: dropout → `dense` → tanh → dropout → `out_proj`.
    ///
    /// # Shapes
    /// - hidden: `[batch, seq, hidden]` → logits `[batch, num_labels]`
    pub fn forward(&self, hidden: Tensor<3>) -> Tensor<2> {
        self.classify(self.pool(hidden))
    }

    /// On the first token: dropout → `dense` → tanh. `[batch, seq, hidden]` → `[batch, hidden]`.
    pub fn pool(&self, hidden: Tensor<3>) -> Tensor<2> {
        let x = first_token(hidden);
        tanh(self.dense.forward(dropout(&self.dropout, x)))
    }

    /// Dropout → `out_proj`: `[batch, hidden]` → `[batch, num_labels]`.
    pub fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.out_proj.forward(dropout(&self.dropout, pooled))
    }
}

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
    /// A fresh head on top of `longformer`.
    pub fn new(
        longformer: LongformerModel,
        config: &LongformerConfig,
        num_labels: usize,
        device: &Device,
    ) -> Self {
        Self {
            longformer,
            classifier: RobertaClassificationHead::new(&config.bert, num_labels, device),
        }
    }

    /// Number of output logits.
    pub fn num_labels(&self) -> usize {
        self.classifier.out_proj.weight.dims()[1]
    }

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

/// `ModernBertPredictionHead`: `dense` → activation → `norm`.
#[derive(Module, Debug)]
pub struct ModernBertPredictionHead {
    /// `head.dense` (bias per `classifier_bias`)
    pub dense: Linear,
    /// `head.norm`
    pub norm: LayerNorm,
    /// `classifier_activation`
    #[module(skip)]
    pub act: Activation,
}

/// `transformers.ModernBertForSequenceClassification`: pooling (`classifier_pooling`: the
/// first token or the masked mean), `head`, dropout (`classifier_dropout`), `classifier`.
#[derive(Module, Debug)]
pub struct ModernBertForSequenceClassification {
    /// `model`
    pub model: ModernBertModel,
    /// `head`
    pub head: ModernBertPredictionHead,
    /// Dropout before the classifier.
    pub drop: Dropout,
    /// `classifier`
    pub classifier: Linear,
    /// `classifier_pooling`
    #[module(skip)]
    pub pooling: Pooling,
}

impl ModernBertForSequenceClassification {
    /// A fresh head (and prediction head) on top of `model`.
    pub fn new(
        model: ModernBertModel,
        config: &ModernBertConfig,
        num_labels: usize,
        device: &Device,
    ) -> Result<Self, EncoderError> {
        let h = config.hidden_size;
        Ok(Self {
            model,
            head: ModernBertPredictionHead {
                dense: config.linear(h, h, config.classifier_bias, device),
                norm: config.norm(device),
                act: Activation::from_hf(&config.classifier_activation)?,
            },
            drop: DropoutConfig::new(config.classifier_dropout).init(),
            classifier: zero_bias(
                config.linear(h, num_labels, true, device),
                num_labels,
                device,
            ),
            pooling: config.classifier_pooling,
        })
    }

    /// Number of output logits.
    pub fn num_labels(&self) -> usize {
        self.classifier.weight.dims()[1]
    }

    /// # Shapes
    /// - input_ids, pad_mask (true = pad): `[batch, seq]`
    /// - output: logits `[batch, num_labels]`
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        pad_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<2> {
        self.classify(self.pooled(input_ids, pad_mask))
    }

    /// Dropout → `classifier`: `[batch, hidden]` → `[batch, num_labels]`.
    pub fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.classifier.forward(dropout(&self.drop, pooled))
    }

    /// Pooling → `head` (dense → activation → norm): `[batch, seq]` → `[batch, hidden]`.
    pub fn pooled(
        &self,
        input_ids: Tensor<2, Int>,
        pad_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<2> {
        let hidden = self.model.forward(input_ids, pad_mask.clone());
        let pooled = match (self.pooling, pad_mask) {
            (Pooling::Cls, _) => first_token(hidden),
            (Pooling::Mean, None) => hidden.mean_dim(1).squeeze_dim(1),
            (Pooling::Mean, Some(pad)) => {
                let [b, n, h] = hidden.dims();
                let real = pad.bool_not().float().reshape([b, n, 1]);
                let sum = (hidden * real.clone().expand([b, n, h]))
                    .sum_dim(1)
                    .reshape([b, h]);
                sum / real.sum_dim(1).reshape([b, 1]).expand([b, h])
            }
        };
        let x = self.head.dense.forward(pooled);
        self.head.norm.forward(self.head.act.forward(x))
    }
}

/// `transformers.DistilBertForSequenceClassification`: on `[CLS]`, `pre_classifier` → ReLU →
/// dropout (`seq_classif_dropout`) → `classifier`.
#[derive(Module, Debug)]
pub struct DistilBertForSequenceClassification {
    /// `distilbert`
    pub distilbert: DistilBertModel,
    /// `pre_classifier`
    pub pre_classifier: Linear,
    /// Dropout (`seq_classif_dropout`).
    pub dropout: Dropout,
    /// `classifier`
    pub classifier: Linear,
}

impl DistilBertForSequenceClassification {
    /// A fresh head on top of `distilbert`.
    pub fn new(
        distilbert: DistilBertModel,
        config: &DistilBertConfig,
        num_labels: usize,
        device: &Device,
    ) -> Self {
        let d = config.dim;
        Self {
            distilbert,
            pre_classifier: zero_bias(config.linear(d, d, device), d, device),
            dropout: DropoutConfig::new(config.seq_classif_dropout).init(),
            classifier: zero_bias(config.linear(d, num_labels, device), num_labels, device),
        }
    }

    /// Number of output logits.
    pub fn num_labels(&self) -> usize {
        self.classifier.weight.dims()[1]
    }

    /// Token types are ignored: DistilBERT has none.
    ///
    /// # Shapes
    /// - input_ids, pad_mask (true = pad): `[batch, seq]`
    /// - output: logits `[batch, num_labels]`
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        pad_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<2> {
        self.classify(self.pooled(input_ids, pad_mask))
    }

    /// `relu(pre_classifier([CLS]))`: `[batch, seq]` → `[batch, dim]`.
    pub fn pooled(
        &self,
        input_ids: Tensor<2, Int>,
        pad_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<2> {
        let x = first_token(self.distilbert.forward(input_ids, pad_mask));
        relu(self.pre_classifier.forward(x))
    }

    /// Dropout → `classifier`: `[batch, dim]` → `[batch, num_labels]`.
    pub fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.classifier.forward(dropout(&self.dropout, pooled))
    }
}

/// Any supported family's sequence classifier.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum SequenceClassifier {
    /// BERT.
    Bert(BertForSequenceClassification),
    /// RoBERTa / XLM-RoBERTa.
    Roberta(RobertaForSequenceClassification),
    /// DistilBERT.
    DistilBert(DistilBertForSequenceClassification),
    /// Longformer.
    Longformer(LongformerForSequenceClassification),
    /// ModernBERT.
    ModernBert(ModernBertForSequenceClassification),
}

impl SequenceClassifier {
    /// Number of output logits.
    pub fn num_labels(&self) -> usize {
        match self {
            Self::Bert(m) => m.num_labels(),
            Self::Roberta(m) => m.num_labels(),
            Self::DistilBert(m) => m.num_labels(),
            Self::Longformer(m) => m.num_labels(),
            Self::ModernBert(m) => m.num_labels(),
        }
    }

    /// Logits for a batch.
    ///
    /// # Shapes
    /// - input_ids, token_type_ids, pad_mask (true = pad): `[batch, seq]`
    /// - output: `[batch, num_labels]`
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
        pad_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<2> {
        match self {
            Self::Bert(m) => m.forward(input_ids, token_type_ids, pad_mask),
            Self::Roberta(m) => m.forward(input_ids, token_type_ids, pad_mask),
            Self::DistilBert(m) => m.forward(input_ids, pad_mask),
            Self::Longformer(m) => m.forward_with_global(input_ids, token_type_ids, pad_mask, None),
            Self::ModernBert(m) => m.forward(input_ids, pad_mask),
        }
    }

    /// The pooled text vector that the final linear layer reads: BERT's pooler output,
    /// RoBERTa's/Longformer's `tanh(dense(<s>))`, DistilBERT's `relu(pre_classifier)`,
    /// ModernBERT's `head`. `forward` = `classify(pooled(..))`; mixup and metadata fusion work
    /// between the two.
    ///
    /// # Shapes
    /// - input_ids, token_type_ids, pad_mask (true = pad): `[batch, seq]`
    /// - output: `[batch, hidden]` ([`Self::pooled_size`])
    pub fn pooled(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
        pad_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<2> {
        match self {
            Self::Bert(m) => m.pooled(input_ids, token_type_ids, pad_mask),
            Self::Roberta(m) => m.pooled(input_ids, token_type_ids, pad_mask),
            Self::DistilBert(m) => m.pooled(input_ids, pad_mask),
            Self::Longformer(m) => {
                m.classifier.pool(
                    m.longformer
                        .forward(input_ids, token_type_ids, pad_mask, None),
                )
            }
            Self::ModernBert(m) => m.pooled(input_ids, pad_mask),
        }
    }

    /// The final dropout and linear layer on a pooled vector: `[batch, hidden]` →
    /// `[batch, num_labels]`.
    pub fn classify(&self, pooled: Tensor<2>) -> Tensor<2> {
        match self {
            Self::Bert(m) => m.classify(pooled),
            Self::Roberta(m) => m.classifier.classify(pooled),
            Self::DistilBert(m) => m.classify(pooled),
            Self::Longformer(m) => m.classifier.classify(pooled),
            Self::ModernBert(m) => m.classify(pooled),
        }
    }

    /// Width of [`Self::pooled`].
    pub fn pooled_size(&self) -> usize {
        match self {
            Self::Bert(m) => m.classifier.weight.dims()[0],
            Self::Roberta(m) => m.classifier.out_proj.weight.dims()[0],
            Self::DistilBert(m) => m.classifier.weight.dims()[0],
            Self::Longformer(m) => m.classifier.out_proj.weight.dims()[0],
            Self::ModernBert(m) => m.classifier.weight.dims()[0],
        }
    }
}

/// A text classifier with optional metadata fusion: without a fusion head it is exactly the
/// HF model (`text`); with one, the fusion head reads `text`'s pooled vector and the metadata,
/// and `text`'s own final layer is not used.
#[derive(Module, Debug)]
pub struct Model {
    /// The HF sequence classifier (saved in HF layout).
    pub text: SequenceClassifier,
    /// The fusion head, when the model takes metadata.
    pub fusion: Option<FusionHead>,
}

impl Model {
    /// A text-only classifier.
    pub fn text_only(text: SequenceClassifier) -> Self {
        Self { text, fusion: None }
    }

    /// Number of output logits.
    pub fn num_labels(&self) -> usize {
        match &self.fusion {
            Some(f) => f.num_labels(),
            None => self.text.num_labels(),
        }
    }

    /// Logits for a batch.
    ///
    /// # Shapes
    /// - input_ids, token_type_ids, pad_mask (true = pad): `[batch, seq]`
    /// - numeric: `[batch, numeric_width]`, categorical: `[batch, columns]` (used only with a
    ///   fusion head)
    /// - output: `[batch, num_labels]`
    pub fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        token_type_ids: Option<Tensor<2, Int>>,
        pad_mask: Option<Tensor<2, Bool>>,
        numeric: Option<Tensor<2>>,
        categorical: Option<Tensor<2, Int>>,
    ) -> Tensor<2> {
        match &self.fusion {
            None => self.text.forward(input_ids, token_type_ids, pad_mask),
            Some(f) => f.forward(
                self.text.pooled(input_ids, token_type_ids, pad_mask),
                numeric,
                categorical,
            ),
        }
    }
}
