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

/// Where and how to resolve hub ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveOptions {
    /// Consult only the cache (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// The hf-hub cache folder (`HF_HOME`/hub, else `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
}

impl ResolveOptions {
    /// From the environment, as transformers reads it.
    pub fn from_env() -> Self {
        Self {
            offline: std::env::var("HF_HUB_OFFLINE")
                .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
                .unwrap_or(false),
            cache_dir: hf_hub::Cache::from_env().path().clone(),
        }
    }
}

/// Resolves `id` to a local model folder, with options from the environment.
pub fn resolve(id: &str) -> Result<PathBuf> {
    resolve_with(id, &ResolveOptions::from_env())
}

/// Resolves `id` to a local model folder.
///
/// - An existing directory is returned as is.
/// - Otherwise `id` is taken as a hub id (`org/name`) and fetched through hf-hub's cache.
///   Offline, only the cache is consulted. An unreachable hub gives a clear error.
pub fn resolve_with(id: &str, opts: &ResolveOptions) -> Result<PathBuf> {
    let p = Path::new(id);
    if p.is_dir() {
        return Ok(p.to_path_buf());
    }
    let err = |message: String| HfError::Resolve {
        id: id.into(),
        message,
    };
    let is_hub_id = {
        let parts: Vec<&str> = id.split('/').collect();
        (1..=2).contains(&parts.len())
            && parts.iter().all(|s| {
                !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            })
            && !id.starts_with('.')
    };
    if !is_hub_id {
        return Err(err(
            "no such folder, and not a Hugging Face Hub id (org/name)".into(),
        ));
    }
    let cache = hf_hub::Cache::new(opts.cache_dir.clone());
    if opts.offline {
        let repo = cache.model(id.to_string());
        let cfg = repo.get("config.json").ok_or_else(|| {
            err(format!(
                "no such folder, and HF_HUB_OFFLINE is set while the model is not in the cache at {}; \
                 pass a local folder to --model",
                opts.cache_dir.display()
            ))
        })?;
        return Ok(cfg.parent().expect("file in folder").to_path_buf());
    }
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_folder_is_returned_as_is() {
        let d = std::env::temp_dir();
        let opts = ResolveOptions {
            offline: true,
            cache_dir: d.join("nope"),
        };
        assert_eq!(resolve_with(d.to_str().unwrap(), &opts).unwrap(), d);
    }

    #[test]
    fn offline_cache_miss_is_a_clear_error() {
        let cache = std::env::temp_dir().join(format!("sequin-empty-hub-{}", std::process::id()));
        let opts = ResolveOptions {
            offline: true,
            cache_dir: cache.clone(),
        };
        let e = resolve_with("sentence-transformers/all-MiniLM-L6-v2", &opts)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("HF_HUB_OFFLINE") && e.contains("not in the cache") && e.contains("--model"),
            "{e}"
        );
    }

    #[test]
    fn missing_path_is_not_sent_to_the_hub() {
        let opts = ResolveOptions {
            offline: false,
            cache_dir: std::env::temp_dir(),
        };
        let e = resolve_with("./models/does-not-exist", &opts)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such folder"), "{e}");
        let e = resolve_with("/abs/path/to/model", &opts)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such folder"), "{e}");
    }
}
