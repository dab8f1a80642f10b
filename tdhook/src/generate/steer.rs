//! Per-request steering inside one batch: each row its own vector (or none) and coefficient,
//! applied only to the tokens in scope, by absolute position.

use super::{CausalLm, GenerateHooks, PAD_POSITION, SteeringVector};
use crate::error::{Error, Result};
use crate::hookset::HookSet;
use crate::hx::Direction;
use crate::select::Selector;
use candle_core::{CpuStorage, DType, Storage, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tdhook_kernels::{Positions, Rows};

/// Which tokens steering touches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SteerScope {
    /// Prompt and generated tokens.
    #[default]
    All,
    /// Prompt tokens only (positions below the row's prompt length).
    Prompt,
    /// Generated tokens only.
    Generated,
}

/// Steering for a batch: `rows[b] = Some((vector index, coefficient))` or `None`.
///
/// ```
/// use tdhook::generate::{generate, BatchSteering, GenerateHooks, GenerateOptions, SteerScope, SteeringVector};
/// use tdhook::models::gpt2::{Gpt2, Gpt2Config};
/// use tdhook::prelude::*;
/// use candle_core::{DType, Device, Tensor};
/// # fn main() -> tdhook::Result<()> {
/// let vb = candle_nn::VarBuilder::from_varmap(&candle_nn::VarMap::new(), DType::F32, &Device::Cpu);
/// let model = Gpt2::new(Gpt2Config::new(50, 32, 32, 2, 4), vb)?;
/// let v = SteeringVector::new([("transformer.h.0", Tensor::ones(32, DType::F32, &Device::Cpu)?)])?;
///
/// let prompts = vec![vec![1, 2, 3], vec![4, 5]];
/// let steering = BatchSteering::new(vec![v], vec![Some((0, 8.0)), None], SteerScope::All);
/// let mut hooks = GenerateHooks::new(&model);
/// steering.install(&model, &mut hooks, &prompts)?;
/// let out = generate(&model, &prompts, &GenerateOptions { max_new_tokens: 4, ..Default::default() }, Some(&mut hooks))?;
/// assert_eq!(out.len(), 2);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct BatchSteering {
    vectors: Vec<SteeringVector>,
    rows: Vec<Option<(usize, f64)>>,
    scope: SteerScope,
}

impl BatchSteering {
    /// `rows[b]` picks a vector (index into `vectors`) and a coefficient for row `b`, or none.
    /// Each vector's own coefficient multiplies the row's.
    pub fn new(
        vectors: Vec<SteeringVector>,
        rows: Vec<Option<(usize, f64)>>,
        scope: SteerScope,
    ) -> Self {
        Self {
            vectors,
            rows,
            scope,
        }
    }

    /// One vector for every row of a batch of `n`.
    pub fn uniform(vector: SteeringVector, n: usize) -> Self {
        let scope = vector.spec.scope;
        Self::new(vec![vector], vec![Some((0, 1.0)); n], scope)
    }

    /// Check everything against the model and the prompts (before any compute that matters),
    /// then add the steering hooks to `hooks`.
    ///
    /// Errors: a row count that is not the batch size, a vector index out of range, a path the
    /// model lacks, a vector that is not `[D]` or whose width is not the point's, a non-finite
    /// coefficient.
    pub fn install<M: CausalLm + ?Sized>(
        &self,
        model: &M,
        hooks: &mut GenerateHooks<'_>,
        prompts: &[Vec<u32>],
    ) -> Result<()> {
        let b = prompts.len();
        if self.rows.len() != b {
            return Err(Error::Invalid(format!(
                "batch steering has {} row(s) but the batch has {b} prompt(s); give one entry (or None) per row",
                self.rows.len()
            )));
        }
        for (r, row) in self.rows.iter().enumerate() {
            if let Some((i, c)) = row {
                if *i >= self.vectors.len() {
                    return Err(Error::Invalid(format!(
                        "row {r} asks for vector {i}, but only {} vector(s) were given",
                        self.vectors.len()
                    )));
                }
                if !c.is_finite() {
                    return Err(Error::NotFinite {
                        what: "steering coefficient",
                        path: format!("row {r}"),
                        fix: "use a finite coefficient",
                    });
                }
            }
        }
        let mut paths: Vec<String> = self
            .vectors
            .iter()
            .flat_map(|v| v.paths())
            .map(String::from)
            .collect();
        paths.sort();
        paths.dedup();
        let widths = point_widths(model, hooks, &paths)?;
        let device = model.device();
        let prompt_lens: Vec<u32> = prompts.iter().map(|p| p.len() as u32).collect();
        for path in paths {
            let width = widths[&path];
            // One table row per batch row that steers at this path: its vector times its
            // coefficients; rows without a vector here are skipped by the kernel.
            let mut table = Vec::new();
            let mut row_of = Vec::with_capacity(b);
            for row in &self.rows {
                let entry = match row {
                    Some((i, c)) => match self.vectors[*i].get(&path) {
                        Some(v) => {
                            if v.dims() != [width] {
                                return Err(Error::ShapeMismatch {
                                    what: "steering vector",
                                    path: path.clone(),
                                    expected: vec![width],
                                    got: v.dims().to_vec(),
                                });
                            }
                            let scaled = (v.to_dtype(DType::F32)?
                                * (c * self.vectors[*i].spec.coefficient))?;
                            table.push(scaled.to_device(&device)?);
                            Some((table.len() - 1, 1.0f32))
                        }
                        None => None,
                    },
                    None => None,
                };
                row_of.push(entry);
            }
            if table.is_empty() {
                continue;
            }
            let table = Tensor::stack(&table, 0)?; // [V, D], f32
            let rows = Rows::per_row(row_of);
            let scope = self.scope;
            let prompt_lens = prompt_lens.clone();
            let token_positions = hooks.positions();
            hooks.add(Selector::exact(path.clone()), Direction::Fwd, move |ev, out| {
                let dims = out.dims();
                if dims.len() != 3 || dims[0] != prompt_lens.len() {
                    return Err(Error::Invalid(format!(
                        "batch steering at `{}` expects [batch, tokens, width] with batch {}, got {dims:?}",
                        ev.path,
                        prompt_lens.len()
                    )));
                }
                let step = token_positions.get();
                let Some(positions) = scope_positions(step.as_ref(), &prompt_lens, dims[1], scope)?
                else {
                    return Ok(None);
                };
                // The fused kernel: one pass writing a new tensor (the hooked output may be
                // shared, e.g. with a cache, so it is never modified in place).
                let steered = tdhook_kernels::steer_add(out, &table, 1.0, &positions, &rows)
                    .map_err(crate::util::kernel_error(ev.path))?;
                Ok(Some(steered))
            })?;
        }
        Ok(())
    }
}

/// The `[B, T]` tokens in `scope` as kernel positions: `None` when no token is (nothing to do),
/// [`Positions::All`] when every one is (decode steps, unpadded prompts). `positions` holds each
/// token's absolute position (pads: [`PAD_POSITION`]); without it, tokens are at `0..t`.
fn scope_positions(
    positions: Option<&Tensor>,
    prompt_lens: &[u32],
    t: usize,
    scope: SteerScope,
) -> Result<Option<Positions>> {
    // Runs at every decode step: the positions are read in place where they can be (a CPU
    // u32 tensor: no copy), and a mask is built only when some tokens are in scope and some
    // are not.
    let owned: Vec<u32>;
    let guard;
    let positions: &[u32] = match positions {
        Some(p) => {
            guard = p.storage_and_layout();
            match (&*guard.0, guard.1.contiguous_offsets()) {
                (Storage::Cpu(CpuStorage::U32(v)), Some((a, b))) => &v[a..b],
                _ => {
                    owned = p.flatten_all()?.to_vec1::<u32>()?;
                    &owned
                }
            }
        }
        None => {
            owned = (0..prompt_lens.len()).flat_map(|_| 0..t as u32).collect();
            &owned
        }
    };
    if positions.len() != prompt_lens.len() * t {
        return Err(Error::Invalid(format!(
            "batch steering got {} token positions for a [{}, {t}] output; the hook's positions \
             must be [batch, tokens] like the output (generate() passes them so)",
            positions.len(),
            prompt_lens.len()
        )));
    }
    let in_scope = |i: usize, p: u32| {
        let len = prompt_lens[i / t.max(1)];
        p != PAD_POSITION
            && match scope {
                SteerScope::All => true,
                SteerScope::Prompt => p < len,
                SteerScope::Generated => p >= len,
            }
    };
    let on = positions
        .iter()
        .enumerate()
        .filter(|&(i, &p)| in_scope(i, p))
        .count();
    Ok(if on == 0 {
        None
    } else if on == positions.len() {
        Some(Positions::All)
    } else {
        Some(Positions::Mask(
            positions
                .iter()
                .enumerate()
                .map(|(i, &p)| in_scope(i, p))
                .collect(),
        ))
    })
}

/// The last-dim width of each path's output, from a one-token forward (no hooks of the caller's
/// run). Errors name a path the model lacks before anything else runs.
pub(crate) fn point_widths<M: CausalLm + ?Sized>(
    model: &M,
    hooks: &HookSet<'_>,
    paths: &[String],
) -> Result<HashMap<String, usize>> {
    let mut points = Vec::new();
    for p in paths {
        points.extend(hooks.resolve(Selector::exact(p.clone()))?);
    }
    let mut widths = HashMap::new();
    {
        let mut probe = HookSet::new(model);
        let w = &mut widths;
        probe.add_at(points, Direction::Fwd, "width probe", move |ev, t| {
            w.insert(ev.path.to_string(), t.dims().last().copied().unwrap_or(0));
            Ok(None)
        })?;
        let dev = model.device();
        let ids = Tensor::zeros((1, 1), DType::U32, &dev)?;
        let pos = Tensor::zeros((1, 1), DType::U32, &dev)?;
        let mask = Tensor::zeros((1, 1, 1, 1), DType::F32, &dev)?;
        let mut cache = model.new_cache();
        probe.run(|hx| model.forward_step(&ids, &pos, &mask, &mut cache, hx))?;
    }
    for p in paths {
        if !widths.contains_key(p) {
            return Err(Error::Invalid(format!(
                "`{p}` is a hook point of the model, but a forward never calls it, so steering it would do nothing"
            )));
        }
    }
    Ok(widths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The mask by hand: row 0 is left-padded (one pad, prompt of 2), row 1 is not (prompt 3).
    #[test]
    fn scope_positions_follow_pads_and_prompt_lengths() -> Result<()> {
        let pos = Tensor::new(&[[PAD_POSITION, 0, 1], [0, 1, 2]], &Device::Cpu)?;
        let lens = [2u32, 3];
        let mask =
            |scope| -> Result<Option<Positions>> { scope_positions(Some(&pos), &lens, 3, scope) };
        let all = mask(SteerScope::All)?;
        assert_eq!(
            all,
            Some(Positions::Mask(vec![false, true, true, true, true, true]))
        );
        assert_eq!(mask(SteerScope::Generated)?, None);
        // a strided view (not read in place) gives the same mask
        let wide = Tensor::new(&[[9, PAD_POSITION, 0, 1], [9, 0, 1, 2]], &Device::Cpu)?;
        let view = wide.narrow(1, 1, 3)?;
        assert!(!view.is_contiguous());
        assert_eq!(
            scope_positions(Some(&view), &lens, 3, SteerScope::All)?,
            all
        );
        // a decode step: positions 2 (row 0's first generated token) and 3
        let step = Tensor::new(&[[2u32], [3]], &Device::Cpu)?;
        let generated = scope_positions(Some(&step), &lens, 1, SteerScope::Generated)?;
        assert_eq!(generated, Some(Positions::All));
        assert_eq!(
            scope_positions(Some(&step), &lens, 1, SteerScope::Prompt)?,
            None
        );
        // no positions: tokens at 0..t, row 0's prompt ends at 2
        assert_eq!(
            scope_positions(None, &lens, 3, SteerScope::Prompt)?,
            Some(Positions::Mask(vec![true, true, false, true, true, true]))
        );
        // positions that do not fit the output: an error naming both, not a panic
        let err = scope_positions(Some(&step), &lens, 3, SteerScope::All).unwrap_err();
        assert!(err.to_string().contains("[2, 3]"), "{err}");
        Ok(())
    }
}
