//! Checkpoints: `checkpoints/checkpoint-N/` folders (a model folder plus the optimizer and
//! trainer state), written through a temp folder and one rename, listed, pruned, and read
//! back for an exact resume.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::optim::ModuleOptimizer;
use burn::tensor::Bytes;
use sequin_encoders::common::DropoutStream;
use sequin_fs::AtomicDir;
use sequin_hf::write_atomic;

use super::Trainer;
use super::evaluate::best_metric;
use super::state::{CheckpointInfo, TrainerState};
use crate::classifier::Model;
use crate::{Result, TrainConfig, TrainError};

/// The file of [`TrainerState`] in a checkpoint.
pub const STATE_FILE: &str = "trainer_state.json";
/// The optimizer state in a checkpoint (burnpack).
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";
/// The folder of checkpoints in a run folder.
pub const CHECKPOINTS: &str = "checkpoints";

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sha256_file(p: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(p).map_err(io(p))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

/// sha256 of each data file of a config.
pub fn data_fingerprint(cfg: &TrainConfig) -> Result<BTreeMap<String, Option<String>>> {
    let mut m = BTreeMap::new();
    m.insert("train".into(), Some(sha256_file(&cfg.train)?));
    for (k, p) in [("validation", &cfg.validation), ("test", &cfg.test)] {
        m.insert(k.to_string(), p.as_deref().map(sha256_file).transpose()?);
    }
    Ok(m)
}

/// The checkpoints of a run folder, oldest first: `(step, folder)`. Unfinished checkpoints
/// (temp folders of a killed write) are not listed.
pub fn list_checkpoints(run_dir: &Path) -> Vec<(usize, PathBuf)> {
    let dir = run_dir.join(CHECKPOINTS);
    let mut out: Vec<(usize, PathBuf)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path()
                .join(STATE_FILE)
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// The last checkpoint of a run folder and its state.
pub fn latest_checkpoint(run_dir: &Path) -> Result<(PathBuf, TrainerState)> {
    let Some((_, dir)) = list_checkpoints(run_dir).pop() else {
        return Err(TrainError::Resume(format!(
            "{} holds no checkpoint to resume from (expected {}/checkpoint-N/{STATE_FILE})",
            run_dir.display(),
            run_dir.join(CHECKPOINTS).display()
        )));
    };
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let state: TrainerState = serde_json::from_str(&text).map_err(|e| {
        TrainError::Resume(format!(
            "{}: not a valid trainer state: {e}",
            path.display()
        ))
    })?;
    Ok((dir, state))
}

/// Checks that a resumed run is asked for with the options it was started with.
pub(crate) fn check_same_config(
    run_dir: &Path,
    state: &TrainerState,
    expected: Option<&TrainConfig>,
) -> Result<()> {
    if let Some(want) = expected
        && want != &state.config
    {
        let a = serde_json::to_value(want).expect("json");
        let b = serde_json::to_value(&state.config).expect("json");
        let diff: Vec<String> = a
            .as_object()
            .expect("object")
            .iter()
            .filter(|(k, v)| b.get(k.as_str()) != Some(v))
            .map(|(k, v)| {
                format!(
                    "{k}: {} → {v}",
                    b.get(k.as_str()).unwrap_or(&serde_json::Value::Null)
                )
            })
            .collect();
        return Err(TrainError::Resume(format!(
            "the options differ from those of the run in {} ({}); resume with the run's own options, or start a new run in another folder",
            run_dir.display(),
            diff.join("; ")
        )));
    }
    Ok(())
}

/// Restores the optimizer state and the dropout stream of the checkpoint in `dir`.
pub(crate) fn restore(
    dir: &Path,
    state: &TrainerState,
    optim: ModuleOptimizer,
) -> Result<(ModuleOptimizer, DropoutStream)> {
    let path = dir.join(OPTIMIZER_FILE);
    let bytes = std::fs::read(&path).map_err(io(&path))?;
    let optim = optim
        .from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| TrainError::Resume(format!("{}: {e}", path.display())))?;
    let bad =
        |what: &str| TrainError::Resume(format!("{}: bad {what}", dir.join(STATE_FILE).display()));
    let seed = hex_to_seed(&state.dropout_seed).ok_or_else(|| bad("dropout_seed"))?;
    let pos: u128 = state
        .dropout_word_pos
        .parse()
        .map_err(|_| bad("dropout_word_pos"))?;
    Ok((optim, DropoutStream::at(seed, pos)))
}

/// Removes what a killed run may have left half-written: temp files of atomic writes in the
/// run folder and temp checkpoint folders (never listed as checkpoints).
pub(crate) fn remove_leftovers(run_dir: &Path) {
    sequin_fs::remove_leftovers(run_dir);
    sequin_fs::remove_leftovers(&run_dir.join(CHECKPOINTS));
}

/// Records the dropout stream's position in the state (before a checkpoint).
pub(crate) fn capture_dropout(state: &mut TrainerState, dropout: &DropoutStream) {
    let (seed, pos) = dropout.position();
    state.dropout_seed = seed.iter().map(|b| format!("{b:02x}")).collect();
    state.dropout_word_pos = pos.to_string();
}

fn hex_to_seed(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

pub(crate) fn write_metrics(dir: &Path, log: &[serde_json::Value]) -> Result<()> {
    let lines: String = log.iter().map(|m| format!("{m}\n")).collect();
    write_atomic(&dir.join("metrics.jsonl"), lines.as_bytes())?;
    Ok(())
}

impl Trainer<'_> {
    /// Writes `checkpoints/checkpoint-N` for the current step (`score`: its validation score):
    /// an HF folder, the optimizer and the state, through a temp folder and one rename; then
    /// removes checkpoints beyond the last and the best `save_total_limit`.
    pub(super) fn write_checkpoint(&mut self, score: Option<f64>, model: &Model) -> Result<()> {
        let root = self.cfg.output.join(CHECKPOINTS);
        let fin = root.join(format!("checkpoint-{}", self.state.step));
        let dir = AtomicDir::create(&fin).map_err(io(&fin))?;
        self.folder().write(dir.temp_path(), model, &self.policy)?;
        let bytes = self.optim.into_bytes().map_err(|e| {
            TrainError::Resume(format!("cannot serialise the optimizer state: {e}"))
        })?;
        write_atomic(&dir.temp_path().join(OPTIMIZER_FILE), &bytes)?;
        let dropped = keep_checkpoints(self.cfg, &mut self.state, score);
        write_atomic(
            &dir.temp_path().join(STATE_FILE),
            serde_json::to_string_pretty(&self.state)
                .expect("json")
                .as_bytes(),
        )?;
        // (A resumed run re-writing the checkpoint it started from swaps it out atomically.)
        dir.commit().map_err(io(&fin))?;
        for step in dropped {
            // Renamed out of the checkpoint namespace first: a kill mid-removal leaves a temp
            // folder (cleaned at resume), never a half-deleted checkpoint.
            let _ = sequin_fs::remove(&root.join(format!("checkpoint-{step}")));
        }
        Ok(())
    }
}

/// Records the current step's checkpoint in the state and chooses which to keep: the last,
/// and the best `save_total_limit` by score. Returns the steps of those to remove.
fn keep_checkpoints(cfg: &TrainConfig, state: &mut TrainerState, score: Option<f64>) -> Vec<usize> {
    state.checkpoints.retain(|c| c.step != state.step);
    state.checkpoints.push(CheckpointInfo {
        step: state.step,
        score,
    });
    let higher = best_metric(cfg, state.problem_type()) != "loss";
    let mut ranked: Vec<CheckpointInfo> = state.checkpoints.clone();
    ranked.sort_by(|a, b| {
        let key = |c: &CheckpointInfo| c.score.unwrap_or(c.step as f64);
        let ord = key(b).total_cmp(&key(a));
        if higher { ord } else { ord.reverse() }
    });
    let keep: Vec<usize> = ranked
        .iter()
        .take(cfg.save_total_limit)
        .map(|c| c.step)
        .chain([state.step])
        .collect();
    let dropped: Vec<usize> = state
        .checkpoints
        .iter()
        .filter(|c| !keep.contains(&c.step))
        .map(|c| c.step)
        .collect();
    state.checkpoints.retain(|c| keep.contains(&c.step));
    dropped
}
