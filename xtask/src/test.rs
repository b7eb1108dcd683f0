//! `cargo xtask test`: the whole test suite, with one summary line.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};

/// Runs `cargo test --workspace`, echoing its output, and closes with one summary line over
/// every test binary (`tests: N passed, M failed`).
pub(crate) fn cargo_test(root: &Path, args: &[String]) -> Result<()> {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["test", "--workspace"])
        .args(args)
        .env("SEQUIN_REQUIRE_MINILM", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot start cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut w = part.split_whitespace().rev();
                let (Some(kind), Some(n)) = (w.next(), w.next()) else {
                    continue;
                };
                let n: u64 = n
                    .trim_start_matches(|c: char| !c.is_ascii_digit())
                    .parse()
                    .unwrap_or(0);
                match kind {
                    "passed" => passed += n,
                    "failed" => failed += n,
                    _ => {}
                }
            }
        }
    }
    let status = child.wait()?;
    println!("tests: {passed} passed, {failed} failed");
    ensure!(status.success(), "cargo test failed with {status}");
    ensure!(passed > 0, "cargo test ran no test");
    Ok(())
}
