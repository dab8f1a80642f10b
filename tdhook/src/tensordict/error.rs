//! The error type of [`TensorDict`](super::TensorDict) operations.

use std::path::PathBuf;

/// How many available keys a [`TensorDictError::KeyNotFound`] message lists.
const SHOWN_KEYS: usize = 10;

/// Errors from [`TensorDict`](super::TensorDict) and [`Key`](super::Key)
/// operations. Keys are reported in their `/`-joined display form.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TensorDictError {
    /// No entry at `key`. `available` holds the leaf keys under the deepest
    /// existing sub-dict on the key's path.
    #[error("key `{key}` not found; {}", format_available(available))]
    KeyNotFound {
        /// The key that was looked up.
        key: String,
        /// Leaf keys that do exist near `key`.
        available: Vec<String>,
    },

    /// A tensor's leading dims do not equal the batch size of the dict it is
    /// inserted into.
    #[error(
        "tensor at `{key}` has shape {shape:?} but the dict's batch size is {batch_size:?}; \
         its leading dims must equal the batch size (put tensors whose leading dims are not \
         batch dims in an unbatched sub-dict, `TensorDict::unbatched()`)"
    )]
    BatchMismatch {
        /// Where the tensor was to be inserted.
        key: String,
        /// The tensor's shape.
        shape: Vec<usize>,
        /// The batch size of the dict that would hold it.
        batch_size: Vec<usize>,
    },

    /// A tensor was expected at `key` but the entry is a sub-dict.
    #[error(
        "entry at `{key}` is a sub-dict, not a tensor; address one of its leaves or use \
         `get_dict` (to replace the sub-dict with a tensor, `remove` it first)"
    )]
    NotATensor {
        /// The key of the sub-dict.
        key: String,
    },

    /// A sub-dict was expected at `key` (it is on the path of a nested key, or
    /// a sub-dict was to be stored there) but the entry is a tensor.
    #[error(
        "entry at `{key}` is a tensor, not a sub-dict, so nothing can be nested under it \
         (to replace the tensor with a sub-dict, `remove` it first)"
    )]
    NotADict {
        /// The key of the tensor.
        key: String,
    },

    /// The key is malformed.
    #[error("invalid key {key}: {reason}")]
    InvalidKey {
        /// The key's segments, debug-formatted.
        key: String,
        /// What is wrong with it and how to fix it.
        reason: String,
    },

    /// A sub-dict's batch size is neither empty nor prefixed by its parent's
    /// batch size.
    #[error(
        "sub-dict at `{key}` has batch size {batch_size:?} but its parent's batch size is \
         {parent_batch_size:?}; a sub-dict's batch size must start with its parent's \
         (or be empty for an unbatched sub-dict)"
    )]
    SubDictBatch {
        /// Where the sub-dict was to be inserted.
        key: String,
        /// The sub-dict's batch size.
        batch_size: Vec<usize>,
        /// The batch size of the dict that would hold it.
        parent_batch_size: Vec<usize>,
    },

    /// A tensor's dtype cannot be stored in or read from a safetensors file.
    #[error(
        "tensor at `{key}` has dtype {dtype}, which TensorDict files do not support \
         (supported: u8, u32, i16, i32, i64, f16, bf16, f32, f64); convert it with `to_dtype` first"
    )]
    UnsupportedDtype {
        /// The tensor's key.
        key: String,
        /// The dtype, debug-formatted.
        dtype: String,
    },

    /// An I/O error without an associated path.
    #[error(transparent)]
    Io(#[from] std::io::Error),

    /// An I/O error while reading or writing `path`.
    #[error("cannot access {}: {source}", path.display())]
    File {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A malformed safetensors file or `tdhook` metadata.
    #[error("safetensors: {0}")]
    Safetensors(String),

    /// A candle error (device transfer, dtype conversion, a closure passed to
    /// `apply`, ...).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn format_available(available: &[String]) -> String {
    if available.is_empty() {
        return "there are no keys there".to_string();
    }
    let shown: Vec<String> = available
        .iter()
        .take(SHOWN_KEYS)
        .map(|k| format!("`{k}`"))
        .collect();
    let mut s = format!("available keys: {}", shown.join(", "));
    if available.len() > SHOWN_KEYS {
        s.push_str(&format!(" (and {} more)", available.len() - SHOWN_KEYS));
    }
    s
}
