//! Bad input: every case fails with a message that names the file, the row, column or tensor,
//! and the problem, and nothing panics (the command runs in-process: a panic fails the test).

use std::path::Path;

use crate::common::*;

/// The temp folder of a test (removed at its end).
type Tmp = TestDir;

fn tiny() -> String {
    fixture("bert-tiny-cls").to_string_lossy().into_owned()
}

fn train_err(t: &Tmp, train: &str, extra: &[&str]) -> String {
    let out = t.path("out");
    let mut args = vec![
        "train",
        "--model",
        &*Box::leak(tiny().into_boxed_str()),
        "--train",
        train,
        "--output",
        &out,
        "--max-steps",
        "1",
    ];
    args.extend_from_slice(extra);
    sequin_err(&args)
}

fn assert_has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message lacks {p:?}: {msg}");
    }
}

#[test]
fn missing_text_column_names_it_and_lists_columns() {
    let t = Tmp::new("bad-col");
    let train = dataset("amazon-food", "train");
    let msg = train_err(&t, train.to_str().unwrap(), &["--text-column", "review"]);
    assert_has(
        &msg,
        &[
            "train.parquet",
            "no column `review`",
            "text, label, product",
        ],
    );
}

#[test]
fn unknown_validation_label_is_named() {
    let t = Tmp::new("bad-label");
    let train = t.file(
        "train.jsonl",
        b"{\"text\": \"good\", \"label\": \"pos\"}\n{\"text\": \"bad\", \"label\": \"neg\"}\n",
    );
    let val = t.file(
        "val.jsonl",
        b"{\"text\": \"meh\", \"label\": \"neutral\"}\n{\"text\": \"ok\", \"label\": \"pos\"}\n",
    );
    let msg = train_err(&t, &train, &["--validation", &val]);
    assert_has(
        &msg,
        &[
            "val.jsonl",
            "not seen in the training data: neutral",
            "known: neg, pos",
        ],
    );
}

#[test]
fn empty_files_are_reported() {
    let t = Tmp::new("bad-empty");
    for (name, content) in [("e.jsonl", &b""[..]), ("e.csv", b"text,label\n")] {
        let f = t.file(name, content);
        let msg = train_err(&t, &f, &[]);
        assert_has(&msg, &[name, "no data rows"]);
    }
    let f = t.file("e.parquet", b"");
    let msg = train_err(&t, &f, &[]);
    assert_has(&msg, &["e.parquet", "cannot parse as Parquet"]);
}

#[test]
fn corrupt_parquet_is_reported() {
    let t = Tmp::new("bad-corrupt");
    let bytes = std::fs::read(dataset("amazon-food", "train")).unwrap();
    let f = t.file("cut.parquet", &bytes[..bytes.len() / 2]);
    let msg = train_err(&t, &f, &[]);
    assert_has(&msg, &["cut.parquet", "cannot parse as Parquet"]);
    let mut garbled = bytes.clone();
    for b in garbled.iter_mut().skip(4).take(bytes.len() - 8) {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
    let f = t.file("garbled.parquet", &garbled);
    let msg = train_err(&t, &f, &[]);
    assert_has(&msg, &["garbled.parquet", "Parquet"]);
}

#[test]
fn empty_text_and_bad_json_name_the_row() {
    let t = Tmp::new("bad-rows");
    let f = t.file(
        "t.jsonl",
        b"{\"text\": \"fine\", \"label\": \"a\"}\n{\"text\": \"  \", \"label\": \"b\"}\n",
    );
    assert_has(&train_err(&t, &f, &[]), &["t.jsonl", "row 2", "empty"]);
    let f = t.file(
        "j.jsonl",
        b"{\"text\": \"fine\", \"label\": \"a\"}\n{\"text\": \"oops\", \n",
    );
    assert_has(
        &train_err(&t, &f, &[]),
        &["j.jsonl", "row 2", "invalid JSON"],
    );
    let f = t.file(
        "l.jsonl",
        b"{\"text\": \"fine\", \"label\": \"a\"}\n{\"text\": \"x\", \"label\": [1]}\n",
    );
    assert_has(&train_err(&t, &f, &[]), &["l.jsonl", "row 2", "label"]);
    let f = t.file("n.csv", b"text,label\nfine,a\nno label here,\n");
    assert_has(&train_err(&t, &f, &[]), &["n.csv", "row 2", "label"]);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn rewrite_tensors(
    dir: &Path,
    edit: impl FnOnce(&mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut ts: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut ts);
    let views: Vec<(String, safetensors::tensor::TensorView)> = ts
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let out = safetensors::serialize(views, None).unwrap();
    std::fs::write(&path, out).unwrap();
}

#[test]
fn checkpoint_problems_name_the_tensor() {
    let t = Tmp::new("bad-ckpt");
    let input = t.file("in.jsonl", b"{\"text\": \"hello\"}\n");
    let out = t.path("pred.jsonl");
    let predict = |dir: &Path| {
        sequin_err(&[
            "predict",
            "--model",
            dir.to_str().unwrap(),
            "--input",
            &input,
            "--output",
            &out,
        ])
    };

    // Wrong shapes: config.json says another intermediate size than the weights have.
    let d = t.join("shape");
    copy_dir(&fixture("bert-tiny-cls"), &d);
    let cfg = std::fs::read_to_string(d.join("config.json")).unwrap();
    std::fs::write(
        d.join("config.json"),
        cfg.replace("\"intermediate_size\": 37", "\"intermediate_size\": 40"),
    )
    .unwrap();
    assert_has(
        &predict(&d),
        &[
            "model.safetensors",
            "intermediate.dense",
            "[37, 32]",
            "[40, 32]",
        ],
    );

    // A missing tensor.
    let d = t.join("missing");
    copy_dir(&fixture("bert-tiny-cls"), &d);
    rewrite_tensors(&d, |ts| {
        ts.retain(|t| t.0 != "bert.encoder.layer.1.output.dense.bias")
    });
    assert_has(
        &predict(&d),
        &["missing tensors", "bert.encoder.layer.1.output.dense.bias"],
    );

    // An unexpected tensor.
    let d = t.join("unused");
    copy_dir(&fixture("bert-tiny-cls"), &d);
    rewrite_tensors(&d, |ts| {
        ts.push((
            "bert.mystery.weight".into(),
            safetensors::Dtype::F32,
            vec![2],
            vec![0; 8],
        ))
    });
    assert_has(&predict(&d), &["unexpected tensors", "bert.mystery.weight"]);

    // A corrupt file.
    let d = t.join("corrupt");
    copy_dir(&fixture("bert-tiny-cls"), &d);
    std::fs::write(
        d.join("model.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json",
    )
    .unwrap();
    assert_has(&predict(&d), &["model.safetensors", "cannot read weights"]);

    // An unsupported architecture.
    let d = t.join("arch");
    copy_dir(&fixture("bert-tiny-cls"), &d);
    let cfg = std::fs::read_to_string(d.join("config.json")).unwrap();
    std::fs::write(
        d.join("config.json"),
        cfg.replace("\"model_type\": \"bert\"", "\"model_type\": \"gpt2\""),
    )
    .unwrap();
    assert_has(
        &predict(&d),
        &[
            "config.json",
            "gpt2",
            "supported: bert, distilbert, longformer, modernbert, roberta, xlm-roberta",
        ],
    );

    // A tokenizer from another model: RoBERTa's BPE has fewer tokens, BERT's more than the
    // RoBERTa fixture's 1200-row embedding table.
    let d = t.join("vocab");
    copy_dir(&fixture("roberta-tiny-cls"), &d);
    std::fs::copy(
        fixture("bert-tiny-cls").join("tokenizer.json"),
        d.join("tokenizer.json"),
    )
    .unwrap();
    std::fs::remove_file(d.join("tokenizer_config.json")).unwrap();
    assert_has(
        &predict(&d),
        &["tokenizer.json", "30522 tokens", "vocab_size 1200"],
    );

    // No model folder at all.
    assert_has(&predict(&t.join("nope")), &["nope"]);
}

#[test]
fn config_file_with_unknown_key_is_rejected() {
    let t = Tmp::new("bad-cfg");
    let cfg = t.file("run.json", b"{\"epochs\": 1, \"learning_rate\": 0.1}");
    let msg = sequin_err(&[
        "train",
        "--config",
        &cfg,
        "--model",
        &tiny(),
        "--train",
        "x.parquet",
        "--output",
        &t.path("o"),
    ]);
    assert_has(&msg, &["run.json", "unknown field `learning_rate`"]);
}

#[test]
fn bad_option_values_are_rejected() {
    let t = Tmp::new("bad-opts");
    let train = dataset("amazon-food", "train");
    let msg = train_err(&t, train.to_str().unwrap(), &["--max-length", "1000"]);
    assert_has(&msg, &["--max-length 1000", "exceeds the 64 positions"]);
    let msg = train_err(&t, train.to_str().unwrap(), &["--lr=-1"]);
    assert_has(&msg, &["--lr"]);
}

/// One case of the corpus: files to create, the `sequin` arguments (`{dir}` is the case's
/// folder, `{tiny}` the tiny model, `{amazon}` / `{movies}` dataset folders), and the parts the
/// message must contain (the file, the row or column, the problem).
struct Case {
    name: &'static str,
    files: &'static [(&'static str, &'static [u8])],
    args: &'static [&'static str],
    expect: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "csv without the label column",
        files: &[("t.csv", b"text,target\nhello,a\n")],
        args: &["train", "--train", "{dir}/t.csv"],
        expect: &["t.csv", "no column `label`", "text, target"],
    },
    Case {
        name: "tsv without the text column",
        files: &[("t.tsv", b"body\tlabel\nhello\ta\n")],
        args: &["train", "--train", "{dir}/t.tsv"],
        expect: &["t.tsv", "no column `text`", "body, label"],
    },
    Case {
        name: "jsonl row without the label field",
        files: &[("t.jsonl", b"{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\"}\n")],
        args: &["train", "--train", "{dir}/t.jsonl"],
        expect: &["t.jsonl", "no column `label`"],
    },
    Case {
        name: "a single label among label lists",
        files: &[("m.jsonl", b"{\"text\": \"a\", \"label\": [\"x\", \"y\"]}\n{\"text\": \"b\", \"label\": \"x\"}\n")],
        args: &["train", "--train", "{dir}/m.jsonl"],
        expect: &["m.jsonl", "row 2", "`x` is a single value", "list of labels"],
    },
    Case {
        name: "numeric text column",
        files: &[],
        args: &[
            "train",
            "--train",
            "{movies}/train.parquet",
            "--text-column",
            "year",
            "--label-column",
            "labels",
        ],
        expect: &["train.parquet", "column `year`", "Int64", "expected a string column"],
    },
    Case {
        name: "list labels for a single-label run",
        files: &[],
        args: &[
            "train",
            "--train",
            "{movies}/train.parquet",
            "--label-column",
            "labels",
            "--problem-type",
            "single_label_classification",
        ],
        expect: &["train.parquet", "row 1", "the label is a list"],
    },
    Case {
        name: "text labels for regression",
        files: &[],
        args: &["train", "--train", "{amazon}/train.parquet", "--problem-type", "regression"],
        expect: &["train.parquet", "row 1", "`great` is not a number"],
    },
    Case {
        name: "NaN regression target",
        files: &[("r.csv", b"text,score\nfine,1.5\nbroken,NaN\n")],
        args: &[
            "train",
            "--train",
            "{dir}/r.csv",
            "--label-column",
            "score",
            "--problem-type",
            "regression",
        ],
        expect: &["r.csv", "row 2", "NaN", "finite number"],
    },
    Case {
        name: "0/1 label column holding 2",
        files: &[("m.csv", b"text,a,b\none,1,0\ntwo,2,1\n")],
        args: &["train", "--train", "{dir}/m.csv", "--label-columns", "a,b"],
        expect: &["m.csv", "row 2", "label column `a`", "`2`", "expected 0 or 1"],
    },
    Case {
        name: "missing 0/1 label column",
        files: &[("m.csv", b"text,a,b\none,1,0\ntwo,0,1\n")],
        args: &["train", "--train", "{dir}/m.csv", "--label-columns", "a,c"],
        expect: &["m.csv", "no column `c`", "text, a, b"],
    },
    Case {
        name: "Latin-1 bytes in a CSV",
        files: &[("l1.csv", b"text,label\nfine,a\ncaf\xe9 cr\xe8me,b\n")],
        args: &["train", "--train", "{dir}/l1.csv"],
        expect: &["l1.csv", "row 2", "UTF-8"],
    },
    Case {
        name: "Latin-1 bytes in a JSONL file",
        files: &[("l1.jsonl", b"{\"text\": \"fine\", \"label\": \"a\"}\n{\"text\": \"caf\xe9\", \"label\": \"b\"}\n")],
        args: &["train", "--train", "{dir}/l1.jsonl"],
        expect: &["l1.jsonl", "row 2"],
    },
    Case {
        name: "CSV with an unterminated quote",
        files: &[("q.csv", b"text,label\n\"fine\",a\n\"never closed,b\n")],
        args: &["train", "--train", "{dir}/q.csv"],
        expect: &["q.csv", "row 2", "cannot parse CSV"],
    },
    Case {
        name: "ragged CSV rows",
        files: &[("r.csv", b"text,label\nfine,a\ntoo,many,fields\n")],
        args: &["train", "--train", "{dir}/r.csv"],
        expect: &["r.csv", "row 2", "fields"],
    },
    Case {
        name: "JSONL line that is not an object",
        files: &[("a.jsonl", b"{\"text\": \"fine\", \"label\": \"a\"}\n[\"text\", \"b\"]\n")],
        args: &["train", "--train", "{dir}/a.jsonl"],
        expect: &["a.jsonl", "row 2", "expected a JSON object per line"],
    },
    Case {
        name: "truncated JSONL (cut mid-object)",
        files: &[("c.jsonl", b"{\"text\": \"fine\", \"label\": \"a\"}\n{\"text\": \"cut her")],
        args: &["train", "--train", "{dir}/c.jsonl"],
        expect: &["c.jsonl", "row 2", "invalid JSON"],
    },
    Case {
        name: "unknown file type",
        files: &[("t.xlsx", b"PK\x03\x04")],
        args: &["train", "--train", "{dir}/t.xlsx"],
        expect: &["t.xlsx", "unknown data format", ".parquet, .csv"],
    },
    Case {
        name: "training file that does not exist",
        files: &[],
        args: &["train", "--train", "{dir}/absent.parquet"],
        expect: &["absent.parquet", "No such file"],
    },
    Case {
        name: "a folder given as the training file",
        files: &[("sub.csv/x", b"")],
        args: &["train", "--train", "{dir}/sub.csv"],
        expect: &["sub.csv"],
    },
    Case {
        name: "output folder under a regular file",
        files: &[("blocker", b"a file")],
        args: &["train", "--train", "{amazon}/train.parquet", "--output", "{dir}/blocker/out"],
        expect: &["blocker/out"],
    },
    Case {
        name: "predict output under a regular file",
        files: &[("blocker", b"a file")],
        args: &[
            "predict",
            "--model",
            "{tiny}",
            "--input",
            "{amazon}/validation.parquet",
            "--output",
            "{dir}/blocker/p.jsonl",
        ],
        expect: &["blocker"],
    },
    Case {
        name: "eval data with a label the model lacks",
        files: &[("e.jsonl", b"{\"text\": \"fine\", \"label\": \"neutral\"}\n{\"text\": \"bad\", \"label\": \"sarcastic\"}\n")],
        args: &["eval", "--model", "{tiny}", "--data", "{dir}/e.jsonl"],
        expect: &["e.jsonl", "not seen in the training data: sarcastic", "known: negative, neutral, positive"],
    },
    Case {
        name: "predict input without the text column",
        files: &[("p.jsonl", b"{\"body\": \"fine\"}\n")],
        args: &["predict", "--model", "{tiny}", "--input", "{dir}/p.jsonl", "--output", "{dir}/o.jsonl"],
        expect: &["p.jsonl", "no column `text`", "body"],
    },
    Case {
        name: "resume of a folder without checkpoints",
        files: &[("run/config.json", b"{}")],
        args: &["train", "--resume", "{dir}/run"],
        expect: &["run", "holds no checkpoint", "checkpoint-N"],
    },
    Case {
        name: "class weights that are not numbers",
        files: &[],
        args: &["train", "--train", "{amazon}/train.parquet", "--class-weights", "1,heavy"],
        expect: &["--class-weights", "`heavy` is not a number"],
    },
    Case {
        name: "validation split out of range",
        files: &[],
        args: &["train", "--train", "{amazon}/train.parquet", "--validation-split", "1.5"],
        expect: &["--validation-split", "(0, 1)", "1.5"],
    },
    Case {
        name: "mixup alpha that is not positive",
        files: &[],
        args: &["train", "--train", "{amazon}/train.parquet", "--mixup-alpha", "0"],
        expect: &["--mixup-alpha", "> 0", "0"],
    },
    Case {
        name: "mixup with chunked long texts",
        files: &[],
        args: &["train", "--train", "{amazon}/train.parquet", "--mixup-alpha", "0.2", "--long-text", "chunk"],
        expect: &["--mixup-alpha", "--long-text chunk"],
    },
    Case {
        name: "oversampling multi-label data",
        files: &[("m.csv", b"text,a,b\nfine,1,0\nok,1,1\n")],
        args: &["train", "--train", "{dir}/m.csv", "--label-columns", "a,b", "--oversample"],
        expect: &["oversampling", "single-label"],
    },
    Case {
        name: "a metadata column the file lacks",
        files: &[("m.csv", b"text,n,c,d,label\nfine,1,x,2020-01-01,a\nbad,2,y,2020-01-02,b\n")],
        args: &["train", "--train", "{dir}/m.csv", "--numeric-columns", "size"],
        expect: &["m.csv", "no column `size`", "feature", "text, n, c, d, label"],
    },
    Case {
        name: "a word in a numeric metadata column",
        files: &[("m.csv", b"text,n,c,d,label\nfine,1,x,2020-01-01,a\nbad,many,y,2020-01-02,b\n")],
        args: &["train", "--train", "{dir}/m.csv", "--numeric-columns", "n", "--categorical-columns", "c", "--date-columns", "d"],
        expect: &["m.csv", "row 2", "`n`", "`many`", "expected a number"],
    },
    Case {
        name: "an infinite metadata value",
        files: &[("m.csv", b"text,n,c,d,label\nfine,-inf,x,2020-01-01,a\nbad,2,y,2020-01-02,b\n")],
        args: &["train", "--train", "{dir}/m.csv", "--numeric-columns", "n", "--date-columns", "d"],
        expect: &["m.csv", "row 1", "-inf", "finite"],
    },
    Case {
        name: "an unparsable date",
        files: &[("m.csv", b"text,n,c,d,label\nfine,1,x,01/02/2020,a\nbad,2,y,2020-01-02,b\n")],
        args: &["train", "--train", "{dir}/m.csv", "--date-columns", "d"],
        expect: &["m.csv", "row 1", "`d`", "expected a date"],
    },
    Case {
        name: "a fusion method without metadata columns",
        files: &[],
        args: &["train", "--train", "{amazon}/train.parquet", "--fusion", "gating"],
        expect: &["--fusion needs metadata columns"],
    },
    Case {
        name: "unknown metric in a config file",
        files: &[("run.json", b"{\"metric_for_best_model\": \"f2\"}")],
        args: &["train", "--train", "{amazon}/train.parquet", "--config", "{dir}/run.json"],
        expect: &["metric-for-best-model", "`f2`", "accuracy, macro_f1"],
    },
    Case {
        name: "a label column set for regression with class weights",
        files: &[("r.csv", b"text,score\nfine,1.5\nok,2\n")],
        args: &[
            "train",
            "--train",
            "{dir}/r.csv",
            "--label-column",
            "score",
            "--problem-type",
            "regression",
            "--class-weights",
            "auto",
        ],
        expect: &["--class-weights does not apply to regression"],
    },
];

fn fill(arg: &str, dir: &Path) -> String {
    arg.replace("{dir}", dir.to_str().unwrap())
        .replace("{tiny}", fixture("bert-tiny-cls").to_str().unwrap())
        .replace(
            "{amazon}",
            dataset("amazon-food", "train")
                .parent()
                .unwrap()
                .to_str()
                .unwrap(),
        )
        .replace(
            "{movies}",
            dataset("movie-genres", "train")
                .parent()
                .unwrap()
                .to_str()
                .unwrap(),
        )
}

/// The corpus: every case fails with a message naming the file and the row or column, and
/// leaves no output behind.
#[test]
fn bad_input_corpus() {
    let t = Tmp::new("bad-corpus");
    for (i, case) in CASES.iter().enumerate() {
        let dir = t.join(format!("case{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, content) in case.files {
            let p = dir.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            if !name.ends_with("/x") {
                std::fs::write(&p, content).unwrap();
            }
        }
        let mut args: Vec<String> = case.args.iter().map(|a| fill(a, &dir)).collect();
        if args[0] == "train" && !args.iter().any(|a| a == "--resume") {
            for (flag, value) in [
                (
                    "--model",
                    fixture("bert-tiny-cls").to_string_lossy().into_owned(),
                ),
                ("--output", dir.join("out").to_string_lossy().into_owned()),
                ("--max-length", "32".to_string()),
                ("--max-steps", "1".to_string()),
            ] {
                if !args.iter().any(|a| a == flag) {
                    args.push(flag.into());
                    args.push(value);
                }
            }
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let msg = std::panic::catch_unwind(|| sequin_err(&refs))
            .unwrap_or_else(|_| panic!("case `{}` panicked or succeeded", case.name));
        for part in case.expect {
            assert!(
                msg.contains(part),
                "case `{}`: the message lacks {part:?}: {msg}",
                case.name
            );
        }
        // No partial output: no model folder, no predictions file.
        let out = dir.join("out");
        assert!(
            !out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(),
            "case `{}` left output in {}",
            case.name,
            out.display()
        );
        assert!(
            !dir.join("o.jsonl").exists(),
            "case `{}` wrote predictions",
            case.name
        );
    }
    assert!(CASES.len() >= 28);
}
