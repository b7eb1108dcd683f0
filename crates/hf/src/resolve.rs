//! Model resolution: a local folder, or a hub id through hf-hub. The only network access in
//! sequin lives here.

use std::path::{Path, PathBuf};

use crate::{HfError, Result};

const FILES: &[&str] = &["config.json", "model.safetensors", "tokenizer.json"];
const OPTIONAL: &[&str] = &[
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
];

/// Resolves `id` to a local model folder.
///
/// - An existing directory is returned as is.
/// - Otherwise `id` is taken as a hub id (`org/name`) and fetched through hf-hub's cache.
///   With `HF_HUB_OFFLINE=1` only the cache is consulted. Unreachable hubs give a clear error.
pub fn resolve(id: &str) -> Result<PathBuf> {
    let p = Path::new(id);
    if p.is_dir() {
        return Ok(p.to_path_buf());
    }
    let looks_like_path = id.starts_with('.') || id.starts_with('/') || id.matches('/').count() > 1;
    if looks_like_path || !id.contains('/') && p.extension().is_some() {
        return Err(HfError::Resolve {
            id: id.into(),
            message: "no such folder".into(),
        });
    }
    let err = |message: String| HfError::Resolve {
        id: id.into(),
        message,
    };
    let offline = std::env::var("HF_HUB_OFFLINE")
        .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
        .unwrap_or(false);
    if offline {
        let cache = hf_hub::Cache::from_env();
        let repo = cache.model(id.to_string());
        let cfg = repo.get("config.json").ok_or_else(|| {
            err(format!(
                "HF_HUB_OFFLINE is set and the model is not in the cache at {}; \
                 pass a local folder to --model",
                cache.path().display()
            ))
        })?;
        return Ok(cfg.parent().expect("file in folder").to_path_buf());
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|e| err(e.to_string()))?;
    let repo = api.model(id.to_string());
    let mut dir = None;
    for f in FILES {
        let got = repo.get(f).map_err(|e| {
            err(format!(
                "could not fetch {f} from the Hugging Face Hub ({e}); if this machine is offline, \
                 pass a local folder to --model, or set HF_HUB_OFFLINE=1 to use the cache"
            ))
        })?;
        dir = got.parent().map(Path::to_path_buf);
    }
    for f in OPTIONAL {
        let _ = repo.get(f);
    }
    Ok(dir.expect("at least one file"))
}
