//! The real `sequin` binary as a user runs it, as a separate process: exit codes, one-line
//! errors, standard output, and output paths that are not plain new files.
//!
//! (The workspace's other tests drive the CLI in-process, through `sequin_cli::run_args`; only
//! here does Cargo build the binary, `CARGO_BIN_EXE_sequin`.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod playground;
mod serve;

/// A temp folder removed when the test ends, also when it panics.
struct TestDir(PathBuf);

impl TestDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("sequin-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TestDir(p)
    }
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn file(&self, name: &str, content: &str) -> PathBuf {
        std::fs::write(self.join(name), content).unwrap();
        self.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The tiny classifier that transformers saved (no sequin.json).
fn tiny_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/bert-tiny-cls")
}

/// Runs `sequin` with `args`.
fn sequin<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sequin"))
        .args(args)
        .output()
        .unwrap()
}

/// `sequin predict --model tiny --input INPUT --output OUTPUT [extra]`.
fn predict(input: &Path, output: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<std::ffi::OsString> = vec![
        "predict".into(),
        "--model".into(),
        tiny_model().into(),
        "--input".into(),
        input.into(),
        "--output".into(),
        output.into(),
    ];
    args.extend(extra.iter().map(Into::into));
    sequin(&args)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failure as the README promises: the exit code, and one line on stderr that says what.
fn assert_fails(o: &Output, code: i32, says: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(says), "expected `{says}` in: {err}");
}

const THREE_ROWS: &str = "text,id\nhello there,1\na fine day,2\nnot good,3\n";

/// `sequin setfit` on the real binary: more pairs asked for than four examples have is said on
/// stderr (the pairs are reused in turn) and the run succeeds with one JSON summary; a class
/// with one example is refused with exit 1, naming the class, and writes nothing.
#[test]
fn setfit_says_when_pairs_are_reused_and_refuses_a_lonely_class() {
    let d = TestDir::new("setfit");
    let four = d.file(
        "four.csv",
        "text,label\ngreat tea,good\nlovely taste,good\nstale and bland,bad\nbroken box,bad\n",
    );
    let out = d.join("model");
    let run = |train: &Path, out: &Path| {
        sequin(&[
            "setfit".as_ref(),
            "--model".as_ref(),
            tiny_model().as_os_str(),
            "--train".as_ref(),
            train.as_os_str(),
            "--output".as_ref(),
            out.as_os_str(),
            "--num-iterations".as_ref(),
            "5".as_ref(),
            "--max-length".as_ref(),
            "16".as_ref(),
        ] as &[&std::ffi::OsStr])
    };
    let o = run(&four, &out);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    // 4 examples: 10 pairs with self-pairs, 6 positive (3 per class) and 4 negative; 5
    // iterations ask for 20 of each.
    assert!(
        err.contains("20 pairs of each kind asked for, but the data has 6 distinct positive and 4 distinct negative pairs: each is used in turn"),
        "{err}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("one JSON summary on stdout");
    assert_eq!(summary["pairs"], 40);
    assert!(out.join("model_head.safetensors").exists());
    let lonely = d.file(
        "lonely.csv",
        "text,label\ngreat tea,good\nlovely taste,good\nstale and bland,bad\n",
    );
    let refused = d.join("refused");
    assert_fails(&run(&lonely, &refused), 1, "class `bad` has 1 example");
    assert!(!refused.exists(), "nothing written");
}

#[test]
fn usage_errors_exit_with_2_and_write_nothing() {
    let d = TestDir::new("usage");
    let input = d.file("in.csv", THREE_ROWS);
    let out = d.join("out.jsonl");
    assert_fails(
        &predict(&input, &out, &["--batch-size", "0"]),
        2,
        "--batch-size",
    );
    assert_fails(
        &predict(&input, &out, &["--no-such-flag"]),
        2,
        "--no-such-flag",
    );
    assert_fails(
        &sequin(&["train", "--lr-scheduler", "sideways"]),
        2,
        "sideways",
    );
    assert!(!out.exists());
    // Help and version are not errors.
    let v = sequin(&["--version"]);
    assert_eq!(v.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&v.stdout).contains("backend: "));
    let h = sequin(&["--help"]);
    assert!(String::from_utf8_lossy(&h.stdout).contains("Exit status"));
}

#[test]
fn failed_work_exits_with_1_in_one_line_and_writes_nothing() {
    let d = TestDir::new("work");
    let out = d.join("out.jsonl");
    let no_text = d.file("no-text.csv", "body\nhello\n");
    assert_fails(&predict(&no_text, &out, &[]), 1, "no column `text`");
    let missing = d.join("missing.csv");
    assert_fails(&predict(&missing, &out, &[]), 1, "missing.csv");
    let input = d.file("in.csv", THREE_ROWS);
    let o = sequin(&[
        "predict".as_ref(),
        "--model".as_ref(),
        d.join("no-model").as_os_str(),
        "--input".as_ref(),
        input.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
    ] as &[&std::ffi::OsStr]);
    assert_fails(&o, 1, "no-model");
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(&d.0).unwrap().count(), 2, "stray files");
}

#[test]
fn the_input_is_never_overwritten() {
    let d = TestDir::new("same");
    let input = d.file("a.csv", THREE_ROWS);
    assert_fails(&predict(&input, &input, &[]), 1, "is the input file");
    // Through a link, and through another spelling of the path.
    let link = d.join("link.csv");
    std::os::unix::fs::symlink(&input, &link).unwrap();
    assert_fails(&predict(&input, &link, &[]), 1, "is the input file");
    let dotted = d.0.join(".").join("a.csv");
    assert_fails(&predict(&input, &dotted, &[]), 1, "is the input file");
    assert_eq!(std::fs::read_to_string(&input).unwrap(), THREE_ROWS);
}

#[test]
fn an_output_extension_that_is_not_the_format_is_refused() {
    let d = TestDir::new("ext");
    let input = d.file("in.csv", THREE_ROWS);
    for name in ["preds.csv", "preds.txt", "preds"] {
        let out = d.join(name);
        assert_fails(&predict(&input, &out, &[]), 1, ".jsonl or .parquet");
        assert!(!out.exists(), "{name}");
    }
}

#[test]
fn dash_writes_predictions_to_standard_output() {
    let d = TestDir::new("stdout");
    let input = d.file("in.csv", THREE_ROWS);
    let o = predict(&input, Path::new("-"), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let stdout = String::from_utf8(o.stdout.clone()).unwrap();
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["label"].is_string()));
    assert!(!d.join("-").exists());
    assert!(stderr(&o).contains("standard output"));
}

#[test]
fn dev_null_a_symlink_and_a_fifo_survive_as_what_they_were() {
    use std::os::unix::fs::FileTypeExt;
    let d = TestDir::new("special");
    let input = d.file("in.csv", THREE_ROWS);

    let o = predict(&input, Path::new("/dev/null"), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let m = std::fs::metadata("/dev/null").unwrap();
    assert!(m.file_type().is_char_device(), "/dev/null was replaced");

    // A link: its target gets the predictions, the link stays a link.
    let target = d.join("real.jsonl");
    let link = d.join("link.jsonl");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let o = predict(&input, &link, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap().lines().count(), 3);

    // A FIFO: written in place while a reader drains it.
    let fifo = d.join("pipe");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    let o = predict(&input, &fifo, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(reader.join().unwrap().lines().count(), 3);
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
}

#[test]
fn empty_and_blank_texts_get_their_rows_and_are_counted() {
    let d = TestDir::new("empty");
    let input = d.file("in.csv", "text\nhello there\n\"\"\n\"   \"\nnot good\n");
    let out = d.join("out.jsonl");
    let o = predict(&input, &out, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    // An empty and a blank text are the same tokens ([CLS] [SEP]): the same logits.
    assert_eq!(rows[1]["logits"], rows[2]["logits"]);
    assert_ne!(rows[0]["logits"], rows[1]["logits"]);
    assert!(
        stderr(&o).contains("2 row(s) have an empty or blank text"),
        "{}",
        stderr(&o)
    );
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

/// `sequin predict` of a hub id with an environment (`HF_HOME`, `HF_HUB_OFFLINE`, ...).
fn predict_hub(id: &str, input: &Path, output: &Path, env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sequin"));
    cmd.args(["predict", "--model", id, "--input"])
        .arg(input)
        .arg("--output")
        .arg(output)
        .env_remove("HF_ENDPOINT")
        .env_remove("HF_HUB_OFFLINE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The files of a small hub repo that has only `pytorch_model.bin` and `vocab.txt` (no
/// safetensors, no tokenizer.json): the same classifier as `bert-tiny-cls`.
fn bin_and_vocab_repo() -> Vec<(&'static str, PathBuf)> {
    vec![
        (
            "config.json",
            fixture("bert-tiny-cls-bin").join("config.json"),
        ),
        (
            "pytorch_model.bin",
            fixture("bert-tiny-cls-bin").join("pytorch_model.bin"),
        ),
        ("vocab.txt", fixture("vocab-only").join("vocab.txt")),
        (
            "tokenizer_config.json",
            fixture("vocab-only").join("tokenizer_config.json"),
        ),
    ]
}

/// A hub cache laid out as hf-hub lays it: `models--org--name/refs/main` holding the commit,
/// and the files under `snapshots/<commit>/`.
fn lay_out_cache(hub: &Path, id: &str, files: &[(&str, PathBuf)]) {
    let repo = hub.join(format!("models--{}", id.replace('/', "--")));
    let commit = "0123456789abcdef0123456789abcdef01234567";
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    for (name, src) in files {
        std::fs::copy(src, snap.join(name)).unwrap();
    }
}

/// A loopback server that answers the hub's file route, `GET /{org}/{name}/resolve/main/{file}`
/// with a `Range`, as huggingface.co does (etag, x-repo-commit, content-range; 404 for a file
/// the repo lacks). Returns its address and the paths asked for.
fn mock_hub(
    id: &'static str,
    files: Vec<(&'static str, PathBuf)>,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = asked.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let (mut start, mut end) = (0usize, None::<usize>);
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some(r) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    let (a, b) = r.trim().split_once('-').unwrap();
                    start = a.parse().unwrap_or(0);
                    end = b.parse().ok();
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            log.lock().unwrap().push(path.clone());
            let prefix = format!("/{id}/resolve/main/");
            let body = path
                .strip_prefix(&prefix)
                .and_then(|f| files.iter().find(|(n, _)| *n == f))
                .map(|(_, src)| std::fs::read(src).unwrap());
            let _ = match body {
                None => stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                ),
                Some(bytes) => {
                    let len = bytes.len();
                    let end = end.unwrap_or(len - 1).min(len - 1);
                    let part = &bytes[start..=end];
                    let head = format!(
                        "HTTP/1.1 206 Partial Content\r\netag: \"e{len}\"\r\nx-repo-commit: 0123456789abcdef0123456789abcdef01234567\r\ncontent-range: bytes {start}-{end}/{len}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        part.len()
                    );
                    stream
                        .write_all(head.as_bytes())
                        .and_then(|_| stream.write_all(part))
                }
            };
        }
    });
    (addr, asked)
}

/// Logits of every output row.
fn logits_of(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["logits"].clone())
        .collect()
}

#[test]
fn a_hub_id_predicts_from_the_cache_and_offline_names_a_missing_file() {
    let d = TestDir::new("hub-cache");
    let input = d.file("in.csv", THREE_ROWS);
    let home = d.join("hf-home");
    lay_out_cache(
        &home.join("hub"),
        "sequin-test/tiny-bin",
        &bin_and_vocab_repo(),
    );
    let out = d.join("out.jsonl");
    let env = [
        ("HF_HOME", home.as_path()),
        ("HF_HUB_OFFLINE", Path::new("1")),
    ];
    let o = predict_hub("sequin-test/tiny-bin", &input, &out, &env);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // The same predictions as the local folder with safetensors and tokenizer.json.
    let local = d.join("local.jsonl");
    assert_eq!(predict(&input, &local, &[]).status.code(), Some(0));
    assert_eq!(logits_of(&out), logits_of(&local));

    // Offline, a cache without weights names what is missing.
    let files: Vec<_> = bin_and_vocab_repo()
        .into_iter()
        .filter(|(n, _)| *n != "pytorch_model.bin")
        .collect();
    lay_out_cache(&home.join("hub"), "sequin-test/no-weights", &files);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sequin"));
    let o = cmd
        .args(["predict", "--model", "sequin-test/no-weights", "--input"])
        .arg(&input)
        .args(["--output", "-"])
        .env("HF_HOME", &home)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert_fails(&o, 1, "model.safetensors or pytorch_model.bin");
    assert!(stderr(&o).contains("HF_HUB_OFFLINE"), "{}", stderr(&o));
}

#[test]
fn a_hub_id_downloads_through_a_loopback_hub() {
    let d = TestDir::new("hub-download");
    let input = d.file("in.csv", THREE_ROWS);
    let (endpoint, asked) = mock_hub("sequin-test/tiny-bin", bin_and_vocab_repo());
    let home = d.join("hf-home");
    let out = d.join("out.jsonl");
    let endpoint_path = PathBuf::from(&endpoint);
    let env = [
        ("HF_HOME", home.as_path()),
        ("HF_ENDPOINT", endpoint_path.as_path()),
    ];
    let o = predict_hub("sequin-test/tiny-bin", &input, &out, &env);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let local = d.join("local.jsonl");
    assert_eq!(predict(&input, &local, &[]).status.code(), Some(0));
    assert_eq!(logits_of(&out), logits_of(&local));
    // safetensors was asked for first, and the .bin taken when the hub had none.
    let asked = asked.lock().unwrap().clone();
    let pos = |f: &str| asked.iter().position(|p| p.ends_with(f)).unwrap();
    assert!(
        pos("model.safetensors") < pos("pytorch_model.bin"),
        "{asked:?}"
    );
    assert!(pos("tokenizer.json") < pos("vocab.txt"), "{asked:?}");
    // Now cached: offline works with no hub at all.
    let again = d.join("again.jsonl");
    let offline_env = [
        ("HF_HOME", home.as_path()),
        ("HF_HUB_OFFLINE", Path::new("1")),
    ];
    let o = predict_hub("sequin-test/tiny-bin", &input, &again, &offline_env);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(logits_of(&again), logits_of(&local));
}

#[test]
fn keep_columns_carries_input_columns_to_the_output() {
    let d = TestDir::new("keep");
    let input = d.file("in.csv", THREE_ROWS);
    let out = d.join("out.jsonl");
    let o = predict(&input, &out, &["--keep-columns", "id"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let ids: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].clone())
        .collect();
    assert_eq!(ids, ["1", "2", "3"]);
    // `all`, into Parquet: every column but the text.
    let pq = d.join("out.parquet");
    let o = predict(&input, &pq, &["--keep-columns", "all"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&pq).unwrap(),
    )
    .unwrap();
    let names: Vec<String> = reader
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["label", "score", "logits", "id"]);
    // A column the file lacks, or one that would hide an output field, is refused.
    assert_fails(
        &predict(&input, &d.join("x.jsonl"), &["--keep-columns", "uid"]),
        1,
        "no column `uid`",
    );
    let clash = d.file("clash.csv", "text,score\nhello,1\n");
    assert_fails(
        &predict(&clash, &d.join("y.jsonl"), &["--keep-columns", "score"]),
        1,
        "output field",
    );
}

#[test]
fn a_missing_file_and_a_bad_csv_record_are_each_said_once_and_exactly() {
    let d = TestDir::new("said-once");
    let out = d.join("out.jsonl");
    let o = predict(&d.join("missing.csv"), &out, &[]);
    assert_fails(&o, 1, "missing.csv");
    assert_eq!(
        stderr(&o).matches("No such file").count(),
        1,
        "{}",
        stderr(&o)
    );
    // The third data row (file line 4) has a field too many.
    let bad = d.file("bad.csv", "text,id\nfine,1\nalso fine,2\nbroken,3,extra\n");
    let o = predict(&bad, &out, &[]);
    assert_fails(&o, 1, "row 3");
    assert!(
        stderr(&o).contains("line: 4") || stderr(&o).contains("line 4"),
        "{}",
        stderr(&o)
    );
}

/// `--precision int8|bf16`: `--version` names the kernel this CPU runs for each, `eval`
/// reports the precision and kernel with its metrics, and an unknown precision is a usage
/// error.
#[test]
fn low_precision_is_reported_by_version_and_eval() {
    let v = sequin(&["--version"]);
    let line = String::from_utf8_lossy(&v.stdout).into_owned();
    assert!(line.contains("int8 kernel: "), "{line}");
    assert!(line.contains("bf16 kernel: "), "{line}");
    let d = TestDir::new("int8");
    let data = d.file(
        "eval.csv",
        "text,label\ngreat tea,positive\nawful,negative\n",
    );
    let model = tiny_model();
    for precision in ["int8", "bf16"] {
        let args: Vec<std::ffi::OsString> = vec![
            "eval".into(),
            "--model".into(),
            model.clone().into(),
            "--data".into(),
            data.clone().into(),
            "--precision".into(),
            precision.into(),
        ];
        let o = sequin(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(m["precision"], precision);
        let kernel = m[format!("{precision}_kernel")].as_str().unwrap();
        assert!(
            line.contains(&format!("{precision} kernel: {kernel}")),
            "{m} vs {line}"
        );
    }
    let o = predict(&data, &d.join("out.jsonl"), &["--precision", "int4"]);
    assert_fails(&o, 2, "int4");
    assert!(!d.join("out.jsonl").exists());
}
