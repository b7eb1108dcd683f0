//! Helpers shared by the test modules.

use std::path::{Path, PathBuf};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

pub fn dataset(name: &str, split: &str) -> PathBuf {
    root()
        .join("datasets")
        .join(name)
        .join(format!("{split}.parquet"))
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Runs the `sequin` command in-process and returns its error message, which must exist.
pub fn sequin_err(args: &[&str]) -> String {
    let mut all = vec!["sequin"];
    all.extend_from_slice(args);
    match sequin_cli::run_args(all) {
        Ok(()) => panic!("sequin {args:?} succeeded but should have failed"),
        Err(e) => format!("{e:#}"),
    }
}

/// Runs the `sequin` command in-process; it must succeed.
pub fn sequin_ok(args: &[&str]) {
    let mut all = vec!["sequin"];
    all.extend_from_slice(args);
    if let Err(e) = sequin_cli::run_args(all) {
        panic!("sequin {args:?} failed: {e:#}");
    }
}

pub fn flat_f32(v: &serde_json::Value) -> Vec<f32> {
    fn walk(v: &serde_json::Value, out: &mut Vec<f32>) {
        match v {
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            serde_json::Value::Number(n) => out.push(n.as_f64().unwrap() as f32),
            other => panic!("not a number: {other}"),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out);
    out
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length differs");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// In a child started by [`spawn_self`]: runs `sequin` with the arguments in the environment
/// variable `var` and returns true. Elsewhere returns false.
pub fn run_as_child(var: &str) -> bool {
    let Ok(args) = std::env::var(var) else {
        return false;
    };
    let args: Vec<String> = serde_json::from_str(&args).unwrap();
    let mut all = vec!["sequin".to_string()];
    all.extend(args);
    sequin_cli::run_args(all).unwrap();
    true
}

/// Starts this test binary again as a fresh process running only `test`, which must begin
/// with `if run_as_child(var) { return; }`: the child runs `sequin args`.
pub fn spawn_self(test: &str, var: &str, args: &[String]) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--test-threads", "1"])
        .env(var, serde_json::to_string(args).unwrap())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// A temp folder for one test (`$TMP/sequin-{tag}-{pid}`), created empty and removed when the
/// test ends, also when it panics.
pub struct TestDir(PathBuf);

impl TestDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("sequin-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TestDir(p)
    }

    /// The folder itself.
    pub fn root(&self) -> PathBuf {
        self.0.clone()
    }

    /// A path inside the folder.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }

    /// A path inside the folder, as a string argument.
    pub fn path(&self, name: &str) -> String {
        self.join(name).to_string_lossy().into_owned()
    }

    /// Writes a file inside the folder; returns its path as a string argument.
    pub fn file(&self, name: &str, content: &[u8]) -> String {
        std::fs::write(self.join(name), content).unwrap();
        self.path(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The tiny random BERT classifier most end-to-end tests train.
pub fn tiny_bert() -> PathBuf {
    fixture("bert-tiny-cls")
}

/// A `sequin` command line, built flag by flag: `sequin("train").arg("--model", tiny_bert())`.
#[derive(Clone, Debug)]
pub struct Sequin(Vec<String>);

pub fn sequin(command: &str) -> Sequin {
    Sequin(vec![command.to_string()])
}

impl Sequin {
    /// A flag with its value (a path, a string or a number as text).
    pub fn arg(mut self, flag: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.0.push(flag.to_string());
        self.0.push(value.as_ref().to_string_lossy().into_owned());
        self
    }

    /// A flag without a value, or raw arguments.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.0.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Runs it in-process; it must succeed.
    pub fn ok(&self) {
        let args: Vec<&str> = self.0.iter().map(String::as_str).collect();
        sequin_ok(&args);
    }

    /// Runs it in-process; it must fail. Returns the error message.
    pub fn err(&self) -> String {
        let args: Vec<&str> = self.0.iter().map(String::as_str).collect();
        sequin_err(&args)
    }
}

/// The `logits` of every line of a predictions JSONL file, in order.
pub fn jsonl_logits(path: &Path) -> Vec<Vec<f32>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| flat_f32(&serde_json::from_str::<serde_json::Value>(l).unwrap()["logits"]))
        .collect()
}
