//! The batching queue: requests wait in a channel; one inference thread takes as many as fit
//! a token budget (and a request count), sorts their texts by length so that each forward
//! pass pads little, runs them through the same [`sequin_train::Inference`] path as
//! `sequin predict` (row shards in parallel on a pool sized to the cores), and answers each
//! request with its own predictions. The async runtime's threads never run the model.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Instant;

use sequin_data::Record;
use sequin_tokenize::EncodeOptions;
use sequin_train::{Classifier, Prediction, ScoreFunction};
use tokio::sync::oneshot;

use super::metrics::Metrics;

/// One request's work.
pub(crate) struct Job {
    /// Its inputs.
    pub(crate) records: Vec<Record>,
    /// Tokens per input (before truncation), for the budget and the length order.
    pub(crate) lengths: Vec<usize>,
    /// The score function (`None`: the model's default).
    pub(crate) function: Option<ScoreFunction>,
    /// The best `k` labels to list.
    pub(crate) top_k: Option<usize>,
    /// Where the answer goes (one prediction per input, in order).
    pub(crate) reply: oneshot::Sender<Result<Vec<Prediction>, String>>,
}

impl Job {
    /// The job's tokens as the budget counts them: each input's, at most `max_length` when
    /// the model truncates.
    fn tokens(&self, cap: usize) -> usize {
        self.lengths.iter().map(|&n| n.min(cap)).sum()
    }
}

/// The budget of one batch.
#[derive(Clone, Copy)]
pub(crate) struct Budget {
    pub(crate) max_tokens: usize,
    pub(crate) max_requests: usize,
    /// Tokens an input counts for at most (its max length under truncation; no cap when the
    /// model reads long texts in windows).
    pub(crate) token_cap: usize,
}

/// The inference loop: runs until every sender is gone, then returns.
pub(crate) fn run(
    c: Classifier,
    opts: EncodeOptions,
    batch_size: usize,
    rx: Receiver<Job>,
    budget: Budget,
    metrics: Arc<Metrics>,
) {
    let policy = c.policy_for(opts).expect("max length checked at load");
    let inference = c.inference(&policy, batch_size);
    let mut waiting: VecDeque<Job> = VecDeque::new();
    loop {
        let first = match waiting.pop_front() {
            Some(j) => j,
            None => match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            },
        };
        let jobs = gather(first, &rx, &mut waiting, budget);
        let texts: usize = jobs.iter().map(|j| j.records.len()).sum();
        let tokens: usize = jobs.iter().map(|j| j.tokens(budget.token_cap)).sum();
        metrics.queue_depth.dec_by(texts as i64);
        metrics.batch_size.observe(texts as f64);
        metrics.batch_tokens.observe(tokens as f64);
        // Every input of the batch, longest first.
        let mut rows: Vec<(usize, usize)> = jobs
            .iter()
            .enumerate()
            .flat_map(|(j, job)| (0..job.records.len()).map(move |i| (j, i)))
            .collect();
        rows.sort_by_key(|&(j, i)| std::cmp::Reverse(jobs[j].lengths[i]));
        let refs: Vec<&Record> = rows.iter().map(|&(j, i)| &jobs[j].records[i]).collect();
        let start = Instant::now();
        let logits = std::panic::catch_unwind(AssertUnwindSafe(|| inference.doc_logits(&refs)));
        metrics.inference.observe(start.elapsed().as_secs_f64());
        let logits = match logits {
            Ok(Ok(l)) => Ok(l),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the model failed on this batch (a panic); see the server log".into()),
        };
        // Counted before the answers go out: a client that has its answer sees it in /metrics.
        if logits.is_ok() {
            metrics.texts.inc_by(texts as u64);
        }
        answer(&c, jobs, &rows, logits);
    }
}

/// The first job and every waiting one that fits the budget with it (at least the first).
fn gather(first: Job, rx: &Receiver<Job>, waiting: &mut VecDeque<Job>, b: Budget) -> Vec<Job> {
    let mut tokens = first.tokens(b.token_cap);
    let mut jobs = vec![first];
    while jobs.len() < b.max_requests {
        let next = match waiting.pop_front() {
            Some(j) => j,
            None => match rx.try_recv() {
                Ok(j) => j,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            },
        };
        let t = next.tokens(b.token_cap);
        if tokens + t > b.max_tokens {
            waiting.push_front(next);
            break;
        }
        tokens += t;
        jobs.push(next);
    }
    jobs
}

/// Sends each job its predictions (rows back in its input order), or the batch's error.
fn answer(
    c: &Classifier,
    jobs: Vec<Job>,
    rows: &[(usize, usize)],
    logits: Result<Vec<Vec<f32>>, String>,
) {
    let mut per_job: Vec<Vec<Vec<f32>>> = jobs
        .iter()
        .map(|j| vec![Vec::new(); j.records.len()])
        .collect();
    let logits = match logits {
        Ok(l) => l,
        Err(e) => {
            for job in jobs {
                let _ = job.reply.send(Err(e.clone()));
            }
            return;
        }
    };
    for (&(j, i), l) in rows.iter().zip(logits) {
        per_job[j][i] = l;
    }
    for (job, l) in jobs.into_iter().zip(per_job) {
        let preds = c.predictions(l, job.function, job.top_k);
        // (A client that went away no longer waits for its answer.)
        let _ = job.reply.send(Ok(preds));
    }
}
