//! Writing HF model folders, atomically.

use std::io::Write;
use std::path::Path;

use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};
use sequin_heads::{ProblemType, SequenceClassifier};
use sequin_tokenize::Tokenizer;
use serde_json::{Map, Value};

use crate::{HfConfig, HfError, Result, io_err};

/// Writes `bytes` to `path` through a temp file in the same folder, fsync, then rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(io_err(path))
}

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
    // burn-store writes the file itself: give it a temp name, then fsync and rename.
    let tmp = dir.join(format!(".model.safetensors.{}.tmp", std::process::id()));
    let mut store = SafetensorsStore::from_file(&tmp)
        .with_to_adapter(BurnToPyTorchAdapter)
        .with_key_remapping(r"\.attention\.self_attn\.", ".attention.self.")
        .metadata("format", "pt")
        .overwrite(true);
    match model {
        SequenceClassifier::Bert(m) => m.save_into(&mut store),
        SequenceClassifier::Roberta(m) => m.save_into(&mut store),
        SequenceClassifier::DistilBert(m) => m.save_into(&mut store),
        SequenceClassifier::Longformer(m) => m.save_into(&mut store),
        SequenceClassifier::ModernBert(m) => m.save_into(&mut store),
    }
    .map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        HfError::Weights {
            path: weights.clone(),
            message: e.to_string(),
        }
    })?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &weights))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_err(&weights)(e)
        })?;

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
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut store = SafetensorsStore::from_file(&tmp)
        .metadata("format", "sequin-fusion")
        .overwrite(true);
    head.save_into(&mut store).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        HfError::Weights {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    })?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_err(path)(e)
        })
}
