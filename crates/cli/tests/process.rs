//! The real `sequin` binary as a user runs it, as a separate process: exit codes, one-line
//! errors, standard output, and output paths that are not plain new files.
//!
//! (The workspace's other tests drive the CLI in-process, through `sequin_cli::run_args`; only
//! here does Cargo build the binary, `CARGO_BIN_EXE_sequin`.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
