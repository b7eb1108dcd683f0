//! Row shards: a batch trained as parallel shards has the loss it has whole.

use crate::common::*;

/// A batch trained as parallel row shards has the loss it has whole: the shards' weighted
/// losses add up to the batch's mean, with plain cross-entropy and with class-weighted
/// cross-entropy and focal loss (whose means divide by the batch's class weights, not its
/// rows). Dropout is off (a copy of the fixture with zero dropout), so only float rounding
/// differs between shard counts.
#[test]
fn shards_give_the_batch_loss() {
    let guard = TestDir::new("shards");
    let tmp = guard.root();
    let model = tmp.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for entry in std::fs::read_dir(tiny_bert()).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, model.join(p.file_name().unwrap())).unwrap();
    }
    let mut config = read_json(&model.join("config.json"));
    config["hidden_dropout_prob"] = 0.0.into();
    config["attention_probs_dropout_prob"] = 0.0.into();
    config["classifier_dropout"] = 0.0.into();
    std::fs::write(model.join("config.json"), config.to_string()).unwrap();
    let train = dataset("amazon-food", "train");
    let loss = |name: &str, shards: &str, extra: &[&str]| -> f64 {
        let out = tmp.join(format!("{name}-{shards}"));
        let mut args = vec![
            "train",
            "--model",
            model.to_str().unwrap(),
            "--train",
            train.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--max-train-samples",
            "24",
            "--batch-size",
            "24",
            "--epochs",
            "1",
            "--max-length",
            "48",
            "--shards",
            shards,
        ];
        args.extend(extra);
        sequin_ok(&args);
        let run = read_json(&out.join("run.json"));
        assert_eq!(run["config"]["shards"], shards.parse::<u64>().unwrap());
        run["summary"]["epochs"][0]["train_loss"].as_f64().unwrap()
    };
    for (name, extra) in [
        ("plain", &[][..]),
        ("weighted", &["--class-weights", "1,3"][..]),
        ("focal", &["--class-weights", "auto", "--loss", "focal"][..]),
    ] {
        let whole = loss(name, "1", extra);
        let sharded = loss(name, "3", extra);
        assert!(whole.is_finite() && whole > 0.0, "{name}: {whole}");
        assert!(
            (whole - sharded).abs() <= 1e-5 * whole,
            "{name}: 1 shard {whole}, 3 shards {sharded}"
        );
    }
}
