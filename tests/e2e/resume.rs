//! Exact resume after SIGKILL.

use burn::tensor::Device;
use sequin_train::Classifier;

use crate::common::*;

/// Exact resume: training is killed with SIGKILL at several points (whatever it was doing:
/// a step, an evaluation, a checkpoint write), resumed from its last checkpoint each time, and
/// the final weights are bit-identical to an uninterrupted run's. A resume refuses changed
/// options or data.
///
/// The killed runs are this test binary re-run as a child (`SEQUIN_KILL_CHILD` holds the
/// `sequin` arguments), so the test needs no separately built executable.
#[test]
fn killed_and_resumed_training_is_bit_identical() {
    const CHILD: &str = "SEQUIN_KILL_CHILD";
    if run_as_child(CHILD) {
        return;
    }
    let guard = TestDir::new("kill");
    let tmp = guard.root();
    let train = tmp.join("train.parquet");
    std::fs::copy(dataset("amazon-food", "train"), &train).unwrap();
    let out = tmp.join("run");
    let args = |output: &std::path::Path| -> Vec<String> {
        [
            "train",
            "--model",
            tiny_bert().to_str().unwrap(),
            "--train",
            train.to_str().unwrap(),
            "--validation",
            fixture("../../datasets/amazon-food/validation.parquet")
                .to_str()
                .unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--max-train-samples",
            "240",
            "--epochs",
            "3",
            "--batch-size",
            "16",
            "--max-length",
            "64",
            "--lr",
            "2e-3",
            "--eval-steps",
            "4",
            "--gradient-accumulation-steps",
            "2",
            "--save-total-limit",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    // 240 examples / 16 = 15 batches, 8 optimizer steps per epoch (the last of one batch),
    // 24 steps in all, a checkpoint every 4.
    let spawn = |a: Vec<String>| {
        spawn_self(
            "e2e::resume::killed_and_resumed_training_is_bit_identical",
            CHILD,
            &a,
        )
    };
    let last_step = |dir: &std::path::Path| sequin_train::list_checkpoints(dir).last().map(|c| c.0);
    let resume_args = || {
        vec![
            "train".to_string(),
            "--resume".into(),
            out.to_string_lossy().into_owned(),
        ]
    };
    let mut kills = Vec::new();
    let mut child = spawn(args(&out));
    for kill_after in [4, 12, 16] {
        let t0 = std::time::Instant::now();
        loop {
            if last_step(&out).is_some_and(|s| s >= kill_after) {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the child ended ({status}) before checkpoint {kill_after}");
            }
            assert!(
                t0.elapsed().as_secs() < 300,
                "no checkpoint {kill_after} after 300 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let at = last_step(&out).unwrap();
        kills.push(at);
        // Every checkpoint left behind is whole: its state parses and its weights load.
        for (step, dir) in sequin_train::list_checkpoints(&out) {
            let st: sequin_train::TrainerState = serde_json::from_str(
                &std::fs::read_to_string(dir.join("trainer_state.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(st.step, step);
            Classifier::load(&dir, &Device::flex()).unwrap();
        }
        if kill_after == 4 {
            // A resume with other options, or on changed data, is refused.
            let err = sequin("train")
                .arg("--resume", &out)
                .arg("--lr", "1e-3")
                .err();
            assert!(err.contains("lr") && err.contains("differ"), "{err}");
            std::fs::copy(dataset("amazon-food", "test"), &train).unwrap();
            let err = sequin("train").arg("--resume", &out).err();
            assert!(err.contains("data files changed"), "{err}");
            std::fs::copy(dataset("amazon-food", "train"), &train).unwrap();
        }
        child = spawn(resume_args());
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "the last resumed run failed: {status}");
    assert_eq!(last_step(&out), Some(24));

    // The same run, never interrupted, in this process.
    let reference = tmp.join("reference");
    let a = args(&reference);
    let mut all = vec!["sequin"];
    all.extend(a.iter().map(String::as_str));
    sequin_cli::run_args(all).unwrap();

    for file in [
        "model.safetensors",
        "checkpoints/checkpoint-24/model.safetensors",
    ] {
        let x = std::fs::read(out.join(file)).unwrap();
        let y = std::fs::read(reference.join(file)).unwrap();
        let (sx, sy) = (
            safetensors::SafeTensors::deserialize(&x).unwrap(),
            safetensors::SafeTensors::deserialize(&y).unwrap(),
        );
        let mut names = sx.names();
        names.sort();
        assert_eq!(names.len(), 41);
        let differ: Vec<&str> = names
            .into_iter()
            .filter(|n| sx.tensor(n).unwrap().data() != sy.tensor(n).unwrap().data())
            .collect();
        assert!(
            differ.is_empty(),
            "{file}: killed at checkpoints {kills:?} and resumed, the weights differ from an uninterrupted run in {differ:?}"
        );
    }
    // The same evaluations were logged.
    let evals = |d: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(d.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("elapsed_s");
                v.as_object_mut().unwrap().remove("train_samples_per_s");
                v
            })
            .collect()
    };
    assert_eq!(evals(&out), evals(&reference));
}
