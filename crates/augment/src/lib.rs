//! Text augmentation for sequin, on strings only (no tensors):
//!
//! - EDA (Wei & Zou 2019): synonym replacement and random insertion of synonyms from a shipped
//!   WordNet 3.0 table, random swap, random deletion (`alpha_sr`, `alpha_ri`, `alpha_rs`,
//!   `p_rd`);
//! - character noise: keyboard-neighbour typos, swaps of adjacent characters, deletions;
//! - AEDA (Karimi et al. 2021): random punctuation insertion.
//!
//! Every operation takes an explicit seeded RNG, so the same seed gives the same text. A
//! [`Pipeline`] (serde-tagged: `sequential`, `one-of`, `sometimes`, or one operation) combines
//! them, and every result records which operations fired. Stopwords are never replaced by
//! synonyms; protected tokens are never touched by any operation.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use serde::{Deserialize, Serialize};

/// The synonym table, compiled in (`datasets/wordnet-synonyms/synonyms.tsv`, WordNet 3.0).
static TABLE: &str = include_str!("../../../datasets/wordnet-synonyms/synonyms.tsv");

/// EDA's English stopword list (never replaced by a synonym).
pub const STOPWORDS: &[&str] = &[
    "i",
    "me",
    "my",
    "myself",
    "we",
    "our",
    "ours",
    "ourselves",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
    "he",
    "him",
    "his",
    "himself",
    "she",
    "her",
    "hers",
    "herself",
    "it",
    "its",
    "itself",
    "they",
    "them",
    "their",
    "theirs",
    "themselves",
    "what",
    "which",
    "who",
    "whom",
    "this",
    "that",
    "these",
    "those",
    "am",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "have",
    "has",
    "had",
    "having",
    "do",
    "does",
    "did",
    "doing",
    "a",
    "an",
    "the",
    "and",
    "but",
    "if",
    "or",
    "because",
    "as",
    "until",
    "while",
    "of",
    "at",
    "by",
    "for",
    "with",
    "about",
    "against",
    "between",
    "into",
    "through",
    "during",
    "before",
    "after",
    "above",
    "below",
    "to",
    "from",
    "up",
    "down",
    "in",
    "out",
    "on",
    "off",
    "over",
    "under",
    "again",
    "further",
    "then",
    "once",
    "here",
    "there",
    "when",
    "where",
    "why",
    "how",
    "all",
    "any",
    "both",
    "each",
    "few",
    "more",
    "most",
    "other",
    "some",
    "such",
    "no",
    "nor",
    "not",
    "only",
    "own",
    "same",
    "so",
    "than",
    "too",
    "very",
    "s",
    "t",
    "can",
    "will",
    "just",
    "don",
    "should",
    "now",
    "",
];

/// Word → synonyms (all parts of speech, most frequent sense first, deduplicated).
pub struct Lexicon {
    map: HashMap<&'static str, Vec<&'static str>>,
}

impl Lexicon {
    /// The shipped WordNet table, parsed once.
    pub fn wordnet() -> &'static Lexicon {
        static L: OnceLock<Lexicon> = OnceLock::new();
        L.get_or_init(|| {
            let mut map: HashMap<&'static str, Vec<&'static str>> = HashMap::new();
            for line in TABLE.lines() {
                let mut parts = line.split('\t');
                let (Some(word), Some(_pos), Some(syns)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let entry = map.entry(word).or_default();
                for s in syns.split(',') {
                    if !entry.contains(&s) {
                        entry.push(s);
                    }
                }
            }
            Lexicon { map }
        })
    }

    /// Synonyms of a lowercase word (empty when it has none).
    pub fn synonyms(&self, word: &str) -> &[&'static str] {
        self.map.get(word).map_or(&[], Vec::as_slice)
    }

    /// Number of words with synonyms.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// One augmentation operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// Replace `max(1, alpha·n)` non-stopwords by a WordNet synonym.
    SynonymReplacement {
        /// `alpha_sr`.
        alpha: f64,
    },
    /// Insert a synonym of a random word at a random position, `max(1, alpha·n)` times.
    RandomInsertion {
        /// `alpha_ri`.
        alpha: f64,
    },
    /// Swap two random words, `max(1, alpha·n)` times.
    RandomSwap {
        /// `alpha_rs`.
        alpha: f64,
    },
    /// Delete each word with probability `p` (one word always stays).
    RandomDeletion {
        /// `p_rd`.
        p: f64,
    },
    /// In each word, with probability `p`, replace one letter by a QWERTY neighbour.
    KeyboardTypo {
        /// Per-word probability.
        p: f64,
    },
    /// In each word, with probability `p`, swap two adjacent characters.
    CharSwap {
        /// Per-word probability.
        p: f64,
    },
    /// In each word, with probability `p`, delete one character.
    CharDeletion {
        /// Per-word probability.
        p: f64,
    },
    /// AEDA: insert between 1 and a third of the word count punctuation marks
    /// (`. ; ? : ! ,`) at random positions.
    Punctuation,
}

/// A combination of operations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Pipeline {
    /// One operation.
    Op(Op),
    /// Every step, in order.
    Sequential {
        /// The steps.
        steps: Vec<Pipeline>,
    },
    /// One step chosen at random.
    OneOf {
        /// The candidates.
        steps: Vec<Pipeline>,
    },
    /// The step with probability `p`.
    Sometimes {
        /// Probability.
        p: f64,
        /// The step.
        step: Box<Pipeline>,
    },
}

impl Pipeline {
    /// EDA as its authors run it: each variant is one of the four operations with the given
    /// parameters (`alpha_sr`, `alpha_ri`, `alpha_rs`, `p_rd`; 0.1 each in the paper).
    pub fn eda(alpha_sr: f64, alpha_ri: f64, alpha_rs: f64, p_rd: f64) -> Self {
        Self::OneOf {
            steps: vec![
                Self::Op(Op::SynonymReplacement { alpha: alpha_sr }),
                Self::Op(Op::RandomInsertion { alpha: alpha_ri }),
                Self::Op(Op::RandomSwap { alpha: alpha_rs }),
                Self::Op(Op::RandomDeletion { p: p_rd }),
            ],
        }
    }

    /// Checks probabilities and rates.
    pub fn validate(&self) -> Result<(), AugmentError> {
        let check = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(AugmentError::Spec(format!(
                    "{name} must be in [0, 1], got {v}"
                )))
            }
        };
        match self {
            Self::Op(op) => match op {
                Op::SynonymReplacement { alpha }
                | Op::RandomInsertion { alpha }
                | Op::RandomSwap { alpha } => check("alpha", *alpha),
                Op::RandomDeletion { p }
                | Op::KeyboardTypo { p }
                | Op::CharSwap { p }
                | Op::CharDeletion { p } => check("p", *p),
                Op::Punctuation => Ok(()),
            },
            Self::Sequential { steps } | Self::OneOf { steps } => {
                if steps.is_empty() {
                    return Err(AugmentError::Spec("a pipeline step list is empty".into()));
                }
                steps.iter().try_for_each(Pipeline::validate)
            }
            Self::Sometimes { p, step } => {
                check("p", *p)?;
                step.validate()
            }
        }
    }
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum AugmentError {
    /// An invalid pipeline.
    #[error("invalid augmentation spec: {0}")]
    Spec(String),
}

/// An augmented text and the operations that changed it, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Augmented {
    /// The text.
    pub text: String,
    /// Names of the operations that fired (`synonym-replacement`, ...).
    pub ops: Vec<&'static str>,
}

/// Applies pipelines to texts.
pub struct Augmenter<'a> {
    lexicon: &'a Lexicon,
    stopwords: HashSet<&'static str>,
    protected: HashSet<String>,
}

impl Augmenter<'static> {
    /// With the shipped WordNet table and EDA's stopwords.
    pub fn new() -> Self {
        Self {
            lexicon: Lexicon::wordnet(),
            stopwords: STOPWORDS.iter().copied().collect(),
            protected: HashSet::new(),
        }
    }
}

impl Default for Augmenter<'static> {
    fn default() -> Self {
        Self::new()
    }
}

const PUNCT: [&str; 6] = [".", ";", "?", ":", "!", ","];

fn neighbours(c: char) -> &'static str {
    match c.to_ascii_lowercase() {
        'q' => "wa",
        'w' => "qeas",
        'e' => "wrsd",
        'r' => "etdf",
        't' => "ryfg",
        'y' => "tugh",
        'u' => "yihj",
        'i' => "uojk",
        'o' => "ipkl",
        'p' => "ol",
        'a' => "qwsz",
        's' => "awedxz",
        'd' => "serfcx",
        'f' => "drtgvc",
        'g' => "ftyhbv",
        'h' => "gyujnb",
        'j' => "huikmn",
        'k' => "jiolm",
        'l' => "kop",
        'z' => "asx",
        'x' => "zsdc",
        'c' => "xdfv",
        'v' => "cfgb",
        'b' => "vghn",
        'n' => "bhjm",
        'm' => "njk",
        _ => "",
    }
}

impl<'a> Augmenter<'a> {
    /// Tokens that no operation may touch (matched case-insensitively, whole words).
    pub fn with_protected(mut self, tokens: impl IntoIterator<Item = String>) -> Self {
        self.protected = tokens.into_iter().map(|t| t.to_lowercase()).collect();
        self
    }

    fn free(&self, w: &str) -> bool {
        !self.protected.contains(&w.to_lowercase())
    }

    /// One augmented variant of `text`.
    pub fn apply(&self, text: &str, pipeline: &Pipeline, rng: &mut impl Rng) -> Augmented {
        let mut words: Vec<String> = text.split_whitespace().map(String::from).collect();
        let mut ops = Vec::new();
        self.run(&mut words, pipeline, rng, &mut ops);
        Augmented {
            text: words.join(" "),
            ops,
        }
    }

    fn run(
        &self,
        words: &mut Vec<String>,
        p: &Pipeline,
        rng: &mut impl Rng,
        ops: &mut Vec<&'static str>,
    ) {
        match p {
            Pipeline::Op(op) => {
                if let Some(name) = self.op(words, op, rng) {
                    ops.push(name);
                }
            }
            Pipeline::Sequential { steps } => {
                for s in steps {
                    self.run(words, s, rng, ops);
                }
            }
            Pipeline::OneOf { steps } => {
                if let Some(s) = steps.choose(rng) {
                    self.run(words, s, rng, ops);
                }
            }
            Pipeline::Sometimes { p, step } => {
                if rng.random_bool(p.clamp(0.0, 1.0)) {
                    self.run(words, step, rng, ops);
                }
            }
        }
    }

    /// Applies one operation; returns its name when it changed something.
    fn op(&self, words: &mut Vec<String>, op: &Op, rng: &mut impl Rng) -> Option<&'static str> {
        let n = words.len();
        if n == 0 {
            return None;
        }
        let count = |alpha: f64| ((alpha * n as f64) as usize).max(1);
        let before = words.clone();
        let name = match op {
            Op::SynonymReplacement { alpha } => {
                let mut candidates: Vec<usize> = (0..n)
                    .filter(|&i| {
                        let w = words[i].to_lowercase();
                        self.free(&w)
                            && !self.stopwords.contains(w.as_str())
                            && !self.lexicon.synonyms(&w).is_empty()
                    })
                    .collect();
                candidates.shuffle(rng);
                for &i in candidates.iter().take(count(*alpha)) {
                    let syns = self.lexicon.synonyms(&words[i].to_lowercase());
                    if let Some(s) = syns.choose(rng) {
                        words[i] = s.to_string();
                    }
                }
                "synonym-replacement"
            }
            Op::RandomInsertion { alpha } => {
                for _ in 0..count(*alpha) {
                    // Up to 10 tries to find a word with synonyms, as EDA does.
                    for _ in 0..10 {
                        let w = words[rng.random_range(0..words.len())].to_lowercase();
                        if !self.free(&w) {
                            continue;
                        }
                        if let Some(s) = self.lexicon.synonyms(&w).choose(rng) {
                            let at = rng.random_range(0..=words.len());
                            words.insert(at, s.to_string());
                            break;
                        }
                    }
                }
                "random-insertion"
            }
            Op::RandomSwap { alpha } => {
                let movable: Vec<usize> = (0..n).filter(|&i| self.free(&words[i])).collect();
                if movable.len() >= 2 {
                    for _ in 0..count(*alpha) {
                        let a = *movable.choose(rng).expect("two or more");
                        let b = *movable.choose(rng).expect("two or more");
                        words.swap(a, b);
                    }
                }
                "random-swap"
            }
            Op::RandomDeletion { p } => {
                if n > 1 {
                    let kept: Vec<String> = words
                        .iter()
                        .filter(|w| !self.free(w) || !rng.random_bool(*p))
                        .cloned()
                        .collect();
                    *words = if kept.is_empty() {
                        vec![words[rng.random_range(0..n)].clone()]
                    } else {
                        kept
                    };
                }
                "random-deletion"
            }
            Op::KeyboardTypo { p } | Op::CharSwap { p } | Op::CharDeletion { p } => {
                for w in words.iter_mut() {
                    if !self.free(w) || !rng.random_bool(*p) {
                        continue;
                    }
                    let mut cs: Vec<char> = w.chars().collect();
                    if cs.len() < 2 {
                        continue;
                    }
                    let i = rng.random_range(0..cs.len());
                    match op {
                        Op::KeyboardTypo { .. } => {
                            let nb: Vec<char> = neighbours(cs[i]).chars().collect();
                            if let Some(&c) = nb.choose(rng) {
                                cs[i] = if cs[i].is_uppercase() {
                                    c.to_ascii_uppercase()
                                } else {
                                    c
                                };
                            }
                        }
                        Op::CharSwap { .. } => {
                            let j = if i + 1 < cs.len() { i + 1 } else { i - 1 };
                            cs.swap(i, j);
                        }
                        _ => {
                            cs.remove(i);
                        }
                    }
                    *w = cs.into_iter().collect();
                }
                match op {
                    Op::KeyboardTypo { .. } => "keyboard-typo",
                    Op::CharSwap { .. } => "char-swap",
                    _ => "char-deletion",
                }
            }
            Op::Punctuation => {
                let k = rng.random_range(1..=(n / 3).max(1));
                for _ in 0..k {
                    let at = rng.random_range(0..=words.len());
                    words.insert(at, PUNCT.choose(rng).expect("marks").to_string());
                }
                "punctuation"
            }
        };
        (*words != before).then_some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const TEXT: &str = "The cookies arrived crushed and stale but the tea was good and fresh";

    #[test]
    fn lexicon_is_shipped() {
        let l = Lexicon::wordnet();
        assert!(l.len() > 40_000);
        assert!(l.synonyms("good").contains(&"beneficial"));
        assert!(l.synonyms("happy").contains(&"glad"));
        assert!(l.synonyms("qzxv").is_empty());
    }

    #[test]
    fn same_seed_same_text_and_ops() {
        let aug = Augmenter::new();
        let p = Pipeline::Sequential {
            steps: vec![
                Pipeline::eda(0.1, 0.1, 0.1, 0.1),
                Pipeline::Sometimes {
                    p: 0.5,
                    step: Box::new(Pipeline::Op(Op::KeyboardTypo { p: 0.2 })),
                },
                Pipeline::Op(Op::Punctuation),
            ],
        };
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..20)
                .map(|_| aug.apply(TEXT, &p, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        assert!(run(7).iter().all(|a| a.ops.contains(&"punctuation")));
    }

    #[test]
    fn each_operation_does_what_it_says() {
        let aug = Augmenter::new();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let words = TEXT.split_whitespace().count();
        let sr = aug.apply(
            TEXT,
            &Pipeline::Op(Op::SynonymReplacement { alpha: 0.2 }),
            &mut rng,
        );
        assert_eq!(sr.text.split_whitespace().count(), words);
        assert_ne!(sr.text, TEXT);
        let ri = aug.apply(
            TEXT,
            &Pipeline::Op(Op::RandomInsertion { alpha: 0.2 }),
            &mut rng,
        );
        assert_eq!(ri.text.split_whitespace().count(), words + 2);
        let rs = aug.apply(TEXT, &Pipeline::Op(Op::RandomSwap { alpha: 0.2 }), &mut rng);
        let mut a: Vec<&str> = rs.text.split_whitespace().collect();
        let mut b: Vec<&str> = TEXT.split_whitespace().collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
        let rd = aug.apply(TEXT, &Pipeline::Op(Op::RandomDeletion { p: 0.5 }), &mut rng);
        assert!(rd.text.split_whitespace().count() < words);
        let one = aug.apply(
            "word",
            &Pipeline::Op(Op::RandomDeletion { p: 1.0 }),
            &mut rng,
        );
        assert_eq!(one.text, "word");
        let typo = aug.apply(TEXT, &Pipeline::Op(Op::CharDeletion { p: 1.0 }), &mut rng);
        assert_eq!(typo.text.len(), TEXT.len() - words);
        // Stopwords are never replaced; protected tokens are never touched.
        let aug = Augmenter::new().with_protected(["cookies".to_string(), "tea".to_string()]);
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let out = aug.apply(
                TEXT,
                &Pipeline::Sequential {
                    steps: vec![
                        Pipeline::Op(Op::SynonymReplacement { alpha: 1.0 }),
                        Pipeline::Op(Op::CharSwap { p: 1.0 }),
                        Pipeline::Op(Op::RandomDeletion { p: 0.9 }),
                    ],
                },
                &mut rng,
            );
            assert!(
                out.text.contains("cookies") && out.text.contains("tea"),
                "{}",
                out.text
            );
        }
    }

    #[test]
    fn specs_round_trip_and_validate() {
        let spec = r#"{"type": "sequential", "steps": [
            {"type": "one-of", "steps": [{"type": "op", "op": "synonym-replacement", "alpha": 0.1},
                                         {"type": "op", "op": "random-swap", "alpha": 0.1}]},
            {"type": "sometimes", "p": 0.3, "step": {"type": "op", "op": "punctuation"}}]}"#;
        let p: Pipeline = serde_json::from_str(spec).unwrap();
        p.validate().unwrap();
        let back: Pipeline = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(p, back);
        let bad: Pipeline =
            serde_json::from_str(r#"{"type": "op", "op": "random-deletion", "p": 1.5}"#).unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("1.5"));
    }
}
