//! Fusion of a pooled text vector with tabular metadata (numeric features and categorical ids),
//! the methods of Multimodal-Toolkit plus the seed's concat design.
//!
//! The metadata vector `m` is the numeric features followed by one embedding per categorical
//! column. `t` is the text model's pooled vector ([`crate::SequenceClassifier::pooled`]), of
//! width `h`. Every method ends in dropout and a linear layer to the logits.
//!
//! | method | fused vector |
//! |---|---|
//! | `concat` | `[t; W m]` (the seed's `EnhancedBertClassifier`) |
//! | `mlp-concat` | `[t; relu(W₂ relu(W₁ m))]` |
//! | `gating` | `LayerNorm(t + α·g)`, `g = relu(W_g [t; m]) ⊙ (W_h m)`, `α = min(β‖t‖/‖g‖, 1)` (Rahman et al. 2020) |
//! | `attention` | `[t; Σⱼ aⱼ vⱼ]`: `t` attends over one token per feature |
//! | `weighted-sum` | `t + w ⊙ (W m)`, with learned per-dimension weights `w` |

use burn::module::{Module, Param};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear,
    LinearConfig,
};
use burn::tensor::activation::{relu, softmax};
use burn::tensor::{Device, Distribution, Int, Tensor};
use sequin_encoders::common::dropout;
use serde::{Deserialize, Serialize};

/// How metadata joins the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FusionMethod {
    /// No metadata: the text model's own head (the baseline).
    TextOnly,
    /// Metadata → linear to the text width → concatenated with the pooled text.
    Concat,
    /// An MLP on the metadata, then concatenation.
    MlpConcat,
    /// Gated addition of a metadata shift (Rahman et al. 2020, as Multimodal-Toolkit).
    Gating,
    /// The text vector attends over per-feature embeddings.
    Attention,
    /// The text plus learned per-dimension weights times the projected metadata.
    WeightedSum,
}

impl FusionMethod {
    /// Every method, in documentation order.
    pub const ALL: [FusionMethod; 6] = [
        Self::TextOnly,
        Self::Concat,
        Self::MlpConcat,
        Self::Gating,
        Self::Attention,
        Self::WeightedSum,
    ];

    /// The command-line spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::TextOnly => "text-only",
            Self::Concat => "concat",
            Self::MlpConcat => "mlp-concat",
            Self::Gating => "gating",
            Self::Attention => "attention",
            Self::WeightedSum => "weighted-sum",
        }
    }
}

impl std::str::FromStr for FusionMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown fusion method `{s}`; expected one of {}",
                    Self::ALL.map(Self::name).join(", ")
                )
            })
    }
}

fn d_dropout() -> f64 {
    0.1
}

fn d_beta() -> f64 {
    0.2
}

/// Shape and options of a fusion head (saved as JSON beside its weights).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FusionConfig {
    /// The method (not `text-only`).
    pub method: FusionMethod,
    /// Width `h` of the pooled text vector.
    pub text_size: usize,
    /// Numeric features per row.
    pub numeric_width: usize,
    /// `(ids, embedding width)` per categorical column.
    pub categorical: Vec<(usize, usize)>,
    /// Output logits.
    pub num_labels: usize,
    /// Dropout in the head.
    #[serde(default = "d_dropout")]
    pub dropout: f64,
    /// Gating: β, the largest shift relative to the text vector's norm.
    #[serde(default = "d_beta")]
    pub gating_beta: f64,
}

/// A fusion head: metadata embeddings, the method's layers and the output layer.
#[derive(Module, Debug)]
pub struct FusionHead {
    /// One embedding per categorical column (id 0: rare/unknown).
    pub embeddings: Vec<Embedding>,
    /// `W`: metadata → `h` (concat, weighted-sum, gating's `W_h`, the MLP's first layer).
    pub meta: Option<Linear>,
    /// The MLP's second layer (`mlp-concat`).
    pub mlp: Option<Linear>,
    /// Gating: `W_g`, `[t; m]` → `h`.
    pub gate: Option<Linear>,
    /// Gating: the norm after the shift.
    pub norm: Option<LayerNorm>,
    /// Attention: a vector per numeric feature (`[numeric_width, h]`), scaled by the value.
    pub feature_weight: Option<Param<Tensor<2>>>,
    /// Attention: a bias per numeric feature (`[numeric_width, h]`).
    pub feature_bias: Option<Param<Tensor<2>>>,
    /// Attention: each categorical embedding → `h`.
    pub category_proj: Vec<Linear>,
    /// Attention: query, key, value projections.
    pub query: Option<Linear>,
    /// Attention keys.
    pub key: Option<Linear>,
    /// Attention values.
    pub value: Option<Linear>,
    /// Weighted sum: per-dimension weights `[h]`.
    pub weight: Option<Param<Tensor<1>>>,
    /// Dropout before the output layer (and inside the MLP).
    pub dropout: Dropout,
    /// Output layer → logits.
    pub classifier: Linear,
    /// The method.
    #[module(skip)]
    pub method: FusionMethod,
    /// Gating β.
    #[module(skip)]
    pub beta: f64,
}

impl FusionConfig {
    /// Width of the metadata vector `m`.
    pub fn meta_width(&self) -> usize {
        self.numeric_width + self.categorical.iter().map(|c| c.1).sum::<usize>()
    }

    /// The number of parameters of the head [`Self::init`] builds (`None` past `usize`), so
    /// that a loader can check a declared head against its weights before allocating it.
    pub fn parameter_count(&self) -> Option<usize> {
        use FusionMethod::*;
        let h = self.text_size;
        let m = self
            .categorical
            .iter()
            .try_fold(self.numeric_width, |acc, c| acc.checked_add(c.1))?;
        let lin = |i: usize, o: usize| i.checked_mul(o)?.checked_add(o);
        let method = self.method;
        let is = |ms: &[FusionMethod]| ms.contains(&method);
        let mut parts: Vec<Option<usize>> = self
            .categorical
            .iter()
            .map(|&(n, d)| n.checked_mul(d))
            .collect();
        if is(&[Concat, MlpConcat, Gating, WeightedSum]) {
            parts.push(lin(m, h));
        }
        if method == MlpConcat {
            parts.push(lin(h, h));
        }
        if method == Gating {
            parts.push(lin(h.checked_add(m)?, h));
            parts.push(h.checked_mul(2));
        }
        if method == Attention {
            parts.push(self.numeric_width.checked_mul(h)?.checked_mul(2));
            parts.extend(self.categorical.iter().map(|&(_, d)| lin(d, h)));
            parts.push(lin(h, h)?.checked_mul(3));
        }
        if method == WeightedSum {
            parts.push(Some(h));
        }
        let out_in = if is(&[Concat, MlpConcat, Attention]) {
            h.checked_mul(2)?
        } else {
            h
        };
        parts.push(lin(out_in, self.num_labels));
        parts
            .into_iter()
            .try_fold(0usize, |acc, p| acc.checked_add(p?))
    }

    /// A freshly initialised head (burn's default initialisers).
    pub fn init(&self, device: &Device) -> FusionHead {
        let h = self.text_size;
        let m = self.meta_width();
        let lin = |i: usize, o: usize| LinearConfig::new(i, o).init(device);
        let method = self.method;
        let is = |ms: &[FusionMethod]| ms.contains(&method);
        use FusionMethod::*;
        let attention = method == Attention;
        let out_in = if is(&[Concat, MlpConcat, Attention]) {
            2 * h
        } else {
            h
        };
        FusionHead {
            embeddings: self
                .categorical
                .iter()
                .map(|&(n, d)| EmbeddingConfig::new(n, d).init(device))
                .collect(),
            meta: is(&[Concat, MlpConcat, Gating, WeightedSum]).then(|| lin(m, h)),
            mlp: (method == MlpConcat).then(|| lin(h, h)),
            gate: (method == Gating).then(|| lin(h + m, h)),
            norm: (method == Gating).then(|| LayerNormConfig::new(h).init(device)),
            feature_weight: (attention && self.numeric_width > 0).then(|| {
                Param::from_tensor(Tensor::random(
                    [self.numeric_width, h],
                    Distribution::Normal(0.0, 0.02),
                    device,
                ))
            }),
            feature_bias: (attention && self.numeric_width > 0)
                .then(|| Param::from_tensor(Tensor::zeros([self.numeric_width, h], device))),
            category_proj: if attention {
                self.categorical.iter().map(|&(_, d)| lin(d, h)).collect()
            } else {
                Vec::new()
            },
            query: attention.then(|| lin(h, h)),
            key: attention.then(|| lin(h, h)),
            value: attention.then(|| lin(h, h)),
            weight: (method == WeightedSum)
                .then(|| Param::from_tensor(Tensor::ones([h], device).mul_scalar(0.5))),
            dropout: DropoutConfig::new(self.dropout).init(),
            classifier: lin(out_in, self.num_labels),
            method,
            beta: self.gating_beta,
        }
    }
}

impl FusionHead {
    /// The categorical embeddings, one `[batch, dim]` per column.
    fn embedded(&self, categorical: Option<Tensor<2, Int>>) -> Vec<Tensor<2>> {
        let Some(c) = categorical else {
            return Vec::new();
        };
        let [b, _] = c.dims();
        self.embeddings
            .iter()
            .enumerate()
            .map(|(j, e)| {
                let d = e.weight.dims()[1];
                e.forward(c.clone().slice([0..b, j..j + 1])).reshape([b, d])
            })
            .collect()
    }

    /// Logits from a pooled text vector and the metadata.
    ///
    /// # Shapes
    /// - text: `[batch, h]`
    /// - numeric: `[batch, numeric_width]` (`None` when there are no numeric features)
    /// - categorical: `[batch, categorical columns]` ids (`None` when there are none)
    /// - output: `[batch, num_labels]`
    pub fn forward(
        &self,
        text: Tensor<2>,
        numeric: Option<Tensor<2>>,
        categorical: Option<Tensor<2, Int>>,
    ) -> Tensor<2> {
        let [b, h] = text.dims();
        let embedded = self.embedded(categorical);
        let fused = if self.method == FusionMethod::Attention {
            let mut tokens: Vec<Tensor<3>> = Vec::new();
            if let (Some(n), Some(w), Some(bias)) =
                (numeric, &self.feature_weight, &self.feature_bias)
            {
                let k = n.dims()[1];
                let v = n.reshape([b, k, 1]).expand([b, k, h]);
                tokens.push(
                    v * w.val().unsqueeze_dim::<3>(0).expand([b, k, h])
                        + bias.val().unsqueeze_dim::<3>(0).expand([b, k, h]),
                );
            }
            for (e, p) in embedded.into_iter().zip(&self.category_proj) {
                tokens.push(p.forward(e).reshape([b, 1, h]));
            }
            let tokens = Tensor::cat(tokens, 1);
            let n = tokens.dims()[1];
            let lin = |l: &Option<Linear>, x: Tensor<3>| l.as_ref().expect("attention").forward(x);
            let q = lin(&self.query, text.clone().reshape([b, 1, h]));
            let k = lin(&self.key, tokens.clone());
            let v = lin(&self.value, tokens);
            let scores = q.matmul(k.swap_dims(1, 2)).div_scalar((h as f64).sqrt());
            let attended = softmax(scores, 2).matmul(v).reshape([b, h]);
            debug_assert_eq!(n, self.feature_count());
            Tensor::cat(vec![text, attended], 1)
        } else {
            let mut parts: Vec<Tensor<2>> = numeric.into_iter().collect();
            parts.extend(embedded);
            let m = Tensor::cat(parts, 1);
            let proj = self.meta.as_ref().expect("meta projection");
            match self.method {
                FusionMethod::Concat => Tensor::cat(vec![text, proj.forward(m)], 1),
                FusionMethod::MlpConcat => {
                    let x = dropout(&self.dropout, relu(proj.forward(m)));
                    let x = relu(self.mlp.as_ref().expect("mlp").forward(x));
                    Tensor::cat(vec![text, x], 1)
                }
                FusionMethod::Gating => {
                    let gate = self.gate.as_ref().expect("gate");
                    let g = relu(gate.forward(Tensor::cat(vec![text.clone(), m.clone()], 1)))
                        * proj.forward(m);
                    let tn = text.clone().powi_scalar(2).sum_dim(1).sqrt();
                    let gn = g.clone().powi_scalar(2).sum_dim(1).sqrt();
                    let alpha = (tn / (gn + 1e-6)).mul_scalar(self.beta).clamp_max(1.0);
                    let x = text + alpha.expand([b, h]) * g;
                    self.norm.as_ref().expect("norm").forward(x)
                }
                FusionMethod::WeightedSum => {
                    let w = self.weight.as_ref().expect("weights").val();
                    text + w.unsqueeze_dim::<2>(0).expand([b, h]) * proj.forward(m)
                }
                FusionMethod::TextOnly | FusionMethod::Attention => unreachable!(),
            }
        };
        self.classifier.forward(dropout(&self.dropout, fused))
    }

    /// Attention: the number of feature tokens.
    fn feature_count(&self) -> usize {
        self.feature_weight.as_ref().map_or(0, |w| w.dims()[0]) + self.category_proj.len()
    }

    /// Output logits.
    pub fn num_labels(&self) -> usize {
        self.classifier.weight.dims()[1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn parameter_count_is_what_init_builds() {
        let d = Device::flex();
        for method in &FusionMethod::ALL[1..] {
            for numeric_width in [0, 3] {
                let cfg = FusionConfig {
                    method: *method,
                    text_size: 8,
                    numeric_width,
                    categorical: vec![(3, 4), (2, 1)],
                    num_labels: 5,
                    dropout: 0.1,
                    gating_beta: 0.2,
                };
                assert_eq!(
                    cfg.parameter_count(),
                    Some(cfg.init(&d).num_params()),
                    "{method:?}, {numeric_width} numeric"
                );
            }
        }
        let huge = FusionConfig {
            method: FusionMethod::Concat,
            text_size: usize::MAX / 2,
            numeric_width: 3,
            categorical: vec![],
            num_labels: 2,
            dropout: 0.1,
            gating_beta: 0.2,
        };
        assert_eq!(huge.parameter_count(), None);
    }

    #[test]
    fn every_method_gives_logits_of_the_right_shape() {
        let d = Device::flex();
        let text = Tensor::<2>::random([3, 8], Distribution::Normal(0.0, 1.0), &d);
        let num = Tensor::<2>::random([3, 2], Distribution::Normal(0.0, 1.0), &d);
        let cat =
            Tensor::<2, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 0, 1, 1], [3, 2]), &d);
        for method in &FusionMethod::ALL[1..] {
            let cfg = FusionConfig {
                method: *method,
                text_size: 8,
                numeric_width: 2,
                categorical: vec![(3, 4), (2, 1)],
                num_labels: 5,
                dropout: 0.1,
                gating_beta: 0.2,
            };
            let head = cfg.init(&d);
            let out = head.forward(text.clone(), Some(num.clone()), Some(cat.clone()));
            assert_eq!(out.dims(), [3, 5], "{method:?}");
            // Categorical only, numeric only.
            let cfg = FusionConfig {
                numeric_width: 0,
                ..cfg.clone()
            };
            let out = cfg.init(&d).forward(text.clone(), None, Some(cat.clone()));
            assert_eq!(out.dims(), [3, 5], "{method:?}");
            let cfg = FusionConfig {
                numeric_width: 2,
                categorical: vec![],
                ..cfg
            };
            let out = cfg.init(&d).forward(text.clone(), Some(num.clone()), None);
            assert_eq!(out.dims(), [3, 5], "{method:?}");
            let v: Vec<f32> = out.into_data().try_to_vec::<f32>().unwrap();
            assert!(v.iter().all(|x| x.is_finite()));
        }
    }

    #[test]
    fn method_names_round_trip() {
        for m in FusionMethod::ALL {
            assert_eq!(m.name().parse::<FusionMethod>().unwrap(), m);
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.name()));
        }
        assert!(
            "sum"
                .parse::<FusionMethod>()
                .unwrap_err()
                .contains("weighted-sum")
        );
    }
}
