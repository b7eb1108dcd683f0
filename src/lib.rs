//! sequin: fine-tune Hugging Face encoders into sequence classifiers, on burn.
//!
//! This facade re-exports the workspace crates; see `ARCHITECTURE.md` for the map.

pub use sequin_augment as augment;
pub use sequin_data as data;
pub use sequin_encoders as encoders;
pub use sequin_fs as fs;
pub use sequin_heads as heads;
pub use sequin_hf as hf;
pub use sequin_tokenize as tokenize;
pub use sequin_train as train;
