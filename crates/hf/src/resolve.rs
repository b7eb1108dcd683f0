//! Model resolution: a local folder, or a hub id through hf-hub. The only network access in
//! sequin lives here.

use std::path::{Path, PathBuf};

use crate::{HfError, Result};

/// What a model folder needs, as local loading accepts it: each entry is satisfied by the
/// first of its alternatives that exists.
const REQUIRED: &[(&str, &[&str])] = &[
    ("the config", &["config.json"]),
    ("the weights", &["model.safetensors", "pytorch_model.bin"]),
    ("the tokenizer", &["tokenizer.json", "vocab.txt"]),
];
/// Side files fetched when the repo has them.
const OPTIONAL: &[&str] = &[
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "added_tokens.json",
    "sequin.json",
    "fusion.json",
    "fusion.safetensors",
];

/// Where and how to resolve hub ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveOptions {
    /// Consult only the cache (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// The hf-hub cache folder (`HF_HOME`/hub, else `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// The hub's address (`HF_ENDPOINT`, else `https://huggingface.co`).
    pub endpoint: Option<String>,
}

impl ResolveOptions {
    /// From the environment, as transformers reads it.
    pub fn from_env() -> Self {
        Self {
            offline: std::env::var("HF_HUB_OFFLINE")
                .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
                .unwrap_or(false),
            cache_dir: hf_hub::Cache::from_env().path().clone(),
            endpoint: std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()),
        }
    }
}

/// Resolves `id` to a local model folder, with options from the environment.
pub fn resolve(id: &str) -> Result<PathBuf> {
    resolve_with(id, &ResolveOptions::from_env())
}

/// Whether `id` is spelt as a hub id (`name` or `org/name`), not as a path.
fn is_hub_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('/').collect();
    (1..=2).contains(&parts.len())
        && parts.iter().all(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
        && !id.starts_with('.')
}

/// Resolves `id` to a local model folder.
///
/// - An existing directory is returned as is.
/// - Otherwise `id` is taken as a hub id (`org/name`) and fetched through hf-hub's cache: the
///   config, the weights (`model.safetensors`, else `pytorch_model.bin`), the tokenizer
///   (`tokenizer.json`, else `vocab.txt`) and the side files the repo has. Offline, only the
///   cache is consulted, and a missing file is named. An unreachable hub gives a clear error.
pub fn resolve_with(id: &str, opts: &ResolveOptions) -> Result<PathBuf> {
    let p = Path::new(id);
    if p.is_dir() {
        return Ok(p.to_path_buf());
    }
    let err = |message: String| HfError::Resolve {
        id: id.into(),
        message,
    };
    if !is_hub_id(id) {
        return Err(err(
            "no such folder, and not a Hugging Face Hub id (org/name)".into(),
        ));
    }
    let cache = hf_hub::Cache::new(opts.cache_dir.clone());
    if opts.offline {
        return from_cache(&cache.model(id.to_string()), opts).map_err(err);
    }
    let mut api = hf_hub::api::sync::ApiBuilder::from_cache(cache).with_progress(true);
    if let Some(endpoint) = &opts.endpoint {
        api = api.with_endpoint(endpoint.clone());
    }
    let api = api.build().map_err(|e| err(e.to_string()))?;
    let repo = api.model(id.to_string());
    let mut dir = None;
    for (what, names) in REQUIRED {
        let got = first_available(&repo, names).map_err(|e| err(format!("{what}: {e}")))?;
        dir = got.parent().map(Path::to_path_buf);
    }
    for f in OPTIONAL {
        let _ = repo.get(f);
    }
    Ok(dir.expect("at least one file"))
}

/// The model folder in the cache, when it holds every required file.
fn from_cache(
    repo: &hf_hub::CacheRepo,
    opts: &ResolveOptions,
) -> std::result::Result<PathBuf, String> {
    let mut dir = None;
    for (what, names) in REQUIRED {
        let Some(found) = names.iter().find_map(|f| repo.get(f)) else {
            return Err(format!(
                "HF_HUB_OFFLINE is set and the cache at {} has no {} for it ({}); pass a local \
                 folder to --model, or fetch the model while online",
                opts.cache_dir.display(),
                what,
                names.join(" or ")
            ));
        };
        dir = found.parent().map(Path::to_path_buf);
    }
    Ok(dir.expect("at least one file"))
}

/// The first of `names` the repo has (a 404 moves on to the next); another failure is an
/// error that says what to do.
fn first_available(
    repo: &hf_hub::api::sync::ApiRepo,
    names: &[&str],
) -> std::result::Result<PathBuf, String> {
    for name in names {
        match repo.get(name) {
            Ok(path) => return Ok(path),
            Err(hf_hub::api::sync::ApiError::RequestError(e))
                if matches!(*e, ureq::Error::Status(404, _)) => {}
            Err(e) => {
                return Err(format!(
                    "could not fetch {name} from the Hugging Face Hub ({e}); if this machine is \
                     offline, pass a local folder to --model, or set HF_HUB_OFFLINE=1 to use the \
                     cache"
                ));
            }
        }
    }
    Err(format!("the repo has none of {}", names.join(", ")))
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
            endpoint: None,
        };
        assert_eq!(resolve_with(d.to_str().unwrap(), &opts).unwrap(), d);
    }

    #[test]
    fn offline_cache_miss_is_a_clear_error() {
        let cache = std::env::temp_dir().join(format!("sequin-empty-hub-{}", std::process::id()));
        let opts = ResolveOptions {
            offline: true,
            cache_dir: cache.clone(),
            endpoint: None,
        };
        let e = resolve_with("sentence-transformers/all-MiniLM-L6-v2", &opts)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("HF_HUB_OFFLINE") && e.contains("config.json") && e.contains("--model"),
            "{e}"
        );
    }

    #[test]
    fn missing_path_is_not_sent_to_the_hub() {
        let opts = ResolveOptions {
            offline: false,
            cache_dir: std::env::temp_dir(),
            endpoint: None,
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
