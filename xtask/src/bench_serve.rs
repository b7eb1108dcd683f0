//! `cargo xtask bench-serve`: `sequin serve` under load, beside `sequin predict` on the same
//! texts, on one machine in one run (a benchmark, not a test). Bounded bursts: for 1, 8 and 64
//! concurrent clients, each review of the set is sent once as its own `POST /predict`, and
//! then the burst stops.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::bench::{cpu_flags, cpu_model};

/// The server under test, killed when dropped.
struct Served {
    child: Child,
    base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VmRSS and VmHWM of a process, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One burst: `clients` threads share the texts (client `c` sends texts `c, c + clients, …`),
/// one request per text.
fn burst(base: &str, texts: &[String], clients: usize, route: &str) -> (Value, Vec<Vec<f32>>) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(300))
        .max_idle_connections_per_host(clients)
        .build();
    let start = Instant::now();
    let results: Vec<(usize, f64, Option<Vec<f32>>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let agent = agent.clone();
                scope.spawn(move || {
                    (c..texts.len())
                        .step_by(clients)
                        .map(|i| {
                            let body = match route {
                                "/classify" => json!({"inputs": {"text": texts[i]}}),
                                _ => json!({"inputs": texts[i]}),
                            };
                            let t = Instant::now();
                            let r = agent
                                .post(&format!("{base}{route}"))
                                .set("Content-Type", "application/json")
                                .send_string(&body.to_string());
                            let ms = t.elapsed().as_secs_f64() * 1000.0;
                            let logits = r.ok().and_then(|resp| {
                                let v: Value =
                                    serde_json::from_str(&resp.into_string().ok()?).ok()?;
                                Some(match route {
                                    "/classify" => v["logits"]
                                        .as_array()?
                                        .iter()
                                        .map(|x| x.as_f64().unwrap_or(f64::NAN) as f32)
                                        .collect(),
                                    _ => Vec::new(),
                                })
                            });
                            (i, ms, logits)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("client thread"))
            .collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let errors = results.iter().filter(|r| r.2.is_none()).count();
    let mut lat: Vec<f64> = results.iter().map(|r| r.1).collect();
    lat.sort_by(f64::total_cmp);
    let mut logits = vec![Vec::new(); texts.len()];
    for (i, _, l) in results {
        logits[i] = l.unwrap_or_default();
    }
    let row = json!({
        "clients": clients,
        "route": route,
        "requests": texts.len(),
        "seconds": wall,
        "requests_per_s": texts.len() as f64 / wall,
        "texts_per_s": texts.len() as f64 / wall,
        "p50_ms": percentile(&lat, 0.50),
        "p90_ms": percentile(&lat, 0.90),
        "p99_ms": percentile(&lat, 0.99),
        "errors": errors,
    });
    (row, logits)
}

/// Starts the release binary's server on a free loopback port.
fn start(bin: &Path, model: &Path) -> Result<Served> {
    let mut child = Command::new(bin)
        .arg("serve")
        .arg("--model")
        .arg(model)
        .args(["--port", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let base = loop {
        let Some(line) = lines.next() else {
            bail!("sequin serve exited before listening");
        };
        let line = line?;
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok(Served { child, base })
}

/// `sequin predict` over the test file, timed, keeping each row's text: the first `n` texts
/// with their logits, and the texts per second (a one-row run's start-up time subtracted).
/// xtask reads the data through the binary it measures, so it builds no Parquet reader itself.
fn predict(bin: &Path, model: &Path, dir: &Path, test: &Path, n: usize) -> Result<Predicted> {
    let run = |input: &Path, output: &Path| -> Result<f64> {
        let t = Instant::now();
        crate::run(
            Command::new(bin)
                .arg("predict")
                .arg("--model")
                .arg(model)
                .arg("--input")
                .arg(input)
                .arg("--output")
                .arg(output)
                .args(["--keep-columns", "text"]),
        )?;
        Ok(t.elapsed().as_secs_f64())
    };
    let output = dir.join("preds-all.jsonl");
    let all = run(test, &output)?;
    let rows: Vec<Value> = std::fs::read_to_string(&output)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not JSON lines", output.display()))?;
    let mut texts = Vec::new();
    let mut logits = Vec::new();
    for (i, row) in rows.iter().take(n).enumerate() {
        let text = row["text"].as_str();
        let l: Option<Vec<f32>> = row["logits"]
            .as_array()
            .and_then(|a| a.iter().map(|x| x.as_f64().map(|x| x as f32)).collect());
        let (Some(text), Some(l)) = (text, l) else {
            bail!("row {i} of {} has no text or no logits", output.display());
        };
        texts.push(text.to_string());
        logits.push(l);
    }
    ensure!(!texts.is_empty(), "{} has no rows", test.display());
    let one_input = dir.join("texts-1.jsonl");
    std::fs::write(&one_input, json!({"text": texts[0]}).to_string())?;
    let one = run(&one_input, &dir.join("preds-1.jsonl"))?;
    Ok(Predicted {
        texts,
        rows: rows.len(),
        texts_per_s: rows.len() as f64 / (all - one).max(1e-9),
        logits,
    })
}

/// What [`predict`] measured.
struct Predicted {
    texts: Vec<String>,
    /// Rows of the test file (the predict run's count; the served texts are the first `n`).
    rows: usize,
    texts_per_s: f64,
    logits: Vec<Vec<f32>>,
}

/// Runs the benchmark; writes target/bench/serve.json and serve.md and prints the table.
pub(crate) fn bench_serve(root: &Path, model: Option<PathBuf>, n: usize) -> Result<()> {
    let model = model.unwrap_or_else(|| root.join(crate::RUN_DIR));
    ensure!(
        model.join("config.json").is_file(),
        "{} is not a model folder: run `cargo xtask train` first (or pass --model)",
        model.display()
    );
    crate::run(Command::new(env!("CARGO")).current_dir(root).args([
        "build",
        "--release",
        "-p",
        "sequin-cli",
    ]))?;
    let bin = root.join("target/release/sequin");
    let test = root.join("datasets/amazon-food/test.parquet");
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let Predicted {
        texts,
        rows: predict_rows,
        texts_per_s: predict_tps,
        logits: predict_logits,
    } = predict(&bin, &model, &dir, &test, n)?;
    let cpu = cpu_model();
    eprintln!(
        "bench-serve on {cpu}: {} amazon-food test reviews",
        texts.len()
    );
    let server = start(&bin, &model)?;
    std::thread::sleep(Duration::from_millis(300));
    let (idle, _) = memory(server.child.id());
    let mut rows = Vec::new();
    for clients in [1, 8, 64] {
        let (row, _) = burst(&server.base, &texts, clients, "/predict");
        eprintln!("{row}");
        rows.push(row);
    }
    // The logits of a 64-client burst against predict's.
    let (check, logits) = burst(&server.base, &texts, 64, "/classify");
    let max_diff = logits
        .iter()
        .zip(&predict_logits)
        .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())))
        .fold(0f64, f64::max);
    let (_, busy_peak) = memory(server.child.id());
    drop(server);
    let out = json!({
        "cpu": cpu,
        "cpu_flags": cpu_flags(),
        "model": model,
        "texts": texts.len(),
        "predict_texts_per_s": predict_tps,
        "predict_rows": predict_rows,
        "bursts": rows,
        "classify_check": check,
        "max_abs_logit_diff_vs_predict": max_diff,
        "rss_idle_mib": idle,
        "rss_busy_peak_mib": busy_peak,
    });
    let md = markdown(&out);
    std::fs::write(dir.join("serve.json"), serde_json::to_string_pretty(&out)?)?;
    std::fs::write(dir.join("serve.md"), &md)?;
    println!("{md}");
    Ok(())
}

fn markdown(v: &Value) -> String {
    let f = |x: &Value| x.as_f64().unwrap_or(f64::NAN);
    let predict = f(&v["predict_texts_per_s"]);
    let mut md = format!(
        "CPU: {}; {} amazon-food test reviews, one per request; `sequin predict` over the {}-row test file: {:.1} texts/s\n\n",
        v["cpu"].as_str().unwrap_or_default(),
        v["texts"],
        v["predict_rows"],
        predict
    );
    md += "| clients | requests/s | texts/s | of predict's texts/s | p50 ms | p90 ms | p99 ms | errors |\n";
    md += "|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for r in v["bursts"].as_array().into_iter().flatten() {
        md += &format!(
            "| {} | {:.1} | {:.1} | {:.0}% | {:.1} | {:.1} | {:.1} | {} |\n",
            r["clients"],
            f(&r["requests_per_s"]),
            f(&r["texts_per_s"]),
            100.0 * f(&r["texts_per_s"]) / predict,
            f(&r["p50_ms"]),
            f(&r["p90_ms"]),
            f(&r["p99_ms"]),
            r["errors"]
        );
    }
    md += &format!(
        "\nResident memory: idle {:.0} MiB, peak under load {:.0} MiB. Max |logit difference| from `sequin predict` over the 64-client `/classify` burst: {:.2e}.\n",
        f(&v["rss_idle_mib"]),
        f(&v["rss_busy_peak_mib"]),
        f(&v["max_abs_logit_diff_vs_predict"])
    );
    md
}
