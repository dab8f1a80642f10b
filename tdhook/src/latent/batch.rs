//! Running a model on a dict's input with any number of batch dims.

use super::{HookedModel, INPUT};
use crate::HookSet;
use crate::error::{Error, Result};
use crate::tensordict::{Key, TensorDict};
use candle_core::Tensor;

/// The input tensor at `key` and the batch dims of the dict that holds it.
pub(crate) fn input_at<'a>(td: &'a TensorDict, key: &Key) -> Result<(&'a Tensor, Vec<usize>)> {
    let tensor = td.tensor(key.clone())?;
    let batch = match key.parent() {
        Some(parent) => td
            .get_dict(parent)
            .map(|d| d.batch_size().to_vec())
            .unwrap_or_else(|| td.batch_size().to_vec()),
        None => td.batch_size().to_vec(),
    };
    Ok((tensor, batch))
}

/// The key of the input inside sub-dict `prefix` (`(prefix, "input")`), or `input`.
pub(crate) fn input_key(prefix: Option<&Key>) -> Key {
    match prefix {
        Some(p) => p.join(INPUT),
        None => Key::from(INPUT),
    }
}

/// Merge `batch` leading dims into one (a no-op for exactly one).
pub(crate) fn flatten(t: &Tensor, batch: &[usize]) -> Result<Tensor> {
    if batch.len() == 1 {
        return Ok(t.clone());
    }
    let n: usize = batch.iter().product();
    let rest = &t.dims()[batch.len()..];
    let mut dims = vec![n];
    dims.extend_from_slice(rest);
    Ok(t.reshape(dims)?)
}

/// Undo [`flatten`] on a tensor whose leading dim is the flattened batch; others stay as they are.
pub(crate) fn unflatten(t: &Tensor, batch: &[usize]) -> Result<Tensor> {
    let n: usize = batch.iter().product();
    if batch.len() == 1 || t.dims().first() != Some(&n) {
        return Ok(t.clone());
    }
    let mut dims = batch.to_vec();
    dims.extend_from_slice(&t.dims()[1..]);
    Ok(t.reshape(dims)?)
}

/// Run `model` on `input` (batch dims `batch`) with `hooks`; the output has the batch dims back.
pub(crate) fn run_model<M: HookedModel + ?Sized>(
    model: &M,
    hooks: &mut HookSet<'_>,
    input: &Tensor,
    batch: &[usize],
) -> Result<Tensor> {
    if batch.is_empty() {
        return Err(Error::Invalid(
            "the input dict has no batch dims; make it with TensorDict::new([batch]) so its \
             leading dim(s) say which rows are samples"
                .into(),
        ));
    }
    let x = flatten(input, batch)?;
    let y = hooks.run(|hx| model.forward_hooked(&x, hx))?;
    unflatten(&y, batch)
}

/// Every cached value whose leading dim is the flattened batch gets the batch dims back.
pub(crate) fn unflatten_dict(td: &TensorDict, batch: &[usize]) -> Result<TensorDict> {
    if batch.len() == 1 {
        return Ok(td.clone());
    }
    let mut out = TensorDict::new(td.batch_size().to_vec());
    for (key, t) in td.leaves() {
        out.insert(key, unflatten(t, batch)?)?;
    }
    Ok(out)
}
