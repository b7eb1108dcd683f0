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

/// The backend suite (`crates/cli/tests/backend.rs`) built with the `wgpu` feature, on a Vulkan
/// device: a GPU, or Mesa's lavapipe on the CPU. Installs lavapipe (Debian's
/// `mesa-vulkan-drivers`) when no Vulkan driver is there and apt can; otherwise fails, loudly:
/// CI must not pass without having run it.
pub(crate) fn wgpu_suite(root: &Path) -> Result<()> {
    if !vulkan_driver() {
        eprintln!("no Vulkan driver: installing Mesa's lavapipe (mesa-vulkan-drivers)");
        let installed = Command::new("sh")
            .args([
                "-c",
                "(apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers libvulkan1",
            ])
            .status()
            .is_ok_and(|s| s.success());
        ensure!(
            installed && vulkan_driver(),
            "THE WGPU BACKEND SUITE CANNOT RUN: no Vulkan driver, and Mesa's lavapipe could not be \
             installed (apt-get install mesa-vulkan-drivers libvulkan1, as root). Install one and rerun."
        );
    }
    let start = std::time::Instant::now();
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args([
            "test",
            "-p",
            "sequin-cli",
            "--features",
            "wgpu",
            "--test",
            "backend",
            "--",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .status()
        .context("cannot start cargo test for the wgpu backend suite")?;
    ensure!(status.success(), "the wgpu backend suite failed: {status}");
    println!(
        "wgpu backend suite: passed in {:.0} s (build included)",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Whether a Vulkan ICD (driver manifest) is installed.
fn vulkan_driver() -> bool {
    ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"]
        .iter()
        .any(|d| std::fs::read_dir(d).is_ok_and(|mut e| e.next().is_some()))
}

/// Chromium for the playground's browser test (`crates/cli/tests/process/playground.rs`):
/// `$CHROME`, or one on the PATH, or Debian's `chromium` installed through apt (as root).
/// Fails loudly when none can be had: the test must not be skipped.
pub(crate) fn ensure_chromium() -> Result<()> {
    let found = || {
        std::env::var_os("CHROME").is_some()
            || ["chromium", "chromium-browser", "google-chrome"]
                .iter()
                .any(|n| {
                    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                        .any(|d| d.join(n).is_file())
                })
    };
    if found() {
        return Ok(());
    }
    eprintln!("no Chromium: installing Debian's chromium for the playground's browser test");
    let installed = Command::new("sh")
        .args([
            "-c",
            "(apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium",
        ])
        .status()
        .is_ok_and(|s| s.success());
    ensure!(
        installed && found(),
        "THE PLAYGROUND BROWSER TEST CANNOT RUN: no Chromium, and Debian's chromium could not be \
         installed (apt-get install chromium, as root). Install one (or set CHROME) and rerun."
    );
    Ok(())
}
