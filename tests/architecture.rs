//! The written invariants of ARCHITECTURE.md that a reading of the tree can check: the crate
//! graph, where errors, backends, the network and temp files live, and the size of functions.

use std::path::{Path, PathBuf};

use crate::common::root;

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().map(Result::unwrap) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The library crates (every crate but the CLI).
const LIBRARIES: [&str; 8] = [
    "fs", "tokenize", "augment", "encoders", "heads", "data", "hf", "train",
];

/// The `[dependencies]` names of a crate (not dev-dependencies).
fn dependencies(krate: &str) -> Vec<String> {
    manifest_dependencies(&root().join("crates").join(krate))
}

/// The `[dependencies]` names in `dir/Cargo.toml`.
fn manifest_dependencies(dir: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    let mut deps = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == "[dependencies]";
        } else if inside && let Some((name, _)) = line.split_once('=') {
            let name = name.trim().trim_end_matches(".workspace").to_string();
            if !name.is_empty() && !name.starts_with('#') {
                deps.push(name);
            }
        }
    }
    deps
}

/// What the model crates must not depend on: text and files. A name ending in `*` is a prefix.
const TEXT_AND_FILES: [&str; 6] = [
    "sequin-tokenize",
    "tokenizers",
    "sequin-data",
    "arrow*",
    "parquet",
    "sequin-fs",
];

/// Whether dependency `dep` is the forbidden name `f` (or starts with it, for `prefix*`).
fn is(dep: &str, f: &str) -> bool {
    match f.strip_suffix('*') {
        Some(prefix) => dep.starts_with(prefix),
        None => dep == f,
    }
}

#[test]
fn the_crate_graph_keeps_its_layers() {
    for (krate, forbidden) in [
        // Text crates know nothing of tensors.
        ("tokenize", &["burn", "sequin-data", "sequin-encoders"][..]),
        ("augment", &["burn", "sequin-data", "sequin-encoders"][..]),
        // Model crates know nothing of strings or files.
        ("encoders", &TEXT_AND_FILES[..]),
        ("heads", &TEXT_AND_FILES[..]),
    ] {
        let deps = dependencies(krate);
        for f in forbidden {
            assert!(
                !deps.iter().any(|d| is(d, f)),
                "sequin-{krate} depends on {f}"
            );
        }
    }
    // xtask builds first on a fresh checkout (dev profile): none of sequin's crates, burn, the
    // tokenizer or the data readers, or a cold `cargo xtask train` waits minutes longer.
    let xtask = manifest_dependencies(&root().join("xtask"));
    for f in ["sequin-*", "burn*", "tokenizers", "arrow*", "parquet"] {
        assert!(!xtask.iter().any(|d| is(d, f)), "xtask depends on {f}");
    }
    for krate in LIBRARIES {
        let deps = dependencies(krate);
        // Typed errors in libraries; backends chosen only by the CLI.
        for f in ["anyhow", "burn-wgpu", "burn-cuda", "clap"] {
            assert!(
                !deps.iter().any(|d| d == f),
                "sequin-{krate} depends on {f}"
            );
        }
        // Only the model resolver reaches the network.
        if krate != "hf" {
            assert!(
                !deps.iter().any(|d| d == "hf-hub"),
                "sequin-{krate} depends on hf-hub"
            );
        }
    }
}

#[test]
fn only_sequin_fs_creates_temp_files_or_renames() {
    let patterns = [
        "fs::rename(",
        "File::create(",
        "OpenOptions",
        "NamedTempFile",
        ".tmp\"",
        "tmp.png",
    ];
    let mut found = Vec::new();
    for file in rust_files(&root().join("crates")) {
        if file.starts_with(root().join("crates/fs")) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, line) in text.lines().enumerate() {
            // (`AtomicFile::create` is sequin-fs's own.)
            let hit = patterns.iter().any(|p| {
                line.match_indices(p)
                    .any(|(at, _)| !line[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_'))
            });
            if hit {
                found.push(format!("{}:{}: {}", file.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "writes outside sequin-fs:\n{}",
        found.join("\n")
    );
}

/// `(file, line, name, length in lines)` of every function in a file: from its `fn` line to
/// the line that closes its body (braces counted outside strings, chars and comments).
fn functions(text: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        let Some(pos) = t.find("fn ") else { continue };
        let head = &t[..pos];
        let is_fn = head.split_whitespace().all(|w| {
            [
                "pub",
                "pub(crate)",
                "pub(super)",
                "const",
                "async",
                "unsafe",
                "extern",
            ]
            .contains(&w)
                || w.starts_with("pub(")
        });
        if !is_fn || t.starts_with("//") {
            continue;
        }
        let name: String = t[pos + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let mut depth = 0i64;
        let mut opened = false;
        let mut end = None;
        'scan: for (j, l) in lines.iter().enumerate().skip(i) {
            let mut chars = l.chars().peekable();
            let mut in_str = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' if in_str => {
                        chars.next();
                    }
                    '"' => in_str = !in_str,
                    '/' if !in_str && chars.peek() == Some(&'/') => break,
                    '\'' if !in_str => {
                        // A char literal like '{' (lifetimes have no closing quote nearby).
                        let rest: String = chars.clone().take(3).collect();
                        if rest.len() >= 2 && rest.chars().nth(1) == Some('\'') {
                            chars.next();
                            chars.next();
                        }
                    }
                    '{' if !in_str => {
                        depth += 1;
                        opened = true;
                    }
                    '}' if !in_str => {
                        depth -= 1;
                        if opened && depth == 0 {
                            end = Some(j);
                            break 'scan;
                        }
                    }
                    ';' if !in_str && !opened => break 'scan, // a declaration without a body
                    _ => {}
                }
            }
        }
        if let Some(j) = end {
            out.push((i + 1, name, j - i + 1));
        }
    }
    out
}

#[test]
fn no_function_in_the_crates_is_longer_than_150_lines() {
    let mut long = Vec::new();
    for file in rust_files(&root().join("crates")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (line, name, len) in functions(&text) {
            if len > 150 {
                long.push(format!("{}:{line}: fn {name}: {len} lines", file.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over 150 lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn no_function_wants_too_many_arguments() {
    for file in rust_files(&root().join("crates")) {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("too_many_arguments"),
            "{}: allows too_many_arguments; pass a context struct",
            file.display()
        );
    }
}

#[test]
fn the_function_scanner_measures_bodies() {
    let text = "pub(crate) fn a(x: u8) -> u8 {\n    let s = \"}\";\n    '{';\n    x\n}\n\nfn b();\nfn c() {}\n";
    let f = functions(text);
    assert_eq!(f, vec![(1, "a".to_string(), 5), (8, "c".to_string(), 1)]);
}

/// The families registered in `for_each_family!`, as `(module, type)`.
fn registered_families() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("crates/encoders/src/family.rs")).unwrap();
    let list = &text[text.find("macro_rules! for_each_family").unwrap()..];
    list.lines()
        .filter_map(|l| l.trim().split_once("=> $crate::"))
        .map(|(_, path)| {
            let (module, ty) = path.trim_end_matches(',').split_once("::").unwrap();
            (module.to_string(), ty.to_string())
        })
        .collect()
}

#[test]
fn a_family_is_one_file_and_one_registration() {
    let families = registered_families();
    assert_eq!(families.len(), 5, "{families:?}");
    let encoders = root().join("crates/encoders/src");
    for (module, ty) in &families {
        let file = encoders.join(format!("{module}.rs"));
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.contains(&format!("impl Family for {ty} ")),
            "{}",
            file.display()
        );
        assert!(text.contains("impl Backbone for "), "{}", file.display());
        let lib = std::fs::read_to_string(encoders.join("lib.rs")).unwrap();
        assert!(
            lib.contains(&format!("pub mod {module};")),
            "{module} not declared"
        );
    }
    // Every family file in encoders is registered: nothing half-added.
    for file in rust_files(&encoders) {
        let text = std::fs::read_to_string(&file).unwrap();
        if text.contains("impl Family for ") {
            let stem = file.file_stem().unwrap().to_str().unwrap();
            assert!(
                families.iter().any(|(m, _)| m == stem),
                "{stem} is not registered"
            );
        }
    }
    // No hand-written dispatch on the family anywhere else: matches are generated.
    for krate in LIBRARIES.iter().chain(&["cli"]) {
        for file in rust_files(&root().join("crates").join(krate).join("src")) {
            let text = std::fs::read_to_string(&file).unwrap();
            for (variant, _) in families
                .iter()
                .map(|(m, t)| (t.replace("ForSequenceClassification", ""), m))
            {
                for pat in [
                    format!("SequenceClassifier::{variant}("),
                    format!("ArchConfig::{variant}("),
                ] {
                    assert!(
                        !text.contains(&pat),
                        "{}: hand-written `{pat}`",
                        file.display()
                    );
                }
            }
        }
    }
}
