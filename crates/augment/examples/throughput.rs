//! Augmentation throughput on one thread: sentences per second for each operation and for the
//! EDA pipeline, over short sentences (run by `cargo xtask bench-augment`; prints one JSON line).

use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sequin_augment::{Augmenter, Op, Pipeline};

fn main() {
    // Short review-like sentences (8 to 20 words), varied so that lookups are not all cached.
    let base = [
        "the tea arrived quickly and tasted fresh and good",
        "these cookies were stale and the box was crushed when it came",
        "great coffee with a smooth taste and a pleasant smell",
        "my dog loves these treats and asks for them every evening",
        "the price is high but the quality of the chocolate is excellent",
        "not worth the money the flavor was weak and the bag was half empty",
    ];
    let sentences: Vec<String> = (0..60_000)
        .map(|i| {
            format!(
                "{} {}",
                base[i % base.len()],
                ["today", "again", "indeed"][i % 3]
            )
        })
        .collect();
    let aug = Augmenter::new();
    let _ = sequin_augment::Lexicon::wordnet(); // parse the table before timing
    let ops: Vec<(&str, Pipeline)> = vec![
        (
            "synonym-replacement",
            Pipeline::Op(Op::SynonymReplacement { alpha: 0.1 }),
        ),
        (
            "random-insertion",
            Pipeline::Op(Op::RandomInsertion { alpha: 0.1 }),
        ),
        ("random-swap", Pipeline::Op(Op::RandomSwap { alpha: 0.1 })),
        (
            "random-deletion",
            Pipeline::Op(Op::RandomDeletion { p: 0.1 }),
        ),
        ("keyboard-typo", Pipeline::Op(Op::KeyboardTypo { p: 0.1 })),
        ("char-swap", Pipeline::Op(Op::CharSwap { p: 0.1 })),
        ("char-deletion", Pipeline::Op(Op::CharDeletion { p: 0.1 })),
        ("punctuation", Pipeline::Op(Op::Punctuation)),
        ("eda", Pipeline::eda(0.1, 0.1, 0.1, 0.1)),
    ];
    let mut out = serde_json::Map::new();
    for (name, p) in &ops {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let t = Instant::now();
        let mut chars = 0usize;
        for s in &sentences {
            chars += aug.apply(s, p, &mut rng).text.len();
        }
        let rate = sentences.len() as f64 / t.elapsed().as_secs_f64();
        std::hint::black_box(chars);
        out.insert((*name).into(), serde_json::Value::from(rate.round()));
        eprintln!("{name:>20}: {rate:>10.0} sentences/s");
    }
    println!("{}", serde_json::Value::Object(out));
}
