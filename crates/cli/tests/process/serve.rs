//! `sequin serve` as a user runs it: the real binary on an ephemeral loopback port, spoken to
//! over real HTTP.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::{TestDir, tiny_model};

/// A running server, killed when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
    /// Its stderr after the address line, read by a thread.
    log: std::sync::Mutex<std::sync::mpsc::Receiver<String>>,
}

impl Server {
    /// Starts `sequin serve --model MODEL --port 0 EXTRA` and waits for its address.
    pub(crate) fn start(model: &Path, extra: &[&str]) -> Self {
        Self::start_env(model, extra, &[])
    }

    pub(crate) fn start_env(model: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sequin"));
        cmd.arg("serve")
            .arg("--model")
            .arg(model)
            .args(["--port", "0"])
            .args(extra)
            .env_remove("SEQUIN_API_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("the server exited before listening")
                .unwrap();
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        let (tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Server {
            child,
            base,
            log: std::sync::Mutex::new(log),
        }
    }

    fn agent() -> ureq::Agent {
        ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(120))
            .build()
    }

    /// `GET path` with an optional bearer token: status and body.
    pub(crate) fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let mut req = Self::agent().get(&format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        reply(req.call())
    }

    /// `POST path` with a raw body: status and body as JSON.
    pub(crate) fn post_raw(&self, path: &str, body: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = Self::agent()
            .post(&format!("{}{path}", self.base))
            .set("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let (status, text) = reply(req.send_string(body));
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, v)
    }

    pub(crate) fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, &body.to_string(), None)
    }

    /// A counter of `/metrics` with these labels (0 when absent).
    pub(crate) fn metric(&self, name: &str, labels: &str) -> f64 {
        let (_, text) = self.get("/metrics", None);
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{{labels}}} ")) || *l == name)
            .or_else(|| {
                text.lines()
                    .find(|l| labels.is_empty() && l.starts_with(&format!("{name} ")))
            })
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0.0, |v| v.parse().unwrap())
    }

    /// Sends SIGTERM.
    pub(crate) fn terminate(&self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Waits for the exit; returns the status code and the rest of stderr.
    pub(crate) fn wait(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let log: Vec<String> = self.log.lock().unwrap().try_iter().collect();
        (status.code(), log.join("\n"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn reply(r: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match r {
        Ok(resp) => (resp.status(), resp.into_string().unwrap()),
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_string().unwrap()),
        Err(e) => panic!("transport error: {e}"),
    }
}

/// TEI's answer for one input: labels sorted by score.
fn labels_scores(v: &Value) -> Vec<(String, f64)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["label"].as_str().unwrap().to_string(),
                x["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn predict_answers_in_tei_shapes_and_info_health_metrics_report() {
    let s = Server::start(&tiny_model(), &[]);
    // Loopback unless --host says otherwise.
    assert!(s.base.starts_with("http://127.0.0.1:"), "{}", s.base);
    assert_eq!(s.get("/health", None).0, 200);
    let (status, info) = s.get("/info", None);
    assert_eq!(status, 200);
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(
        info["model_type"]["classifier"]["id2label"]["0"],
        "negative"
    );
    let id = |label: &str| {
        info["model_type"]["classifier"]["label2id"][label]
            .as_u64()
            .unwrap() as usize
    };
    assert_eq!(info["max_client_batch_size"], 32);
    assert_eq!(info["sequin"]["family"], "bert");

    // One text: every label, best first, probabilities summing to 1.
    let (status, one) = s.post(&"/predict", &json!({"inputs": "a fine day"}));
    assert_eq!(status, 200, "{one}");
    let ls = labels_scores(&one);
    assert_eq!(ls.len(), 3);
    assert!(
        ls.windows(2).all(|w| w[0].1 >= w[1].1),
        "not sorted: {ls:?}"
    );
    assert!((ls.iter().map(|x| x.1).sum::<f64>() - 1.0).abs() < 1e-5);
    // A pair is one input; a batch is a list of answers, in order.
    let (_, pair) = s.post("/predict", &json!({"inputs": ["a fine day", "it rains"]}));
    assert_eq!(labels_scores(&pair).len(), 3);
    let (_, batch) = s.post(
        "/predict",
        &json!({"inputs": [["a fine day"], ["a fine day", "it rains"], [""]]}),
    );
    let batch = batch.as_array().unwrap();
    assert_eq!(batch.len(), 3);
    assert_eq!(
        labels_scores(&batch[0]),
        ls,
        "the same text, the same answer"
    );
    assert_eq!(labels_scores(&batch[1]), labels_scores(&pair));
    // raw_scores: the logits, as /classify reports them.
    let (_, raw) = s.post(
        "/predict",
        &json!({"inputs": "a fine day", "raw_scores": true}),
    );
    let (_, named) = s.post("/classify", &json!({"inputs": {"text": "a fine day"}}));
    let logits = named["logits"].as_array().unwrap();
    for (label, score) in labels_scores(&raw) {
        let i = id(&label);
        assert!((logits[i].as_f64().unwrap() - score).abs() < 1e-6);
    }
    // top_k and function on /classify, as predict's flags.
    let (_, top) = s.post(
        "/classify",
        &json!({"inputs": [{"text": "a"}, {"text": "b"}], "top_k": 1, "function": "sigmoid"}),
    );
    assert_eq!(top.as_array().unwrap().len(), 2);
    assert_eq!(top[0]["top_k"].as_array().unwrap().len(), 1);
    let best = &top[0]["top_k"][0];
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let logit = top[0]["logits"][id(best["label"].as_str().unwrap())]
        .as_f64()
        .unwrap();
    assert!(
        (best["score"].as_f64().unwrap() - sig(logit)).abs() < 1e-5,
        "{top}"
    );

    // The metrics counted all of it.
    assert_eq!(
        s.metric("sequin_requests_total", r#"route="/predict",status="200""#),
        4.0
    );
    assert_eq!(
        s.metric("sequin_requests_total", r#"route="/classify",status="200""#),
        2.0
    );
    assert_eq!(s.metric("sequin_texts_total", ""), 9.0);
    let (_, text) = s.get("/metrics", None);
    for name in [
        "sequin_queue_depth",
        "sequin_batch_size_bucket",
        "sequin_batch_tokens_sum",
        "sequin_request_duration_seconds_bucket",
        "sequin_inference_duration_seconds_count",
        "sequin_tokens_total",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
}

#[test]
fn bad_requests_get_a_4xx_naming_the_field_and_the_server_keeps_serving() {
    let s = Server::start(
        &tiny_model(),
        &["--payload-limit", "4000", "--max-length", "16"],
    );
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/predict", "{\"inputs\": ".into(), 400, "EOF"),
        ("/predict", "not json".into(), 400, "expected"),
        (
            "/predict",
            r#"{"inputs": 3}"#.into(),
            422,
            "inputs: expected a string",
        ),
        (
            "/predict",
            r#"{"inputs": [["a"], 7]}"#.into(),
            422,
            "inputs[1]",
        ),
        (
            "/predict",
            r#"{"inputs": "a", "raw_scores": "yes"}"#.into(),
            422,
            "raw_scores",
        ),
        ("/predict", r#"{"inputs": []}"#.into(), 422, "empty"),
        ("/predict", r#"{"truncate": true}"#.into(), 422, "inputs"),
        (
            "/predict",
            json!({"inputs": vec![vec!["x"]; 33]}).to_string(),
            413,
            "--max-client-batch-size",
        ),
        (
            "/predict",
            json!({"inputs": "word ".repeat(1000)}).to_string(),
            413,
            "payload limit",
        ),
        (
            "/predict",
            json!({"inputs": "word ".repeat(40), "truncate": false}).to_string(),
            413,
            "tokens; the model reads at most 16",
        ),
        (
            "/classify",
            r#"{"inputs": {"txt": "a"}}"#.into(),
            422,
            "inputs.txt: unknown field",
        ),
        (
            "/classify",
            r#"{"inputs": {"text": 1}}"#.into(),
            422,
            "inputs.text",
        ),
        (
            "/classify",
            r#"{"inputs": {"text": "a"}, "function": "max"}"#.into(),
            422,
            "function",
        ),
        ("/nothing", "{}".into(), 404, "no route"),
    ];
    for (path, body, status, says) in cases {
        let (got, v) = s.post_raw(path, &body, None);
        assert_eq!(got, status, "{path} {body:.80}: {v}");
        let msg = v["error"].as_str().unwrap();
        assert!(
            msg.contains(says),
            "{path} {body:.80}: `{msg}` does not say `{says}`"
        );
        assert!(v["error_type"].is_string());
        // ...and the server still answers.
        let (ok, _) = s.post("/predict", &json!({"inputs": "still here"}));
        assert_eq!(ok, 200);
    }
    // truncate: true (and absent: the model's policy) cut a long text instead.
    let long = "word ".repeat(40);
    assert_eq!(
        s.post("/predict", &json!({"inputs": long, "truncate": true}))
            .0,
        200
    );
    assert_eq!(s.post("/predict", &json!({"inputs": long})).0, 200);
    assert_eq!(
        s.metric("sequin_requests_total", r#"route="/predict",status="413""#),
        3.0
    );
}

#[test]
fn an_api_key_is_required_on_every_route_but_health() {
    let s = Server::start_env(&tiny_model(), &[], &[("SEQUIN_API_KEY", "s3cret")]);
    assert_eq!(s.get("/health", None).0, 200);
    for path in ["/info", "/metrics", "/"] {
        assert_eq!(s.get(path, None).0, 401, "{path}");
        assert_eq!(s.get(path, Some("wrong")).0, 401, "{path}");
        assert_eq!(s.get(path, Some("s3cret")).0, 200, "{path}");
    }
    let body = r#"{"inputs": "hi"}"#;
    let (status, v) = s.post_raw("/predict", body, None);
    assert_eq!(status, 401);
    assert!(v["error"].as_str().unwrap().contains("Bearer"), "{v}");
    assert_eq!(s.post_raw("/predict", body, Some("s3cret")).0, 200);
}

/// Many clients at once against a limit of 2 requests in flight: some are refused with 429,
/// every accepted one is answered in full, and the counts agree with /metrics.
#[test]
fn overload_gets_429_and_loses_nothing_it_accepted() {
    // One row per forward pass: each request takes a while, so the clients overlap.
    let s = std::sync::Arc::new(Server::start(
        &tiny_model(),
        &[
            "--max-concurrent-requests",
            "2",
            "--batch-size",
            "1",
            "--shards",
            "1",
        ],
    ));
    let text = "the long review of a product that goes on and on ".repeat(8);
    let results: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..48)
            .map(|_| {
                let s = s.clone();
                let body = json!({"inputs": vec![vec![text.clone()]; 32]});
                scope.spawn(move || s.post("/predict", &body))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: Vec<&Value> = results
        .iter()
        .filter(|r| r.0 == 200)
        .map(|r| &r.1)
        .collect();
    let refused = results.iter().filter(|r| r.0 == 429).count();
    assert_eq!(ok.len() + refused, 48, "only 200 and 429: {results:?}");
    assert!(
        refused > 0,
        "48 clients against a limit of 2 were all accepted"
    );
    assert!(!ok.is_empty());
    for answer in &ok {
        assert_eq!(
            answer.as_array().unwrap().len(),
            32,
            "an accepted request lost inputs"
        );
    }
    let overloaded = results.iter().find(|r| r.0 == 429).unwrap();
    assert_eq!(overloaded.1["error_type"], "overloaded");
    assert_eq!(
        s.metric("sequin_requests_total", r#"route="/predict",status="200""#),
        ok.len() as f64
    );
    assert_eq!(s.metric("sequin_texts_total", ""), (ok.len() * 32) as f64);
}

/// SIGTERM while requests are in flight: they are answered, then the server exits with 0.
#[test]
fn sigterm_drains_the_requests_in_flight_and_exits_0() {
    // One row per forward pass: the requests are still in flight when SIGTERM comes.
    let s = Server::start(&tiny_model(), &["--batch-size", "1", "--shards", "1"]);
    let text = "a review long enough to take a moment in the model ".repeat(6);
    let statuses = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let body = json!({"inputs": vec![vec![text.clone()]; 32]});
                let s = &s;
                scope.spawn(move || s.post("/predict", &body))
            })
            .collect();
        // Wait until the requests are in, then ask the server to stop.
        let start = std::time::Instant::now();
        // (All six admitted: a request still connecting when the listener closes would be
        // refused, which is right but not what this test is about.)
        while s.metric("sequin_requests_in_flight", "") < 6.0 {
            assert!(
                start.elapsed().as_secs() < 60,
                "the six requests were never in flight together"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        s.terminate();
        handles
            .into_iter()
            .map(|h| {
                let (st, v) = h.join().unwrap();
                (st, v.as_array().map_or(0, Vec::len))
            })
            .collect::<Vec<(u16, usize)>>()
    });
    assert!(
        statuses.iter().all(|&(st, n)| st == 200 && n == 32),
        "{statuses:?}"
    );
    let (code, log) = s.wait();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("shutting down"), "{log}");
}

/// Trains a tiny model with the real binary (`train` flags as given) on `data`; returns the
/// folder.
fn train(dir: &TestDir, name: &str, data: &Path, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let o = Command::new(env!("CARGO_BIN_EXE_sequin"))
        .arg("train")
        .arg("--model")
        .arg(tiny_model())
        .arg("--train")
        .arg(data)
        .arg("--output")
        .arg(&out)
        .args(["--epochs", "1", "--max-length", "16"])
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

#[test]
fn classify_serves_a_fusion_model_and_a_multi_label_model() {
    let d = TestDir::new("serve-models");
    let csv = d.file(
        "meta.csv",
        "text,price,shop,label\nfine food,1.5,x,a\nbad food,2,y,b\nok food,3,x,a\nmeh food,4,y,b\n",
    );
    let fusion = train(
        &d,
        "fusion",
        &csv,
        &[
            "--numeric-columns",
            "price",
            "--categorical-columns",
            "shop",
        ],
    );
    let s = Server::start(&fusion, &[]);
    let (status, v) = s.post(
        "/classify",
        &json!({"inputs": [{"text": "fine food", "price": 2.5, "shop": "x"}, {"text": "meh", "price": 3, "shop": "new shop"}]}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert!(["a", "b"].contains(&v[0]["label"].as_str().unwrap()));
    // The metadata changes the answer (the fusion head reads it).
    let (_, cheap) = s.post(
        "/classify",
        &json!({"inputs": {"text": "fine food", "price": 1, "shop": "x"}}),
    );
    let (_, dear) = s.post(
        "/classify",
        &json!({"inputs": {"text": "fine food", "price": 400, "shop": "y"}}),
    );
    assert_ne!(cheap["logits"], dear["logits"]);
    // A missing metadata field, a bad number, and /predict (which has no fields) are refused.
    let (status, v) = s.post(
        "/classify",
        &json!({"inputs": {"text": "fine", "shop": "x"}}),
    );
    assert_eq!(status, 422);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("inputs.price: missing"),
        "{v}"
    );
    let (status, v) = s.post(
        "/classify",
        &json!({"inputs": {"text": "fine", "price": "cheap", "shop": "x"}}),
    );
    assert_eq!(status, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("price"), "{v}");
    let (status, v) = s.post("/predict", &json!({"inputs": "fine"}));
    assert_eq!(status, 422);
    assert!(v["error"].as_str().unwrap().contains("/classify"), "{v}");
    let (_, info) = s.get("/info", None);
    assert!(info.contains("\"kind\":\"categorical\""), "{info}");
    drop(s);

    // Multi-label: sigmoid scores, and the labels over their thresholds.
    let jsonl = d.file(
        "multi.jsonl",
        concat!(
            r#"{"text": "space ship war", "labels": ["scifi", "action"]}"#,
            "\n",
            r#"{"text": "love in paris", "labels": ["romance"]}"#,
            "\n",
            r#"{"text": "robots fall in love", "labels": ["scifi", "romance"]}"#,
            "\n",
            r#"{"text": "car chase", "labels": ["action"]}"#,
            "\n",
        ),
    );
    let multi = train(&d, "multi", &jsonl, &["--label-column", "labels"]);
    let s = Server::start(&multi, &[]);
    let (status, v) = s.post(
        "/classify",
        &json!({"inputs": {"text": "robots in paris"}, "top_k": "all"}),
    );
    assert_eq!(status, 200, "{v}");
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    let logits: Vec<f64> = v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let (_, info) = s.get("/info", None);
    let info: Value = serde_json::from_str(&info).unwrap();
    let names: Vec<&str> = info["sequin"]["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    let mut over = Vec::new();
    for item in v["top_k"].as_array().unwrap() {
        let j = names.iter().position(|n| *n == item["label"]).unwrap();
        assert!(
            (item["score"].as_f64().unwrap() - sig(logits[j])).abs() < 1e-5,
            "{v}"
        );
        if sig(logits[j]) >= info["sequin"]["thresholds"][j].as_f64().unwrap() {
            over.push(item["label"].as_str().unwrap().to_string());
        }
    }
    let mut labels: Vec<String> = v["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    labels.sort();
    over.sort();
    assert_eq!(labels, over);
    // /predict: the same sigmoid scores, each marked with its decision.
    let (_, tei) = s.post("/predict", &json!({"inputs": "robots in paris"}));
    let sum: f64 = labels_scores(&tei).iter().map(|x| x.1).sum();
    assert!(
        (sum - 1.0).abs() > 1e-3 || names.len() == 1,
        "sigmoid, not softmax: {tei}"
    );
    for item in tei.as_array().unwrap() {
        let chosen = labels.iter().any(|l| l == item["label"].as_str().unwrap());
        assert_eq!(item["predicted"], chosen, "{tei}");
    }
}

/// The 1,000 first amazon-food test reviews, sent one per request by 64 concurrent clients:
/// the logits are `sequin predict`'s within 1e-5, whatever shared their batches.
#[test]
fn serve_gives_predicts_logits_for_1000_reviews_from_64_clients() {
    let d = TestDir::new("serve-parity");
    let test =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/amazon-food/test.parquet");
    let records = sequin_data::read_records(&test, &sequin_data::Columns::default()).unwrap();
    let texts: Vec<String> = records.into_iter().take(1000).map(|r| r.text).collect();
    assert_eq!(texts.len(), 1000);
    let input = d.join("reviews.jsonl");
    let lines: Vec<String> = texts
        .iter()
        .map(|t| json!({"text": t}).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let preds = d.join("preds.jsonl");
    let o = Command::new(env!("CARGO_BIN_EXE_sequin"))
        .args(["predict", "--model"])
        .arg(tiny_model())
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(&preds)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let expected: Vec<Vec<f64>> = std::fs::read_to_string(&preds)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    let s = Server::start(&tiny_model(), &[]);
    let got: Vec<(usize, Vec<f64>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..64)
            .map(|t| {
                let (s, texts) = (&s, &texts);
                scope.spawn(move || {
                    (t..texts.len())
                        .step_by(64)
                        .map(|i| {
                            let (status, v) =
                                s.post("/classify", &json!({"inputs": {"text": texts[i]}}));
                            assert_eq!(status, 200, "{v}");
                            let l = v["logits"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|x| x.as_f64().unwrap())
                                .collect();
                            (i, l)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(got.len(), 1000);
    let mut worst = 0f64;
    for (i, l) in got {
        for (a, b) in l.iter().zip(&expected[i]) {
            worst = worst.max((a - b).abs());
        }
    }
    assert!(worst <= 1e-5, "serve and predict differ by {worst}");
    // The requests were batched together (not one forward pass per request).
    let batches = s.metric("sequin_batch_size_count", "");
    assert!(batches < 1000.0, "{batches} batches for 1000 requests");
}
