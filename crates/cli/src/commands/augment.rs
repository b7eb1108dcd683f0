//! `sequin augment`: an augmented copy of a data file, with provenance columns.

use anyhow::{Context, Result};
use sequin_data::{Columns, ProvenanceRow, write_records};

use crate::args::AugmentArgs;

/// The pipeline named by `spec`: `eda`, `noise`, `aeda`, or a JSON file.
pub(crate) fn augment_spec(spec: &str) -> Result<sequin_augment::Pipeline> {
    use sequin_augment::{Op, Pipeline};
    let p = match spec {
        "eda" => Pipeline::eda(0.1, 0.1, 0.1, 0.1),
        "noise" => Pipeline::OneOf {
            steps: vec![
                Pipeline::Op(Op::KeyboardTypo { p: 0.1 }),
                Pipeline::Op(Op::CharSwap { p: 0.1 }),
                Pipeline::Op(Op::CharDeletion { p: 0.1 }),
            ],
        },
        "aeda" => Pipeline::Op(Op::Punctuation),
        path => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("--spec {path}: not `eda`, `noise` or `aeda`, and not a readable file")
            })?;
            serde_json::from_str(&text)
                .with_context(|| format!("{path}: not a valid augmentation pipeline"))?
        }
    };
    p.validate()?;
    Ok(p)
}

/// `sequin augment`: every row, then `num_aug` variants of it.
pub(crate) fn augment(a: AugmentArgs) -> Result<()> {
    use rand::SeedableRng;
    crate::commands::refuse_same_file(&a.input, &a.output)?;
    let pipeline = augment_spec(&a.spec)?;
    let mut cols = Columns {
        text: a.columns.text_column.clone(),
        text_pair: a.columns.text_pair_column.clone(),
        label: (!a.no_label).then(|| a.label_column.clone()),
        label_columns: Vec::new(),
        features: Vec::new(),
    };
    // Every other column (metadata) is carried over to the variants, as text.
    cols.features = sequin_data::column_names(&a.input)?
        .into_iter()
        .filter(|c| {
            *c != cols.text
                && Some(c) != cols.text_pair.as_ref()
                && Some(c) != cols.label.as_ref()
                && c != "source_row"
                && c != "augmentation"
        })
        .collect();
    let records = sequin_data::read_records(&a.input, &cols)?;
    let aug = sequin_augment::Augmenter::new().with_protected(a.protect.clone());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed);
    let mut rows: Vec<ProvenanceRow> = Vec::new();
    let pb = indicatif::ProgressBar::new(records.len() as u64);
    for (i, r) in records.iter().enumerate() {
        rows.push(ProvenanceRow {
            source_row: i + 1,
            augmentation: "original".into(),
            record: r.clone(),
        });
        for _ in 0..a.num_aug {
            let out = aug.apply(&r.text, &pipeline, &mut rng);
            let mut v = r.clone();
            v.text = out.text;
            let ops = if out.ops.is_empty() {
                "unchanged".to_string()
            } else {
                out.ops.join("+")
            };
            rows.push(ProvenanceRow {
                source_row: i + 1,
                augmentation: ops,
                record: v,
            });
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    write_records(&a.output, &cols, &rows)?;
    eprintln!("wrote {} rows to {}", rows.len(), a.output.display());
    Ok(())
}
