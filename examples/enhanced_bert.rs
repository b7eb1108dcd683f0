//! The seed's `EnhancedBertClassifier`, written in Rust with sequin's crates as a library:
//! BERT's pooled `[CLS]` vector, concatenated with projected metadata, then a classifier.
//!
//! ```python
//! class EnhancedBertClassifier(nn.Module):
//!     def __init__(self, bert, meta_dim, num_labels):
//!         self.bert, self.meta_proj = bert, nn.Linear(meta_dim, bert.config.hidden_size)
//!         self.classifier = nn.Linear(2 * bert.config.hidden_size, num_labels)
//!     def forward(self, input_ids, attention_mask, meta):
//!         pooled = self.bert(input_ids, attention_mask=attention_mask).pooler_output
//!         x = torch.cat([pooled, torch.relu(self.meta_proj(meta))], dim=1)
//!         return self.classifier(self.dropout(x))
//! ```
//!
//! Run: `cargo run --release --example enhanced_bert [MODEL_DIR]` (default: the tiny test
//! BERT). It trains an epoch on drug-reviews with the review's useful count and date, and
//! prints the loss. The ready-made version of this head is `sequin train --fusion concat`.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::activation::relu;
use burn::tensor::{Bool, Device, Int, Tensor};
use sequin::data::{Columns, EncodedBatch, FeatureSpec, LabelMap, NumericTransform, read_records};
use sequin::encoders::{BertModel, Inputs};
use sequin::heads::{SequenceClassifier, loss};
use sequin::tokenize::{EncodeOptions, Tokenizer};

#[derive(Module, Debug)]
struct EnhancedBertClassifier {
    bert: BertModel,
    meta_proj: Linear,
    dropout: Dropout,
    classifier: Linear,
}

impl EnhancedBertClassifier {
    fn forward(&self, ids: Tensor<2, Int>, pad: Tensor<2, Bool>, meta: Tensor<2>) -> Tensor<2> {
        let (_, pooled) = self.bert.forward_pooled(Inputs::new(ids, None, Some(pad)));
        let x = Tensor::cat(vec![pooled, relu(self.meta_proj.forward(meta))], 1);
        self.classifier.forward(self.dropout.forward(x))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let model_dir = std::env::args()
        .nth(1)
        .map(Into::into)
        .unwrap_or_else(|| root.join("tests/fixtures/bert-tiny-cls"));
    let train = root.join("datasets/drug-reviews/train.parquet");
    let device = Device::flex().autodiff();

    // Metadata: a numeric and a date column, transforms fitted on train.
    let spec = FeatureSpec {
        numeric: vec!["useful_count".into()],
        date: vec!["date".into()],
        numeric_transform: NumericTransform::Log1pStandard,
        ..FeatureSpec::default()
    };
    let cols = Columns {
        features: spec.columns(),
        ..Columns::default()
    };
    let records = read_records(&train, &cols)?;
    let labels = LabelMap::from_train(&records, &train)?;
    let targets = labels.encode(&records, &train)?;
    let fitted = spec.fit(&train, &records)?;
    let refs: Vec<_> = records.iter().collect();
    let meta = fitted.encode(&train, 1, &refs)?;

    // A pretrained BERT from an HF folder; its own head is dropped.
    let (SequenceClassifier::Bert(hf), _, _) =
        sequin::hf::load_classifier(&model_dir, Some(labels.len()), &device)?
    else {
        return Err("this example needs a BERT checkpoint".into());
    };
    let tokenizer = Tokenizer::from_dir(&model_dir)?;
    let hidden = hf.classifier.weight.dims()[0];
    let meta_dim = fitted.numeric_width();
    let mut model = EnhancedBertClassifier {
        bert: hf.bert,
        meta_proj: LinearConfig::new(meta_dim, hidden).init(&device),
        dropout: DropoutConfig::new(0.1).init(),
        classifier: LinearConfig::new(2 * hidden, labels.len()).init(&device),
    };
    let mut optim = sequin::train::optim::adamw(&model, 0.01);

    let opts = EncodeOptions {
        max_length: 64,
        pad_to_multiple_of: None,
    };
    for (step, idx) in (0..records.len())
        .collect::<Vec<_>>()
        .chunks(32)
        .enumerate()
    {
        let batch: Vec<_> = idx.iter().map(|&i| &records[i]).collect();
        let y: Vec<usize> = idx.iter().map(|&i| targets[i]).collect();
        let b = EncodedBatch::new(&tokenizer, &batch, Some(&y), opts, &device)?;
        let numbers = fitted
            .batch(&meta, idx, &device)
            .numeric
            .expect("numeric features");
        let logits = model.forward(b.input_ids, b.pad_mask, numbers);
        let loss = loss::cross_entropy(logits, b.labels.expect("labels"));
        println!("step {step}: loss {:.4}", loss.clone().into_scalar::<f32>());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-4, model, grads);
    }
    Ok(())
}
