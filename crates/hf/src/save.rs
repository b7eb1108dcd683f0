//! Writing HF model folders, atomically.

use std::path::Path;

use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};
use sequin_heads::{ProblemType, SequenceClassifier};
use sequin_tokenize::Tokenizer;
use serde_json::{Map, Value};

use crate::{HfConfig, HfError, Result, io_err};

/// Writes `bytes` to `path` atomically (see `sequin_fs`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    sequin_fs::write(path, bytes).map_err(io_err(path))
}

/// Writes a safetensors file through burn-store, atomically: the store writes a temp file,
/// which is synced and renamed into place.
fn save_store(
    path: &Path,
    store: impl FnOnce(&Path) -> SafetensorsStore,
    save: impl FnOnce(&mut SafetensorsStore) -> std::result::Result<(), String>,
) -> Result<()> {
    let file = sequin_fs::AtomicFile::create(path).map_err(io_err(path))?;
    let mut store = store(file.temp_path()).overwrite(true);
    save(&mut store).map_err(|message| HfError::Weights {
        path: path.to_path_buf(),
        message,
    })?;
    file.commit().map_err(io_err(path))
}

macro_rules! save_any {
    ($($v:ident => $t:ty),* $(,)?) => {
        /// Saves whichever family `model` is (its own module paths, as HF keys after the
        /// store's remapping).
        fn save_any(
            model: &SequenceClassifier,
            store: &mut SafetensorsStore,
        ) -> std::result::Result<(), String> {
            match model {
                $(SequenceClassifier::$v(m) => m.save_into(store),)*
            }
            .map_err(|e| e.to_string())
        }
    };
}

sequin_heads::for_each_family!(save_any);

/// Saves a classifier as a Hugging Face folder: `config.json` (with `architectures`,
/// `id2label`, `label2id`, `problem_type`), `model.safetensors` (HF key names, `format: pt`),
/// `tokenizer.json` and `tokenizer_config.json`. Every file is written atomically.
pub fn save_classifier_folder(
    dir: &Path,
    model: &SequenceClassifier,
    base: &HfConfig,
    labels: &[String],
    problem_type: ProblemType,
    tokenizer: &Tokenizer,
    max_length: usize,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let weights = dir.join("model.safetensors");
    save_store(
        &weights,
        |tmp| {
            SafetensorsStore::from_file(tmp)
                .with_to_adapter(BurnToPyTorchAdapter)
                .with_key_remapping(r"\.attention\.self_attn\.", ".attention.self.")
                .metadata("format", "pt")
        },
        |store| save_any(model, store),
    )?;

    let meta = FolderMeta {
        base,
        labels,
        problem_type,
        tokenizer,
        max_length,
    };
    save_config_and_tokenizer(dir, &meta)
}

/// Saves a PEFT LoRA adapter folder: `adapter_model.safetensors` (`tensors`: PEFT's keys,
/// torch layout, float32), `adapter_config.json`, and beside them `config.json` (the
/// classifier's, with its labels and problem type) and the tokenizer. Every file is written
/// atomically.
pub fn save_adapter_folder(
    dir: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    adapter_config: &Value,
    meta: &FolderMeta<'_>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let path = dir.join(crate::ADAPTER_WEIGHTS);
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| HfError::Weights {
            path: path.clone(),
            message: e.to_string(),
        })?;
    let format = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let data = safetensors::serialize(views, Some(format)).map_err(|e| HfError::Weights {
        path: path.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&path, &data)?;
    let text = serde_json::to_string_pretty(adapter_config).expect("json");
    write_atomic(&dir.join(crate::ADAPTER_CONFIG), text.as_bytes())?;
    save_config_and_tokenizer(dir, meta)
}

/// What a folder says besides its weights: the classifier's config and its tokenizer.
pub struct FolderMeta<'a> {
    /// The base model's config (updated with the labels and problem type).
    pub base: &'a HfConfig,
    /// Class names in id order.
    pub labels: &'a [String],
    /// The problem type.
    pub problem_type: ProblemType,
    /// The tokenizer.
    pub tokenizer: &'a Tokenizer,
    /// Tokens per row (`tokenizer_config.json`'s `model_max_length`).
    pub max_length: usize,
}

/// `config.json` for the classifier and the tokenizer files.
fn save_config_and_tokenizer(dir: &Path, meta: &FolderMeta<'_>) -> Result<()> {
    let FolderMeta {
        base,
        labels,
        problem_type,
        tokenizer,
        max_length,
    } = *meta;
    let config = base.for_classifier(labels, problem_type);
    let text = serde_json::to_string_pretty(&Value::Object(config)).expect("json");
    write_atomic(&dir.join("config.json"), text.as_bytes())?;

    tokenizer.save_json(dir)?;
    let mut tc: Map<String, Value> = std::fs::read_to_string(
        tokenizer
            .source()
            .parent()
            .unwrap_or(Path::new("."))
            .join("tokenizer_config.json"),
    )
    .ok()
    .and_then(|s| serde_json::from_str(&s).ok())
    .unwrap_or_default();
    tc.insert("model_max_length".into(), Value::from(max_length));
    tc.insert("pad_token".into(), Value::from(tokenizer.pad_token()));
    tc.entry("tokenizer_class")
        .or_insert_with(|| Value::from("BertTokenizer"));
    tc.remove("name_or_path");
    let text = serde_json::to_string_pretty(&Value::Object(tc)).expect("json");
    write_atomic(&dir.join("tokenizer_config.json"), text.as_bytes())?;
    Ok(())
}

/// Saves a fusion head's weights as safetensors (burn's key names and layout), atomically.
pub fn save_fusion_weights(path: &Path, head: &sequin_heads::FusionHead) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    save_store(
        path,
        |tmp| SafetensorsStore::from_file(tmp).metadata("format", "sequin-fusion"),
        |store| head.save_into(store).map_err(|e| e.to_string()),
    )
}
