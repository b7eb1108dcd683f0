//! Tokenization for sequin.
//!
//! Wraps Hugging Face `tokenizers` so that ids, attention masks and token-type ids are
//! identical to what `transformers` produces, while the truncation and padding baked into a
//! `tokenizer.json` (the all-MiniLM-L6-v2 one hard-codes 128) are always overridden by the
//! caller's [`EncodeOptions`].
//!
//! This crate knows nothing of tensors: it returns plain `Vec<u32>` rows.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, TruncationDirection, TruncationParams,
    TruncationStrategy,
};

/// Errors raised while loading a tokenizer or encoding text.
#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    /// Neither `tokenizer.json` nor `vocab.txt` exists in the folder.
    #[error(
        "no tokenizer in {dir}: expected `tokenizer.json` or a WordPiece `vocab.txt` in that folder"
    )]
    NotFound {
        /// The folder that was searched.
        dir: PathBuf,
    },
    /// The tokenizer file exists but could not be parsed.
    #[error("cannot load tokenizer {path}: {message}")]
    Load {
        /// The file that failed.
        path: PathBuf,
        /// What the tokenizers library said.
        message: String,
    },
    /// The tokenizer has no padding token that could be found.
    #[error(
        "tokenizer {path} has no padding token: none of {tried:?} is in its vocabulary and it sets no padding"
    )]
    NoPadToken {
        /// The tokenizer file.
        path: PathBuf,
        /// The candidate tokens that were tried.
        tried: Vec<&'static str>,
    },
    /// Encoding failed inside the tokenizers library.
    #[error("tokenization failed: {0}")]
    Encode(String),
    /// Options that cannot work, e.g. `max_length` of zero.
    #[error("invalid tokenizer option: {0}")]
    Options(String),
    /// Writing the tokenizer files failed.
    #[error("cannot write {path}: {message}")]
    Save {
        /// The destination.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, TokenizeError>;

/// Truncation and padding applied to every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Maximum length in tokens, special tokens included. Pairs are truncated longest-first.
    pub max_length: usize,
    /// Pad each batch to the longest row, rounded up to a multiple of this.
    pub pad_to_multiple_of: Option<usize>,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            max_length: 128,
            pad_to_multiple_of: None,
        }
    }
}

/// How texts longer than `max_length` are fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(tag = "policy", rename_all = "kebab-case")]
pub enum LongText {
    /// Keep the first `max_length` tokens (pairs: longest-first), as transformers does.
    #[default]
    Truncate,
    /// Keep the first `head` and the last `tail` content tokens (single texts; pairs are
    /// truncated longest-first).
    HeadTail {
        /// Tokens kept from the start.
        head: usize,
        /// Tokens kept from the end.
        tail: usize,
    },
    /// Overlapping windows of `max_length` tokens, `stride` tokens of overlap, at most
    /// `max_chunks` windows; each window gets its own special tokens. For pairs only the first
    /// text is windowed.
    Chunk {
        /// Tokens shared by consecutive windows.
        stride: usize,
        /// The most windows kept per text.
        max_chunks: usize,
        /// Which windows a text with more than `max_chunks` keeps.
        #[serde(default)]
        select: ChunkSelect,
    },
}

/// Which windows a text keeps when it has more than `max_chunks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChunkSelect {
    /// The first `max_chunks` windows (the start of the text).
    #[default]
    First,
    /// `max_chunks` windows spread evenly from the first to the last, so that a very long
    /// text is read throughout.
    Spread,
}

/// The long-text policies by name, as a user picks one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LongTextKind {
    /// [`LongText::Truncate`].
    Truncate,
    /// [`LongText::HeadTail`].
    HeadTail,
    /// [`LongText::Chunk`].
    Chunk,
}

/// A long-text policy as asked for: a kind and any of its sizes. [`LongTextRequest::resolve`]
/// fills the rest with sequin's defaults for a `max_length`, so that every front end (the
/// CLI, a config file, a server) gets the same policy from the same request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LongTextRequest {
    /// The policy; `None` when none is named.
    pub kind: Option<LongTextKind>,
    /// head-tail: tokens kept from the start [default: a quarter of the content tokens].
    pub head: Option<usize>,
    /// head-tail: tokens kept from the end [default: the rest of the content tokens].
    pub tail: Option<usize>,
    /// chunk: tokens shared by consecutive windows [default: a quarter of `max_length`].
    pub stride: Option<usize>,
    /// chunk: the most windows per text [default: 8].
    pub max_chunks: Option<usize>,
    /// chunk: which windows a longer text keeps [default: the first].
    pub select: Option<ChunkSelect>,
}

impl LongTextRequest {
    /// This request, with `base`'s values wherever this one has none (flags over a file).
    pub fn or(self, base: LongTextRequest) -> LongTextRequest {
        LongTextRequest {
            kind: self.kind.or(base.kind),
            head: self.head.or(base.head),
            tail: self.tail.or(base.tail),
            stride: self.stride.or(base.stride),
            max_chunks: self.max_chunks.or(base.max_chunks),
            select: self.select.or(base.select),
        }
    }

    /// The policy for texts of at most `max_length` tokens (special tokens included); `None`
    /// when no policy is named, which is an error if sizes are given.
    pub fn resolve(&self, max_length: usize) -> Result<Option<LongText>> {
        let content = max_length.saturating_sub(2);
        let Some(kind) = self.kind else {
            if self.head.is_some()
                || self.tail.is_some()
                || self.stride.is_some()
                || self.max_chunks.is_some()
                || self.select.is_some()
            {
                return Err(TokenizeError::Options(
                    "--head-tokens, --tail-tokens, --chunk-stride, --max-chunks and --chunk-select need --long-text head-tail or chunk".into(),
                ));
            }
            return Ok(None);
        };
        Ok(Some(match kind {
            LongTextKind::Truncate => LongText::Truncate,
            LongTextKind::HeadTail => {
                let head = self.head.unwrap_or(content / 4);
                let tail = self.tail.unwrap_or(content.saturating_sub(head));
                LongText::HeadTail { head, tail }
            }
            LongTextKind::Chunk => LongText::Chunk {
                stride: self.stride.unwrap_or(max_length / 4),
                max_chunks: self.max_chunks.unwrap_or(8),
                select: self.select.unwrap_or_default(),
            },
        }))
    }
}

/// Indices of the windows kept out of `n`, at most `k` of them.
pub fn select_windows(n: usize, k: usize, how: ChunkSelect) -> Vec<usize> {
    let k = k.max(1);
    if n <= k {
        return (0..n).collect();
    }
    match how {
        ChunkSelect::First => (0..k).collect(),
        ChunkSelect::Spread if k == 1 => vec![0],
        ChunkSelect::Spread => (0..k)
            .map(|i| (i * (n - 1) + (k - 1) / 2) / (k - 1))
            .collect(),
    }
}

/// One encoded row (before padding: `attention_mask` is all ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids.
    pub input_ids: Vec<u32>,
    /// 1 for real tokens, 0 for padding (HF convention).
    pub attention_mask: Vec<u32>,
    /// Segment ids: 0 for the first text, 1 for the pair.
    pub token_type_ids: Vec<u32>,
}

impl From<&tokenizers::Encoding> for Encoded {
    fn from(e: &tokenizers::Encoding) -> Self {
        Self {
            input_ids: e.get_ids().to_vec(),
            attention_mask: e.get_attention_mask().to_vec(),
            token_type_ids: e.get_type_ids().to_vec(),
        }
    }
}

/// A padded batch, stored row-major as `[rows, seq_len]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Number of rows.
    pub rows: usize,
    /// Padded sequence length.
    pub seq_len: usize,
    /// Token ids, `rows * seq_len`.
    pub input_ids: Vec<u32>,
    /// HF attention mask (1 = real token), `rows * seq_len`.
    pub attention_mask: Vec<u32>,
    /// Token-type ids, `rows * seq_len`.
    pub token_type_ids: Vec<u32>,
}

#[derive(Deserialize, Default)]
struct TokenizerConfig {
    #[serde(default)]
    do_lower_case: Option<bool>,
    #[serde(default)]
    pad_token: Option<serde_json::Value>,
}

/// A Hugging Face tokenizer with sequin's truncation and padding rules.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    source: PathBuf,
    pad_id: u32,
    pad_token: String,
    pad_type_id: u32,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size())
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

impl Tokenizer {
    /// Loads the tokenizer of a model folder: `tokenizer.json` if present, else a WordPiece
    /// `vocab.txt` (with `do_lower_case` from `tokenizer_config.json`, default true).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let json = dir.join("tokenizer.json");
        let config = read_tokenizer_config(dir);
        if json.is_file() {
            return Self::from_file_with_config(&json, &config);
        }
        let vocab = dir.join("vocab.txt");
        if vocab.is_file() {
            return Self::from_wordpiece_vocab(&vocab, config.do_lower_case.unwrap_or(true));
        }
        Err(TokenizeError::NotFound {
            dir: dir.to_path_buf(),
        })
    }

    /// Loads a `tokenizer.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let config = path.parent().map(read_tokenizer_config).unwrap_or_default();
        Self::from_file_with_config(path, &config)
    }

    fn from_file_with_config(path: &Path, config: &TokenizerConfig) -> Result<Self> {
        let load_err = |message: String| TokenizeError::Load {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| load_err(e.to_string()))?;
        // The JSON is checked first: tokenizers 0.22 panics (an `expect` in its decoder and
        // normalizer deserializers) on some malformed files instead of returning an error.
        serde_json::from_str::<serde::de::IgnoredAny>(&text)
            .map_err(|e| load_err(format!("not valid JSON: {e}")))?;
        let parsed = std::panic::catch_unwind(|| text.parse::<tokenizers::Tokenizer>());
        let inner = match parsed {
            Ok(r) => r.map_err(|e| load_err(e.to_string()))?,
            Err(_) => {
                return Err(load_err(
                    "tokenizers could not read it (it panicked)".into(),
                ));
            }
        };
        let configured_pad = config.pad_token.as_ref().and_then(|v| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Object(o) => o
                .get("content")
                .and_then(|c| c.as_str())
                .map(str::to_string),
            _ => None,
        });
        Self::finish(inner, path.to_path_buf(), configured_pad)
    }

    /// Builds the standard BERT WordPiece pipeline from a `vocab.txt`, as `BertTokenizerFast` does.
    pub fn from_wordpiece_vocab(vocab: impl AsRef<Path>, lowercase: bool) -> Result<Self> {
        let vocab = vocab.as_ref();
        let load_err = |message: String| TokenizeError::Load {
            path: vocab.to_path_buf(),
            message,
        };
        let path_str = vocab
            .to_str()
            .ok_or_else(|| load_err("path is not valid UTF-8".into()))?;
        let model = WordPiece::from_file(path_str)
            .unk_token("[UNK]".into())
            .continuing_subword_prefix("##".into())
            .max_input_chars_per_word(100)
            .build()
            .map_err(|e| load_err(e.to_string()))?;
        let id = |tok: &str| {
            use tokenizers::Model;
            model
                .token_to_id(tok)
                .ok_or_else(|| load_err(format!("vocabulary has no `{tok}` token")))
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        let mut inner = tokenizers::Tokenizer::new(model);
        inner
            .with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
            .with_pre_tokenizer(Some(BertPreTokenizer))
            .with_post_processor(Some(BertProcessing::new(
                ("[SEP]".into(), sep),
                ("[CLS]".into(), cls),
            )))
            .with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()));
        // As BertTokenizerFast: the special tokens present in the vocabulary are matched whole
        // in raw text, before normalisation.
        let specials: Vec<tokenizers::AddedToken> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            .iter()
            .filter(|t| inner.token_to_id(t).is_some())
            .map(|t| tokenizers::AddedToken::from(*t, true))
            .collect();
        inner.add_special_tokens(&specials);
        Self::finish(inner, vocab.to_path_buf(), None)
    }

    fn finish(
        mut inner: tokenizers::Tokenizer,
        source: PathBuf,
        configured_pad: Option<String>,
    ) -> Result<Self> {
        const CANDIDATES: [&str; 3] = ["[PAD]", "<pad>", "<|padding|>"];
        let baked = inner.get_padding().cloned();
        let (pad_id, pad_token, pad_type_id) = if let Some(tok) =
            configured_pad.and_then(|t| inner.token_to_id(&t).map(|id| (id, t)))
        {
            (tok.0, tok.1, baked.as_ref().map_or(0, |p| p.pad_type_id))
        } else if let Some(p) = &baked {
            (p.pad_id, p.pad_token.clone(), p.pad_type_id)
        } else if let Some((tok, id)) = CANDIDATES
            .iter()
            .find_map(|t| inner.token_to_id(t).map(|id| (*t, id)))
        {
            (id, tok.to_string(), 0)
        } else {
            return Err(TokenizeError::NoPadToken {
                path: source,
                tried: CANDIDATES.to_vec(),
            });
        };
        // Whatever was baked in is dropped; every call sets its own.
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| TokenizeError::Encode(e.to_string()))?;
        probe(&inner, &source)?;
        Ok(Self {
            inner,
            source,
            pad_id,
            pad_token,
            pad_type_id,
        })
    }

    /// Where the tokenizer came from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Padding token id.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Id of a token, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Number of special tokens added around a single text (`pair == false`) or a pair.
    pub fn num_special_tokens(&self, pair: bool) -> usize {
        self.inner
            .get_post_processor()
            .map_or(0, |p| tokenizers::PostProcessor::added_tokens(p, pair))
    }

    fn configured(&self, opts: EncodeOptions, pad: bool) -> Result<tokenizers::Tokenizer> {
        if opts.max_length == 0 {
            return Err(TokenizeError::Options(
                "max_length must be at least 1".into(),
            ));
        }
        if opts.pad_to_multiple_of == Some(0) {
            return Err(TokenizeError::Options(
                "pad_to_multiple_of must be at least 1".into(),
            ));
        }
        let mut tok = self.inner.clone();
        tok.with_truncation(Some(TruncationParams {
            direction: TruncationDirection::Right,
            max_length: opts.max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        }))
        .map_err(|e| TokenizeError::Options(e.to_string()))?;
        tok.with_padding(pad.then(|| PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            direction: PaddingDirection::Right,
            pad_to_multiple_of: opts.pad_to_multiple_of,
            pad_id: self.pad_id,
            pad_type_id: self.pad_type_id,
            pad_token: self.pad_token.clone(),
        }));
        Ok(tok)
    }

    /// The number of tokens of a text (or text pair), special tokens included, before any
    /// truncation: what a server counts against its token budget and its length limit.
    pub fn token_count(&self, text: &str, pair: Option<&str>) -> Result<usize> {
        let enc = match no_empty(pair) {
            Some(p) => self.inner.encode((text, p), true),
            None => self.inner.encode(text, true),
        }
        .map_err(|e| TokenizeError::Encode(e.to_string()))?;
        Ok(enc.len())
    }

    /// Encodes one text (or text pair), truncated but not padded.
    pub fn encode(&self, text: &str, pair: Option<&str>, opts: EncodeOptions) -> Result<Encoded> {
        let tok = self.configured(opts, false)?;
        let enc = match no_empty(pair) {
            Some(p) => tok.encode((text, p), true),
            None => tok.encode(text, true),
        }
        .map_err(|e| TokenizeError::Encode(e.to_string()))?;
        Ok(Encoded::from(&enc))
    }

    /// Encodes one text (or pair) under a long-text policy: one row for `truncate` and
    /// `head-tail`, one row per window for `chunk` (at least one).
    pub fn encode_long(
        &self,
        text: &str,
        pair: Option<&str>,
        opts: EncodeOptions,
        policy: LongText,
    ) -> Result<Vec<Encoded>> {
        let pair = no_empty(pair);
        let to_row = Encoded::from;
        let enc_err = |e: tokenizers::Error| TokenizeError::Encode(e.to_string());
        match policy {
            LongText::Truncate => Ok(vec![self.encode(text, pair, opts)?]),
            LongText::HeadTail { head, tail } => {
                if pair.is_some() {
                    return Ok(vec![self.encode(text, pair, opts)?]);
                }
                let budget = opts
                    .max_length
                    .saturating_sub(self.num_special_tokens(false));
                if head + tail > budget {
                    return Err(TokenizeError::Options(format!(
                        "head {head} + tail {tail} tokens exceed the {budget} content tokens that max_length {} leaves",
                        opts.max_length
                    )));
                }
                let full = self.inner.encode(text, false).map_err(enc_err)?;
                let kept = if full.len() <= budget {
                    full
                } else {
                    let mut h = full.clone();
                    h.truncate(head, 0, TruncationDirection::Right);
                    h.get_overflowing_mut().clear();
                    let mut t = full;
                    t.truncate(tail, 0, TruncationDirection::Left);
                    t.get_overflowing_mut().clear();
                    tokenizers::Encoding::merge([h, t], false)
                };
                let e = self.inner.post_process(kept, None, true).map_err(enc_err)?;
                Ok(vec![to_row(&e)])
            }
            LongText::Chunk {
                stride,
                max_chunks,
                select,
            } => {
                let content = opts
                    .max_length
                    .saturating_sub(self.num_special_tokens(pair.is_some()));
                if stride >= content {
                    return Err(TokenizeError::Options(format!(
                        "chunk stride {stride} must be below the {content} content tokens per window"
                    )));
                }
                let mut tok = self.inner.clone();
                tok.with_truncation(Some(TruncationParams {
                    direction: TruncationDirection::Right,
                    max_length: opts.max_length,
                    strategy: if pair.is_some() {
                        TruncationStrategy::OnlyFirst
                    } else {
                        TruncationStrategy::LongestFirst
                    },
                    stride,
                }))
                .map_err(|e| TokenizeError::Options(e.to_string()))?;
                let mut e = match pair {
                    Some(p) => tok.encode((text, p), true),
                    None => tok.encode(text, true),
                }
                .map_err(enc_err)?;
                let rest = e.take_overflowing();
                let n = rest.len() + 1;
                Ok(select_windows(n, max_chunks, select)
                    .into_iter()
                    .map(|i| {
                        if i == 0 {
                            to_row(&e)
                        } else {
                            to_row(&rest[i - 1])
                        }
                    })
                    .collect())
            }
        }
    }

    /// Pads encoded rows to the longest (rounded up to `pad_to_multiple_of`).
    pub fn pad(&self, rows: &[&Encoded], pad_to_multiple_of: Option<usize>) -> Batch {
        let longest = rows.iter().map(|r| r.input_ids.len()).max().unwrap_or(0);
        let seq_len = match pad_to_multiple_of {
            Some(m) if m > 0 => longest.div_ceil(m) * m,
            _ => longest,
        };
        let n = rows.len() * seq_len;
        let mut b = Batch {
            rows: rows.len(),
            seq_len,
            input_ids: Vec::with_capacity(n),
            attention_mask: Vec::with_capacity(n),
            token_type_ids: Vec::with_capacity(n),
        };
        for r in rows {
            let pad = seq_len - r.input_ids.len();
            b.input_ids.extend_from_slice(&r.input_ids);
            b.input_ids.extend(std::iter::repeat_n(self.pad_id, pad));
            b.attention_mask.extend_from_slice(&r.attention_mask);
            b.attention_mask.extend(std::iter::repeat_n(0, pad));
            b.token_type_ids.extend_from_slice(&r.token_type_ids);
            b.token_type_ids
                .extend(std::iter::repeat_n(self.pad_type_id, pad));
        }
        b
    }

    /// Encodes a batch of texts with optional pairs, truncated and padded to the longest row
    /// (rounded up to `pad_to_multiple_of`). Rows with `None` as pair are encoded as single
    /// texts, as transformers does.
    pub fn encode_batch(
        &self,
        items: &[(&str, Option<&str>)],
        opts: EncodeOptions,
    ) -> Result<Batch> {
        let tok = self.configured(opts, true)?;
        let inputs: Vec<tokenizers::EncodeInput> = items
            .iter()
            .map(|(t, p)| match no_empty(*p) {
                Some(p) => (*t, p).into(),
                None => (*t).into(),
            })
            .collect();
        let encs = tok
            .encode_batch(inputs, true)
            .map_err(|e| TokenizeError::Encode(e.to_string()))?;
        let rows = encs.len();
        let seq_len = encs.first().map_or(0, |e| e.len());
        let mut batch = Batch {
            rows,
            seq_len,
            input_ids: Vec::with_capacity(rows * seq_len),
            attention_mask: Vec::with_capacity(rows * seq_len),
            token_type_ids: Vec::with_capacity(rows * seq_len),
        };
        for e in &encs {
            debug_assert_eq!(e.len(), seq_len);
            batch.input_ids.extend_from_slice(e.get_ids());
            batch
                .attention_mask
                .extend_from_slice(e.get_attention_mask());
            batch.token_type_ids.extend_from_slice(e.get_type_ids());
        }
        Ok(batch)
    }

    /// Writes `tokenizer.json` (with no baked truncation or padding) into `dir`, atomically.
    pub fn save_json(&self, dir: impl AsRef<Path>) -> Result<()> {
        let path = dir.as_ref().join("tokenizer.json");
        let json = self
            .inner
            .to_string(true)
            .map_err(|e| TokenizeError::Save {
                path: path.clone(),
                message: e.to_string(),
            })?;
        sequin_fs::write(&path, json.as_bytes()).map_err(|e| TokenizeError::Save {
            path,
            message: e.to_string(),
        })
    }

    /// The pad token string.
    pub fn pad_token(&self) -> &str {
        &self.pad_token
    }
}

/// Encodes a text and a pair once at load time: tokenizers 0.22 panics at encode time on a
/// post-processor template that names a special token the file does not define, and a
/// corrupt file must fail when it is read, with an error, not in the middle of a run.
fn probe(inner: &tokenizers::Tokenizer, source: &Path) -> Result<()> {
    let run = || {
        inner.encode("a probe", true)?;
        inner.encode(("a probe", "and its pair"), true)
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(TokenizeError::Load {
            path: source.to_path_buf(),
            message: format!("it cannot encode a text: {e}"),
        }),
        Err(_) => Err(TokenizeError::Load {
            path: source.to_path_buf(),
            message: "it cannot encode a text (tokenizers panicked: its post-processor or model is inconsistent)".into(),
        }),
    }
}

/// transformers encodes a pair whose second text is empty as a single text.
fn no_empty(pair: Option<&str>) -> Option<&str> {
    pair.filter(|p| !p.is_empty())
}

fn read_tokenizer_config(dir: &Path) -> TokenizerConfig {
    std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab_dir() -> tempfile_dir::Dir {
        let d = tempfile_dir::Dir::new();
        let words = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world", "##s", "the", "cat",
            "sat", "on", "mat", ",", ".",
        ];
        std::fs::write(d.path().join("vocab.txt"), words.join("\n")).unwrap();
        d
    }

    mod tempfile_dir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let p = std::env::temp_dir().join(format!(
                    "sequin-tok-{}-{:?}",
                    std::process::id(),
                    std::thread::current().id()
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn wordpiece_vocab_only_folder_pads_and_truncates() {
        let d = vocab_dir();
        let tok = Tokenizer::from_dir(d.path()).unwrap();
        assert_eq!(tok.pad_id(), 0);
        let opts = EncodeOptions {
            max_length: 6,
            pad_to_multiple_of: Some(4),
        };
        let b = tok
            .encode_batch(
                &[
                    ("Hello worlds", None),
                    ("the cat sat on the mat", Some("hello")),
                ],
                opts,
            )
            .unwrap();
        assert_eq!(b.rows, 2);
        assert_eq!(b.seq_len, 8, "6 rounded up to a multiple of 4");
        // [CLS] hello world ##s [SEP] + 3 pad
        assert_eq!(&b.input_ids[..8], &[2, 5, 6, 7, 3, 0, 0, 0]);
        assert_eq!(&b.attention_mask[..8], &[1, 1, 1, 1, 1, 0, 0, 0]);
        // longest-first: "the cat sat on the mat" loses tokens, the pair keeps "hello"
        assert_eq!(&b.input_ids[8..14], &[2, 8, 9, 3, 5, 3]);
        assert_eq!(&b.token_type_ids[8..16], &[0, 0, 0, 0, 1, 1, 0, 0]);
    }

    #[test]
    fn long_text_policies() {
        let d = vocab_dir();
        let tok = Tokenizer::from_dir(d.path()).unwrap();
        let opts = EncodeOptions {
            max_length: 6,
            pad_to_multiple_of: None,
        };
        let text = "the cat sat on the mat hello world";
        // [CLS] the cat sat on [SEP]
        let t = tok
            .encode_long(text, None, opts, LongText::Truncate)
            .unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].input_ids, [2, 8, 9, 10, 11, 3]);
        // head 2 + tail 2: [CLS] the cat hello world [SEP]
        let h = tok
            .encode_long(text, None, opts, LongText::HeadTail { head: 2, tail: 2 })
            .unwrap();
        assert_eq!(h[0].input_ids, [2, 8, 9, 5, 6, 3]);
        // windows of 4 content tokens overlapping by 1
        let windows = |max_chunks| {
            let policy = LongText::Chunk {
                stride: 1,
                max_chunks,
                select: ChunkSelect::First,
            };
            tok.encode_long(text, None, opts, policy).unwrap()
        };
        let c = windows(10);
        let ids: Vec<Vec<u32>> = c.iter().map(|e| e.input_ids.clone()).collect();
        assert_eq!(
            ids,
            vec![
                vec![2, 8, 9, 10, 11, 3],
                vec![2, 11, 8, 12, 5, 3],
                vec![2, 5, 6, 3]
            ]
        );
        let capped = windows(2);
        assert_eq!(capped.len(), 2);
        let refs: Vec<&Encoded> = c.iter().collect();
        let b = tok.pad(&refs, Some(4));
        assert_eq!((b.rows, b.seq_len), (3, 8));
        assert_eq!(&b.attention_mask[16..], &[1, 1, 1, 1, 0, 0, 0, 0]);
        assert!(
            tok.encode_long(text, None, opts, LongText::HeadTail { head: 3, tail: 3 })
                .is_err()
        );
    }

    #[test]
    fn missing_tokenizer_names_the_folder() {
        let err = Tokenizer::from_dir("/definitely/not/here").unwrap_err();
        assert!(err.to_string().contains("/definitely/not/here"), "{err}");
    }

    #[test]
    fn spread_windows_cover_the_text() {
        assert_eq!(select_windows(3, 8, ChunkSelect::Spread), vec![0, 1, 2]);
        assert_eq!(select_windows(10, 3, ChunkSelect::First), vec![0, 1, 2]);
        assert_eq!(select_windows(10, 3, ChunkSelect::Spread), vec![0, 5, 9]);
        assert_eq!(
            select_windows(100, 5, ChunkSelect::Spread),
            vec![0, 25, 50, 74, 99]
        );
        assert_eq!(select_windows(7, 1, ChunkSelect::Spread), vec![0]);
    }

    #[test]
    fn long_text_requests_get_the_documented_defaults() {
        let ask = |kind| LongTextRequest {
            kind: Some(kind),
            ..Default::default()
        };
        assert_eq!(
            ask(LongTextKind::HeadTail).resolve(130).unwrap(),
            Some(LongText::HeadTail { head: 32, tail: 96 })
        );
        assert_eq!(
            ask(LongTextKind::Chunk).resolve(128).unwrap(),
            Some(LongText::Chunk {
                stride: 32,
                max_chunks: 8,
                select: ChunkSelect::First
            })
        );
        assert_eq!(LongTextRequest::default().resolve(128).unwrap(), None);
        let sizes_alone = LongTextRequest {
            stride: Some(8),
            ..Default::default()
        };
        assert!(sizes_alone.resolve(128).is_err());
    }
}
