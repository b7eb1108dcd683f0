//! The readers under test, each with its seed files and a way to run it on bytes.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use sequin_data::{Columns, ProvenanceRow, read_records, write_records};
use sequin_heads::FusionMethod;
use sequin_hf::{HfConfig, load_classifier};
use sequin_tokenize::{EncodeOptions, Tokenizer};
use sequin_train::{TrainConfig, read_fusion_file, read_policy, train_model};

/// The repository root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

/// A run of a reader on one input's bytes (the result is only observed).
pub type ReadFn = Box<dyn Fn(&[u8])>;

/// A reader: its name, its seeds, and a run on one input.
pub struct Reader {
    pub name: &'static str,
    /// Whether the input is JSON (or JSON lines), which `Retype` edits structurally.
    pub json: bool,
    pub seeds: Vec<Vec<u8>>,
    pub read: ReadFn,
}

/// The seed files, written to a temp folder at the start.
pub struct Seeds {
    dir: PathBuf,
    /// A tiny metadata (fusion) model folder per method.
    fusion_models: Vec<PathBuf>,
}

impl Drop for Seeds {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The columns of the data seeds: a text, a label and three kinds of metadata.
fn data_columns() -> Columns {
    Columns {
        features: vec!["condition".into(), "useful_count".into(), "date".into()],
        ..Columns::default()
    }
}

impl Seeds {
    pub fn build() -> Self {
        let dir = std::env::temp_dir().join(format!("sequin-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Data seeds: 24 real rows, as CSV, JSONL and Parquet.
        let train = root().join("datasets/drug-reviews/train.parquet");
        let records = read_records(&train, &data_columns()).unwrap();
        let rows: Vec<ProvenanceRow> = records
            .into_iter()
            .take(24)
            .enumerate()
            .map(|(i, record)| ProvenanceRow {
                source_row: i + 1,
                augmentation: "original".into(),
                record,
            })
            .collect();
        for ext in ["csv", "jsonl", "parquet"] {
            write_records(&dir.join(format!("seed.{ext}")), &data_columns(), &rows).unwrap();
        }
        // Fusion seeds: a tiny metadata model per method, trained for one step.
        let fusion_models = [FusionMethod::Gating, FusionMethod::Attention]
            .iter()
            .map(|m| {
                let out = dir.join(format!("fusion-{m:?}"));
                let mut cfg =
                    TrainConfig::new(fixture("bert-tiny-cls").to_string_lossy(), &train, &out);
                cfg.features.numeric = vec!["useful_count".into()];
                cfg.features.categorical = vec!["condition".into()];
                cfg.fusion = Some(*m);
                cfg.max_steps = Some(1);
                cfg.max_train_samples = Some(64);
                cfg.max_length = 32;
                train_model(&cfg, &Device::flex()).unwrap();
                out
            })
            .collect();
        Seeds { dir, fusion_models }
    }

    fn work(&self, name: &str) -> PathBuf {
        let d = self.dir.join("work").join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// A data-file reader (by extension).
fn data_reader(seeds: &Seeds, name: &'static str, ext: &str, json: bool) -> Reader {
    let path = seeds.work(name).join(format!("input.{ext}"));
    let seed = read(&seeds.dir.join(format!("seed.{ext}")));
    Reader {
        name,
        json,
        seeds: vec![seed],
        read: Box::new(move |b| {
            std::fs::write(&path, b).unwrap();
            let _ = read_records(&path, &data_columns());
        }),
    }
}

/// Every reader.
pub fn all(seeds: &Seeds) -> Vec<Reader> {
    let mut readers = vec![
        data_reader(seeds, "csv", "csv", false),
        data_reader(seeds, "jsonl", "jsonl", true),
        data_reader(seeds, "parquet", "parquet", false),
    ];
    readers.push(config_reader(seeds));
    readers.push(tokenizer_reader(seeds));
    readers.push(vocab_reader(seeds));
    readers.push(safetensors_reader(seeds));
    readers.push(fusion_reader(seeds));
    readers.push(policy_reader(seeds));
    readers
}

/// Whether a config's numbers are small enough to build its model in a test: the two largest
/// multiplied stay under 50 million (an embedding table at most).
fn small_enough(b: &[u8]) -> bool {
    fn numbers(v: &serde_json::Value, out: &mut Vec<f64>) {
        match v {
            serde_json::Value::Number(n) => out.push(n.as_f64().unwrap_or(f64::MAX).abs()),
            serde_json::Value::Array(a) => a.iter().for_each(|x| numbers(x, out)),
            serde_json::Value::Object(o) => o.values().for_each(|x| numbers(x, out)),
            _ => {}
        }
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(b) else {
        return false;
    };
    let mut n = Vec::new();
    numbers(&v, &mut n);
    n.sort_by(|a, b| b.total_cmp(a));
    n.first().copied().unwrap_or(0.0) * n.get(1).copied().unwrap_or(1.0) <= 5e7
}

/// `config.json`: parsed, its sizes asked for, and (when they are small) its model built.
fn config_reader(seeds: &Seeds) -> Reader {
    let dir = seeds.work("config");
    let seeds_ = [
        "bert-tiny-cls",
        "roberta-tiny-cls",
        "distilbert-tiny-cls",
        "longformer-tiny-cls",
        "modernbert-tiny-cls",
    ]
    .iter()
    .map(|f| read(&fixture(f).join("config.json")))
    .collect();
    let device = Device::flex();
    Reader {
        name: "config.json",
        json: true,
        seeds: seeds_,
        read: Box::new(move |b| {
            std::fs::write(dir.join("config.json"), b).unwrap();
            if let Ok(c) = HfConfig::from_dir(&dir) {
                let _ = (c.arch.max_length(), c.arch.vocab_size(), &c.labels);
                if small_enough(b) {
                    let _ = c.arch.init_classifier(2, &device);
                }
            }
        }),
    }
}

/// `tokenizer.json`: loaded, then a text and a pair encoded.
fn tokenizer_reader(seeds: &Seeds) -> Reader {
    let path = seeds.work("tokenizer").join("tokenizer.json");
    Reader {
        name: "tokenizer.json",
        json: true,
        seeds: vec![
            read(&fixture("modernbert-tiny-cls/tokenizer.json")),
            read(&fixture("roberta-tiny-cls/tokenizer.json")),
        ],
        read: Box::new(move |b| {
            std::fs::write(&path, b).unwrap();
            if let Ok(t) = Tokenizer::from_file(&path) {
                let opts = EncodeOptions {
                    max_length: 32,
                    pad_to_multiple_of: None,
                };
                let _ = t.encode("Héllo wörld, 123!", Some("a pair"), opts);
            }
        }),
    }
}

/// `vocab.txt` (with its `tokenizer_config.json`): a WordPiece tokenizer built from it.
fn vocab_reader(seeds: &Seeds) -> Reader {
    let dir = seeds.work("vocab");
    std::fs::copy(
        fixture("vocab-only/tokenizer_config.json"),
        dir.join("tokenizer_config.json"),
    )
    .unwrap();
    // The first 2000 entries: the same format, faster cases.
    let vocab = String::from_utf8(read(&fixture("vocab-only/vocab.txt"))).unwrap();
    let seed: String = vocab.lines().take(2000).map(|l| format!("{l}\n")).collect();
    Reader {
        name: "vocab.txt",
        json: false,
        seeds: vec![seed.into_bytes()],
        read: Box::new(move |b| {
            std::fs::write(dir.join("vocab.txt"), b).unwrap();
            if let Ok(t) = Tokenizer::from_dir(&dir) {
                let opts = EncodeOptions {
                    max_length: 32,
                    pad_to_multiple_of: None,
                };
                let _ = t.encode("unaffable [UNK] text", None, opts);
            }
        }),
    }
}

/// `model.safetensors` under a valid `config.json`: the classifier loaded from it.
fn safetensors_reader(seeds: &Seeds) -> Reader {
    let dir = seeds.work("safetensors");
    let src = fixture("xlm-roberta-b-tiny-cls");
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let device = Device::flex();
    Reader {
        name: "safetensors",
        json: false,
        seeds: vec![read(&src.join("model.safetensors"))],
        read: Box::new(move |b| {
            std::fs::write(dir.join("model.safetensors"), b).unwrap();
            let _ = load_classifier(&dir, None, &device);
        }),
    }
}

/// `fusion.json`: read, checked against its model and weights, and the head built.
fn fusion_reader(seeds: &Seeds) -> Reader {
    let dir = seeds.work("fusion");
    let weights: Vec<u64> = seeds
        .fusion_models
        .iter()
        .map(|m| {
            std::fs::metadata(m.join("fusion.safetensors"))
                .unwrap()
                .len()
        })
        .collect();
    let weight_bytes = weights.into_iter().max().unwrap();
    let text_size = 32;
    let device = Device::flex();
    Reader {
        name: "fusion.json",
        json: true,
        seeds: seeds
            .fusion_models
            .iter()
            .map(|m| read(&m.join("fusion.json")))
            .collect(),
        read: Box::new(move |b| {
            let path = dir.join("fusion.json");
            std::fs::write(&path, b).unwrap();
            if let Ok(Some(f)) = read_fusion_file(&dir)
                && f.check(&path, text_size, weight_bytes).is_ok()
            {
                let _ = f.fusion.init(&device);
            }
        }),
    }
}

/// `sequin.json`: the input policy and schema read.
fn policy_reader(seeds: &Seeds) -> Reader {
    let dir = seeds.work("policy");
    let config = HfConfig::from_dir(&fixture("bert-tiny-cls")).unwrap();
    Reader {
        name: "sequin.json",
        json: true,
        seeds: seeds
            .fusion_models
            .iter()
            .map(|m| read(&m.join("sequin.json")))
            .collect(),
        read: Box::new(move |b| {
            std::fs::write(dir.join("sequin.json"), b).unwrap();
            let _ = read_policy(&dir, &config);
        }),
    }
}
