//! Fuzzed readers: generated and mutated inputs thrown at every file sequin reads (CSV, JSONL,
//! Parquet, `config.json`, `tokenizer.json`, safetensors, `fusion.json`, `sequin.json`).
//!
//! Seeds are real files (the bundled data and fixtures, and a tiny fusion model trained at the
//! start); proptest draws mutations of them (byte flips, truncation, inserted bytes, huge
//! numbers, invalid UTF-8, deep nesting, a JSON value swapped for another type, gigantic
//! declared sizes) and shrinks a failure to the smallest one. The property, for every reader:
//! a typed error or a valid result; never a panic, never past a second, never an allocation of
//! a gigabyte.
//!
//! `cargo xtask test` runs a bounded number of cases (`SEQUIN_FUZZ_CASES` per reader, 2000 by
//! default); `cargo xtask fuzz --minutes N` runs for a time instead (`SEQUIN_FUZZ_SECONDS`).

mod alloc;
mod mutate;
mod readers;

use std::time::{Duration, Instant};

use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

use crate::mutate::Mutation;
use crate::readers::{Reader, Seeds};

/// The longest a reader may take on one input.
const PATIENCE: Duration = Duration::from_secs(1);
/// The most a reader may have allocated at once on one input.
const MEMORY: usize = 1 << 30;

/// Runs `reader` on one mutated input: a panic, a hang or a huge allocation fails the case.
fn one_case(reader: &Reader, seed: &[u8], muts: &[Mutation]) -> Result<(), TestCaseError> {
    let input = mutate::apply(seed, muts, reader.json);
    alloc::reset_peak();
    let start = Instant::now();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (reader.read)(&input)));
    let took = start.elapsed();
    let peak = alloc::peak_since_reset();
    match outcome {
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(TestCaseError::fail(format!(
                "{}: panic: {msg}",
                reader.name
            )))
        }
        Ok(_) if took > PATIENCE => Err(TestCaseError::fail(format!(
            "{}: took {took:?}",
            reader.name
        ))),
        Ok(_) if peak > MEMORY => Err(TestCaseError::fail(format!(
            "{}: allocated {peak} bytes",
            reader.name
        ))),
        Ok(_) => Ok(()),
    }
}

/// Cases per reader: by count, or until a deadline.
enum Budget {
    Cases(u32),
    Seconds(u64),
}

fn budget() -> Budget {
    if let Some(s) = std::env::var("SEQUIN_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return Budget::Seconds(s);
    }
    Budget::Cases(
        std::env::var("SEQUIN_FUZZ_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2000),
    )
}

/// Runs one reader over its seeds for `cases` cases (the same cases on every run when
/// `deterministic`); returns the cases run.
fn fuzz_reader(reader: &Reader, seeds: &[Vec<u8>], cases: u32, deterministic: bool) -> u64 {
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    };
    let mut runner = if deterministic {
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
    } else {
        TestRunner::new(config)
    };
    let strategy = (0..seeds.len(), mutate::mutations());
    let result = runner.run(&strategy, |(i, muts)| one_case(reader, &seeds[i], &muts));
    if let Err(e) = result {
        // The default hook again, for this test's own failure.
        drop(std::panic::take_hook());
        panic!("fuzz {}: {e}", reader.name);
    }
    cases as u64
}

#[test]
fn every_reader_survives_mutated_inputs() {
    let seeds = Seeds::build();
    // Panics are caught per case and reported with their message; the hook's own printing
    // (of panics that libraries catch, too) would only drown the summary.
    std::panic::set_hook(Box::new(|_| {}));
    let readers = readers::all(&seeds);
    let mut total = 0u64;
    let mut lines = Vec::new();
    let budget = budget();
    let per_reader = match budget {
        Budget::Seconds(s) => Duration::from_secs(s) / readers.len() as u32,
        Budget::Cases(_) => Duration::ZERO,
    };
    for reader in &readers {
        let start = Instant::now();
        let mut n = 0u64;
        match budget {
            Budget::Cases(c) => n += fuzz_reader(reader, &reader.seeds, c, true),
            Budget::Seconds(_) => {
                while start.elapsed() < per_reader {
                    n += fuzz_reader(reader, &reader.seeds, 500, false);
                }
            }
        }
        total += n;
        lines.push(format!(
            "{:>14}: {n:>8} cases in {:>6.1} s",
            reader.name,
            start.elapsed().as_secs_f64()
        ));
    }
    eprintln!("fuzz: {total} cases, 0 failures\n{}", lines.join("\n"));
    assert!(total > 0);
}
