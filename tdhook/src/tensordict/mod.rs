//! `TensorDict`: a nested, insertion-ordered dictionary of candle tensors
//! sharing leading batch dimensions, after Python's
//! [tensordict](https://github.com/pytorch/tensordict). tdhook is "td in, td
//! out": model inputs, outputs and hook caches all travel in a `TensorDict`.
//!
//! * Entries are tensors or sub-dicts ([`Entry`]), addressed by [`Key`]s: a
//!   `&str` for a top-level entry, a tuple/array for a nested one. A segment
//!   may contain dots, so a hook path like `transformer.h.0.mlp` is one
//!   segment: `("cache", "transformer.h.0.mlp")`.
//! * Every tensor's leading dims must equal the batch size of the dict that
//!   holds it. A sub-dict's batch size must start with its parent's.
//! * **Deliberate difference from tensordict:** a sub-dict may also have an
//!   *empty* batch size (an *unbatched* sub-dict, [`TensorDict::unbatched`])
//!   under a batched parent. It then holds values of any shape; tdhook uses
//!   this for caches whose values do not have the batch dims first (e.g.
//!   rotary tables of shape `[1, T, d]`).
//! * Inserting at a nested key creates the missing intermediate sub-dicts with
//!   their parent's batch size.
//! * [`TensorDict::save`] / [`TensorDict::load`] use a single safetensors file
//!   (see [`TensorDict::to_bytes`] for the layout).
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use tdhook::tensordict::{Key, TensorDict};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dev = Device::Cpu;
//! let mut td = TensorDict::new(vec![2]);
//! td.insert("input_ids", Tensor::zeros((2, 5), DType::U32, &dev)?)?;
//! // Nested insert: creates the `cache` sub-dict with batch size [2].
//! td.insert(("cache", "transformer.h.0.mlp"), Tensor::ones((2, 5, 8), DType::F32, &dev)?)?;
//!
//! assert_eq!(td.tensor(("cache", "transformer.h.0.mlp"))?.dims(), &[2, 5, 8]);
//! assert_eq!(td.get_dict("cache").unwrap().batch_size(), &[2]);
//! let keys: Vec<String> = td.keys(true).iter().map(Key::to_string).collect();
//! assert_eq!(keys, ["input_ids", "cache/transformer.h.0.mlp"]);
//!
//! // Leading dims must match the batch size.
//! let err = td.insert("bad", Tensor::zeros((3, 5), DType::F32, &dev)?).unwrap_err();
//! assert!(err.to_string().contains("batch size is [2]"));
//!
//! // Unbatched sub-dicts hold values of any shape.
//! td.insert_dict("rotary", TensorDict::unbatched())?;
//! td.insert(("rotary", "cos"), Tensor::zeros((1, 5, 4), DType::F32, &dev)?)?;
//!
//! // Round trip through safetensors bytes.
//! let back = TensorDict::from_bytes(&td.to_bytes()?, &dev)?;
//! assert!(back.allclose(&td, 0.0, 0.0)?);
//! # Ok(())
//! # }
//! ```

mod error;
mod io;
mod key;

use std::fmt;

use candle_core::{DType, Device, Tensor};
use indexmap::IndexMap;

pub use error::TensorDictError;
pub use io::{BATCH_SIZES_METADATA_KEY, KEYS_METADATA_KEY};
pub use key::Key;

type Result<T> = std::result::Result<T, TensorDictError>;

/// One value of a [`TensorDict`]: a tensor (a leaf) or a nested sub-dict.
#[derive(Clone, Debug)]
pub enum Entry {
    /// A leaf tensor.
    Tensor(Tensor),
    /// A nested sub-dict.
    Dict(TensorDict),
}

impl Entry {
    /// The tensor, if this is a leaf.
    pub fn as_tensor(&self) -> Option<&Tensor> {
        match self {
            Entry::Tensor(t) => Some(t),
            Entry::Dict(_) => None,
        }
    }

    /// The sub-dict, if this is one.
    pub fn as_dict(&self) -> Option<&TensorDict> {
        match self {
            Entry::Dict(d) => Some(d),
            Entry::Tensor(_) => None,
        }
    }

    /// Consumes the entry, returning the tensor if this is a leaf.
    pub fn into_tensor(self) -> Option<Tensor> {
        match self {
            Entry::Tensor(t) => Some(t),
            Entry::Dict(_) => None,
        }
    }

    /// Consumes the entry, returning the sub-dict if this is one.
    pub fn into_dict(self) -> Option<TensorDict> {
        match self {
            Entry::Dict(d) => Some(d),
            Entry::Tensor(_) => None,
        }
    }

    /// Whether this is a leaf tensor.
    pub fn is_tensor(&self) -> bool {
        matches!(self, Entry::Tensor(_))
    }

    /// Whether this is a sub-dict.
    pub fn is_dict(&self) -> bool {
        matches!(self, Entry::Dict(_))
    }
}

/// Why a lookup failed, without building an error (lookups like `get` are
/// cheap on a miss).
enum Miss {
    /// Segment `depth` is absent from its dict.
    Absent { depth: usize },
    /// Segment `depth` is a tensor but the key continues past it.
    ThroughTensor { depth: usize },
}

/// A nested, insertion-ordered dictionary of tensors whose leading dims equal
/// the dict's batch size. See the [module docs](self) for the rules.
///
/// Cloning is cheap: candle tensors are reference-counted.
#[derive(Clone, Debug, Default)]
pub struct TensorDict {
    batch_size: Vec<usize>,
    entries: IndexMap<String, Entry>,
}

impl TensorDict {
    /// An empty dict with the given batch size: every tensor inserted
    /// directly into it must have `batch_size` as its leading dims.
    pub fn new(batch_size: impl Into<Vec<usize>>) -> Self {
        TensorDict {
            batch_size: batch_size.into(),
            entries: IndexMap::new(),
        }
    }

    /// An empty dict with batch size `[]`: it accepts tensors of any shape.
    /// As a sub-dict of a batched dict it is an *unbatched* sub-dict (a
    /// deliberate difference from tensordict, see the [module docs](self)).
    pub fn unbatched() -> Self {
        Self::new(Vec::new())
    }

    /// The batch size: the leading dims shared by the tensors of this dict.
    pub fn batch_size(&self) -> &[usize] {
        &self.batch_size
    }

    /// Number of batch dims (`batch_size().len()`).
    pub fn batch_dims(&self) -> usize {
        self.batch_size.len()
    }

    /// Number of top-level entries (tensors and sub-dicts).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no top-level entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The top-level entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    fn checked_key(key: impl Into<Key>) -> Result<Key> {
        let key = key.into();
        key.validate()?;
        Ok(key)
    }

    fn lookup(&self, segs: &[String]) -> std::result::Result<&Entry, Miss> {
        let mut dict = self;
        for (depth, seg) in segs.iter().enumerate() {
            match dict.entries.get(seg) {
                None => return Err(Miss::Absent { depth }),
                Some(entry) if depth + 1 == segs.len() => return Ok(entry),
                Some(Entry::Dict(d)) => dict = d,
                Some(Entry::Tensor(_)) => return Err(Miss::ThroughTensor { depth }),
            }
        }
        // Only reachable with an empty key, which callers have rejected.
        Err(Miss::Absent { depth: 0 })
    }

    /// The sub-dict at `segs` (the root for an empty slice), if every segment
    /// names a sub-dict.
    fn dict_at(&self, segs: &[String]) -> Option<&TensorDict> {
        let mut dict = self;
        for seg in segs {
            match dict.entries.get(seg)? {
                Entry::Dict(d) => dict = d,
                Entry::Tensor(_) => return None,
            }
        }
        Some(dict)
    }

    fn dict_at_mut(&mut self, segs: &[String]) -> Option<&mut TensorDict> {
        let mut dict = self;
        for seg in segs {
            match dict.entries.get_mut(seg)? {
                Entry::Dict(d) => dict = d,
                Entry::Tensor(_) => return None,
            }
        }
        Some(dict)
    }

    fn miss_error(&self, key: &Key, miss: Miss) -> TensorDictError {
        let segs = key.segments();
        match miss {
            Miss::Absent { depth } => {
                let prefix = &segs[..depth];
                let available = match self.dict_at(prefix) {
                    Some(d) => {
                        let mut out = Vec::new();
                        d.collect_keys(&mut prefix.to_vec(), true, &mut out);
                        out.iter().map(Key::to_string).collect()
                    }
                    None => Vec::new(),
                };
                TensorDictError::KeyNotFound {
                    key: key.to_string(),
                    available,
                }
            }
            Miss::ThroughTensor { depth } => TensorDictError::NotADict {
                key: Key::from_segments_unchecked(segs[..=depth].to_vec()).to_string(),
            },
        }
    }

    fn resolve(&self, key: &Key) -> Result<&Entry> {
        self.lookup(key.segments())
            .map_err(|miss| self.miss_error(key, miss))
    }

    /// The batch size that a dict at `segs` has, or would get if created by a
    /// nested insert, after checking that no tensor lies on the path.
    /// Also returns the existing dict at `segs`, if any.
    fn batch_for_path(&self, segs: &[String]) -> Result<(&[usize], Option<&TensorDict>)> {
        let mut batch: &[usize] = &self.batch_size;
        let mut dict = Some(self);
        for (i, seg) in segs.iter().enumerate() {
            match dict.and_then(|d| d.entries.get(seg)) {
                Some(Entry::Dict(d)) => {
                    batch = &d.batch_size;
                    dict = Some(d);
                }
                Some(Entry::Tensor(_)) => {
                    return Err(TensorDictError::NotADict {
                        key: Key::from_segments_unchecked(segs[..=i].to_vec()).to_string(),
                    });
                }
                None => dict = None,
            }
        }
        Ok((batch, dict))
    }

    /// The dict at `segs`, creating missing sub-dicts with their parent's
    /// batch size. Callers check the path with `batch_for_path` first.
    fn ensure_dict(&mut self, segs: &[String]) -> Result<&mut TensorDict> {
        let mut dict = self;
        for (i, seg) in segs.iter().enumerate() {
            let batch = dict.batch_size.clone();
            let entry = dict
                .entries
                .entry(seg.clone())
                .or_insert_with(|| Entry::Dict(TensorDict::new(batch)));
            dict = match entry {
                Entry::Dict(d) => d,
                Entry::Tensor(_) => {
                    return Err(TensorDictError::NotADict {
                        key: Key::from_segments_unchecked(segs[..=i].to_vec()).to_string(),
                    });
                }
            };
        }
        Ok(dict)
    }

    /// Inserts `tensor` at `key`, creating missing intermediate sub-dicts
    /// with their parent's batch size. Replacing an existing tensor keeps its
    /// position and returns it.
    ///
    /// # Errors
    /// * [`TensorDictError::InvalidKey`] for a malformed key;
    /// * [`TensorDictError::BatchMismatch`] if the tensor's leading dims are
    ///   not the batch size of the (sub-)dict that would hold it;
    /// * [`TensorDictError::NotADict`] if a tensor lies on the key's path;
    /// * [`TensorDictError::NotATensor`] if a sub-dict is stored at `key`.
    ///
    /// On error the dict is unchanged.
    pub fn insert(&mut self, key: impl Into<Key>, tensor: Tensor) -> Result<Option<Tensor>> {
        let key = Self::checked_key(key)?;
        let (last, parent) = key.segments().split_last().expect("validated key");
        let (batch, dict) = self.batch_for_path(parent)?;
        if !tensor.dims().starts_with(batch) {
            return Err(TensorDictError::BatchMismatch {
                key: key.to_string(),
                shape: tensor.dims().to_vec(),
                batch_size: batch.to_vec(),
            });
        }
        if let Some(Entry::Dict(_)) = dict.and_then(|d| d.entries.get(last)) {
            return Err(TensorDictError::NotATensor {
                key: key.to_string(),
            });
        }
        let dict = self.ensure_dict(parent)?;
        Ok(dict
            .entries
            .insert(last.clone(), Entry::Tensor(tensor))
            .and_then(Entry::into_tensor))
    }

    /// Inserts the sub-dict `td` at `key`, creating missing intermediate
    /// sub-dicts with their parent's batch size. Replacing an existing
    /// sub-dict keeps its position and returns it.
    ///
    /// `td`'s batch size must start with the batch size of the dict that will
    /// hold it, or be empty (an unbatched sub-dict).
    ///
    /// # Errors
    /// [`TensorDictError::InvalidKey`], [`TensorDictError::SubDictBatch`],
    /// or [`TensorDictError::NotADict`] if a tensor lies on the key's path or
    /// is stored at `key`. On error the dict is unchanged.
    pub fn insert_dict(
        &mut self,
        key: impl Into<Key>,
        td: TensorDict,
    ) -> Result<Option<TensorDict>> {
        let key = Self::checked_key(key)?;
        let (last, parent) = key.segments().split_last().expect("validated key");
        let (batch, dict) = self.batch_for_path(parent)?;
        if !td.batch_size.is_empty() && !td.batch_size.starts_with(batch) {
            return Err(TensorDictError::SubDictBatch {
                key: key.to_string(),
                batch_size: td.batch_size.clone(),
                parent_batch_size: batch.to_vec(),
            });
        }
        if let Some(Entry::Tensor(_)) = dict.and_then(|d| d.entries.get(last)) {
            return Err(TensorDictError::NotADict {
                key: key.to_string(),
            });
        }
        let dict = self.ensure_dict(parent)?;
        Ok(dict
            .entries
            .insert(last.clone(), Entry::Dict(td))
            .and_then(Entry::into_dict))
    }

    /// The tensor at `key`, or `None` if it is absent, is a sub-dict, or the
    /// key is invalid. See [`tensor`](Self::tensor) for a descriptive error.
    pub fn get(&self, key: impl Into<Key>) -> Option<&Tensor> {
        self.entry(key)?.as_tensor()
    }

    /// The tensor at `key`.
    ///
    /// # Errors
    /// [`TensorDictError::KeyNotFound`] (listing the keys that do exist under
    /// the deepest existing sub-dict on the path),
    /// [`TensorDictError::NotATensor`], [`TensorDictError::NotADict`] or
    /// [`TensorDictError::InvalidKey`].
    pub fn tensor(&self, key: impl Into<Key>) -> Result<&Tensor> {
        let key = Self::checked_key(key)?;
        match self.resolve(&key)? {
            Entry::Tensor(t) => Ok(t),
            Entry::Dict(_) => Err(TensorDictError::NotATensor {
                key: key.to_string(),
            }),
        }
    }

    /// The sub-dict at `key`, or `None` if it is absent, is a tensor, or the
    /// key is invalid.
    pub fn get_dict(&self, key: impl Into<Key>) -> Option<&TensorDict> {
        self.entry(key)?.as_dict()
    }

    /// The sub-dict at `key`, mutably (its batch size cannot be changed, so
    /// the batch rules keep holding).
    pub fn get_dict_mut(&mut self, key: impl Into<Key>) -> Option<&mut TensorDict> {
        let key = key.into();
        if !key.is_valid() {
            return None;
        }
        self.dict_at_mut(key.segments())
    }

    /// The entry (tensor or sub-dict) at `key`, or `None` if it is absent or
    /// the key is invalid.
    pub fn entry(&self, key: impl Into<Key>) -> Option<&Entry> {
        let key = key.into();
        if !key.is_valid() {
            return None;
        }
        self.lookup(key.segments()).ok()
    }

    /// Whether an entry (tensor or sub-dict) exists at `key`.
    pub fn contains(&self, key: impl Into<Key>) -> bool {
        self.entry(key).is_some()
    }

    /// Removes and returns the entry at `key`, keeping the order of the
    /// others. Intermediate sub-dicts are kept even if they become empty.
    pub fn remove(&mut self, key: impl Into<Key>) -> Option<Entry> {
        let key = key.into();
        if !key.is_valid() {
            return None;
        }
        let (last, parent) = key.segments().split_last()?;
        self.dict_at_mut(parent)?.entries.shift_remove(last)
    }

    /// A new dict holding only the entries at `keys`, with the same batch
    /// size. Nested keys keep their nesting, and intermediate sub-dicts keep
    /// their batch size; selecting a sub-dict's key selects all of it.
    /// Entries appear in the order of `keys`.
    ///
    /// # Errors
    /// [`TensorDictError::KeyNotFound`] (or another lookup error) for a key
    /// that is absent.
    pub fn select<K: Into<Key>>(&self, keys: impl IntoIterator<Item = K>) -> Result<TensorDict> {
        let mut out = TensorDict::new(self.batch_size.clone());
        for key in keys {
            let key = Self::checked_key(key)?;
            let entry = self.resolve(&key)?.clone();
            let (last, parent) = key.segments().split_last().expect("validated key");
            let mut src = self;
            let mut dst = &mut out;
            for seg in parent {
                src = match src.entries.get(seg) {
                    Some(Entry::Dict(d)) => d,
                    _ => unreachable!("resolve checked the path"),
                };
                let batch = src.batch_size.clone();
                let slot = dst
                    .entries
                    .entry(seg.clone())
                    .or_insert_with(|| Entry::Dict(TensorDict::new(batch)));
                dst = match slot {
                    Entry::Dict(d) => d,
                    Entry::Tensor(_) => unreachable!("mirrors the source's sub-dicts"),
                };
            }
            dst.entries.insert(last.clone(), entry);
        }
        Ok(out)
    }

    /// A copy of the dict without the entries at `keys` (absent or invalid
    /// keys are ignored).
    pub fn exclude<K: Into<Key>>(&self, keys: impl IntoIterator<Item = K>) -> TensorDict {
        let mut out = self.clone();
        for key in keys {
            out.remove(key);
        }
        out
    }

    fn collect_keys(&self, prefix: &mut Vec<String>, leaves_only: bool, out: &mut Vec<Key>) {
        for (name, entry) in &self.entries {
            prefix.push(name.clone());
            match entry {
                Entry::Tensor(_) => out.push(Key::from_segments_unchecked(prefix.clone())),
                Entry::Dict(d) => {
                    if !leaves_only {
                        out.push(Key::from_segments_unchecked(prefix.clone()));
                    }
                    d.collect_keys(prefix, leaves_only, out);
                }
            }
            prefix.pop();
        }
    }

    /// All keys, nested, depth-first in insertion order. With
    /// `leaves_only == false` a sub-dict's key precedes its children's.
    pub fn keys(&self, leaves_only: bool) -> Vec<Key> {
        let mut out = Vec::new();
        self.collect_keys(&mut Vec::new(), leaves_only, &mut out);
        out
    }

    fn collect_leaves<'a>(&'a self, prefix: &mut Vec<String>, out: &mut Vec<(Key, &'a Tensor)>) {
        for (name, entry) in &self.entries {
            prefix.push(name.clone());
            match entry {
                Entry::Tensor(t) => out.push((Key::from_segments_unchecked(prefix.clone()), t)),
                Entry::Dict(d) => d.collect_leaves(prefix, out),
            }
            prefix.pop();
        }
    }

    /// Every leaf tensor with its full key, depth-first in insertion order.
    pub fn leaves(&self) -> impl Iterator<Item = (Key, &Tensor)> {
        let mut out = Vec::new();
        self.collect_leaves(&mut Vec::new(), &mut out);
        out.into_iter()
    }

    /// Every sub-dict (including the root, with an empty segment list) with
    /// its batch size, depth-first in insertion order.
    fn collect_dicts<'a>(
        &'a self,
        prefix: &mut Vec<String>,
        out: &mut Vec<(Vec<String>, &'a TensorDict)>,
    ) {
        out.push((prefix.clone(), self));
        for (name, entry) in &self.entries {
            if let Entry::Dict(d) = entry {
                prefix.push(name.clone());
                d.collect_dicts(prefix, out);
                prefix.pop();
            }
        }
    }

    /// A dict of the same structure and batch sizes with `f` applied to every
    /// leaf tensor.
    ///
    /// # Errors
    /// [`TensorDictError::Candle`] if `f` fails (the message names the key),
    /// [`TensorDictError::BatchMismatch`] if a result no longer has its
    /// dict's batch size as leading dims.
    pub fn apply<F>(&self, mut f: F) -> Result<TensorDict>
    where
        F: FnMut(&Tensor) -> candle_core::Result<Tensor>,
    {
        self.apply_inner(&mut f, &mut Vec::new())
    }

    fn apply_inner<F>(&self, f: &mut F, prefix: &mut Vec<String>) -> Result<TensorDict>
    where
        F: FnMut(&Tensor) -> candle_core::Result<Tensor>,
    {
        let mut out = TensorDict {
            batch_size: self.batch_size.clone(),
            entries: IndexMap::with_capacity(self.entries.len()),
        };
        for (name, entry) in &self.entries {
            prefix.push(name.clone());
            let new = match entry {
                Entry::Tensor(t) => {
                    let key = || Key::from_segments_unchecked(prefix.clone()).to_string();
                    let new =
                        f(t).map_err(|e| e.context(format!("while applying to `{}`", key())))?;
                    if !new.dims().starts_with(&self.batch_size) {
                        return Err(TensorDictError::BatchMismatch {
                            key: key(),
                            shape: new.dims().to_vec(),
                            batch_size: self.batch_size.clone(),
                        });
                    }
                    Entry::Tensor(new)
                }
                Entry::Dict(d) => Entry::Dict(d.apply_inner(f, prefix)?),
            };
            prefix.pop();
            out.entries.insert(name.clone(), new);
        }
        Ok(out)
    }

    /// A copy with every tensor moved to `device`.
    ///
    /// # Errors
    /// [`TensorDictError::Candle`] if a transfer fails.
    pub fn to_device(&self, device: &Device) -> Result<TensorDict> {
        self.apply(|t| t.to_device(device))
    }

    /// Merges `other` into `self`: each tensor of `other` is inserted at its
    /// key (replacing what is there); a sub-dict of `other` absent from
    /// `self` is inserted whole (keeping its batch size, so empty and
    /// unbatched sub-dicts carry over); one present in both is merged
    /// recursively.
    ///
    /// # Errors
    /// Those of [`insert`](Self::insert) and
    /// [`insert_dict`](Self::insert_dict). On error `self` is unchanged.
    pub fn update(&mut self, other: &TensorDict) -> Result<()> {
        let mut merged = self.clone();
        merged.update_inner(other, &mut Vec::new())?;
        *self = merged;
        Ok(())
    }

    fn update_inner(&mut self, other: &TensorDict, prefix: &mut Vec<String>) -> Result<()> {
        for (name, entry) in &other.entries {
            prefix.push(name.clone());
            let key = Key::from_segments_unchecked(prefix.clone());
            match entry {
                Entry::Tensor(t) => {
                    self.insert(&key, t.clone())?;
                }
                Entry::Dict(d) => match self.entry(&key) {
                    Some(Entry::Dict(_)) => self.update_inner(d, prefix)?,
                    _ => {
                        self.insert_dict(&key, d.clone())?;
                    }
                },
            }
            prefix.pop();
        }
        Ok(())
    }

    /// Whether `self` and `other` hold the same content: the same keys
    /// (in any order, sub-dicts included), the same batch sizes, the same
    /// shapes, and values with `|a - b| <= atol + rtol * |b|` (`b` from
    /// `other`; equal infinities match, NaNs never do). Dtypes and devices
    /// may differ: values are compared as `f64` on the CPU.
    ///
    /// # Errors
    /// [`TensorDictError::Candle`] if a tensor cannot be read back.
    pub fn allclose(&self, other: &TensorDict, rtol: f64, atol: f64) -> Result<bool> {
        let mut mine = Vec::new();
        self.collect_dicts(&mut Vec::new(), &mut mine);
        let mut theirs = Vec::new();
        other.collect_dicts(&mut Vec::new(), &mut theirs);
        if mine.len() != theirs.len() {
            return Ok(false);
        }
        for (path, d) in &mine {
            match other.dict_at(path) {
                Some(o) if o.batch_size == d.batch_size => {}
                _ => return Ok(false),
            }
        }
        let leaves: Vec<(Key, &Tensor)> = self.leaves().collect();
        if leaves.len() != other.leaves().count() {
            return Ok(false);
        }
        for (key, a) in leaves {
            let Some(b) = other.get(&key) else {
                return Ok(false);
            };
            if a.dims() != b.dims() {
                return Ok(false);
            }
            let a = a.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            let b = b.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            let close = a
                .iter()
                .zip(&b)
                .all(|(x, y)| x == y || (x - y).abs() <= atol + rtol * y.abs());
            if !close {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn fmt_tree(&self, f: &mut fmt::Formatter<'_>, indent: usize) -> fmt::Result {
        for (name, entry) in &self.entries {
            match entry {
                Entry::Tensor(t) => writeln!(
                    f,
                    "{:indent$}{name}: {:?} {:?} {:?}",
                    "",
                    t.dims(),
                    t.dtype(),
                    t.device().location()
                )?,
                Entry::Dict(d) => {
                    writeln!(
                        f,
                        "{:indent$}{name}: TensorDict(batch_size={:?})",
                        "", d.batch_size
                    )?;
                    d.fmt_tree(f, indent + 2)?;
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for TensorDict {
    /// A tree of keys with shapes, dtypes and devices, one entry a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "TensorDict(batch_size={:?})", self.batch_size)?;
        self.fmt_tree(f, 2)
    }
}

#[cfg(test)]
mod tests;
