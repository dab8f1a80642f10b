//! Generation with a key/value cache, where hooks fire at prefill and at every decode step and
//! know each token's absolute position ([`TokenPositions`], from [`GenerateHooks::positions`]).
//!
//! Prompts of different lengths are left-padded; positions come from the attention mask (pads
//! excluded), not from tensor indices, so a steering hook sees position 5 for the sixth real
//! token of every row, at prefill and during decoding alike.
//!
//! ```
//! use tdhook::generate::{generate, GenerateOptions, Sampling};
//! use tdhook::models::gpt2::{Gpt2, Gpt2Config};
//! use candle_core::{DType, Device};
//! # fn main() -> tdhook::Result<()> {
//! let vb = candle_nn::VarBuilder::from_varmap(&candle_nn::VarMap::new(), DType::F32, &Device::Cpu);
//! let model = Gpt2::new(Gpt2Config::new(50, 32, 32, 2, 4), vb)?;
//! let opts = GenerateOptions { max_new_tokens: 5, ..Default::default() };
//! let out = generate(&model, &[vec![1, 2, 3], vec![4]], &opts, None)?;
//! assert_eq!(out.len(), 2);
//! assert!(out.iter().all(|row| row.len() == 5));
//! # Ok(()) }
//! ```

mod hooks;
mod sampling;
mod steer;
mod vector;

pub use hooks::{GenerateHooks, TokenPositions};
pub use sampling::Sampling;
pub use steer::{BatchSteering, SteerScope};
pub use vector::{SteeringSpec, SteeringVector};

pub use crate::model::CausalLm;

use crate::error::{Error, Result};
use crate::hx::Hx;
use candle_core::{Device, Tensor};
use sampling::{Rng, pick};

/// Position value [`TokenPositions`] gives padding tokens.
pub const PAD_POSITION: u32 = u32::MAX;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// New tokens per row at most.
    pub max_new_tokens: usize,
    /// How tokens are chosen.
    pub sampling: Sampling,
    /// A row stops after producing one of these (it is included in the output).
    pub stop_tokens: Vec<u32>,
    /// The id fed for left padding and for rows that have stopped.
    pub pad_token: u32,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 16,
            sampling: Sampling::Greedy,
            stop_tokens: vec![],
            pad_token: 0,
        }
    }
}

/// The per-step inputs of a left-padded batch.
struct Batch {
    /// Per row: 1 for a real token, 0 for padding, over every token so far.
    attention: Vec<Vec<u8>>,
}

impl Batch {
    /// Positions for the model (pads get 1, as HF's generate does) and for hooks (pads get
    /// [`PAD_POSITION`]) for the last `t` tokens, and the additive mask `[B, 1, t, S]`.
    fn step_inputs(&self, t: usize, device: &Device) -> Result<(Tensor, Tensor, Tensor)> {
        let b = self.attention.len();
        let s = self.attention[0].len();
        let mut model_pos = Vec::with_capacity(b * t);
        let mut hook_pos = Vec::with_capacity(b * t);
        let mut mask = Vec::with_capacity(b * t * s);
        for row in &self.attention {
            let mut count = 0u32;
            let mut pos_of = Vec::with_capacity(s);
            for &a in row {
                pos_of.push(if a == 1 { count } else { PAD_POSITION });
                count += a as u32;
            }
            for (q, &p) in pos_of.iter().enumerate().skip(s - t) {
                model_pos.push(if p == PAD_POSITION { 1 } else { p });
                hook_pos.push(p);
                for (k, &a) in row.iter().enumerate() {
                    let allowed = k <= q && a == 1;
                    // A finite floor: a padding query row, allowed nothing, softmaxes uniformly
                    // instead of into NaN.
                    mask.push(if allowed { 0f32 } else { -1e30 });
                }
            }
        }
        Ok((
            Tensor::from_vec(model_pos, (b, t), device)?,
            Tensor::from_vec(hook_pos, (b, t), device)?,
            Tensor::from_vec(mask, (b, 1, t, s), device)?,
        ))
    }
}

/// Generate up to `max_new_tokens` for each prompt, with `hooks` (if given) firing at prefill and
/// at every decode step. Returns the new tokens of each row (stop token included).
pub fn generate<M: CausalLm + ?Sized>(
    model: &M,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    mut hooks: Option<&mut GenerateHooks<'_>>,
) -> Result<Vec<Vec<u32>>> {
    opts.sampling.validate()?;
    if prompts.is_empty() {
        return Ok(vec![]);
    }
    if let Some((i, _)) = prompts.iter().enumerate().find(|(_, p)| p.is_empty()) {
        return Err(Error::Invalid(format!(
            "prompt {i} is empty; every row needs at least one token"
        )));
    }
    let vocab = model.vocab_size();
    if let Some(&bad) = prompts.iter().flatten().find(|&&t| t as usize >= vocab) {
        return Err(Error::Invalid(format!(
            "token id {bad} is out of the vocabulary (size {vocab})"
        )));
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if longest + opts.max_new_tokens > model.max_positions() {
        return Err(Error::Invalid(format!(
            "prompt length {longest} + max_new_tokens {} exceeds the model's {} positions",
            opts.max_new_tokens,
            model.max_positions()
        )));
    }
    let device = model.device();
    let b = prompts.len();
    let mut batch = Batch {
        attention: prompts
            .iter()
            .map(|p| {
                let mut a = vec![0u8; longest - p.len()];
                a.extend(std::iter::repeat_n(1u8, p.len()));
                a
            })
            .collect(),
    };
    let mut ids: Vec<u32> = prompts
        .iter()
        .flat_map(|p| {
            std::iter::repeat_n(opts.pad_token, longest - p.len()).chain(p.iter().copied())
        })
        .collect();
    let mut t = longest;
    let mut cache = model.new_cache();
    let seed = match opts.sampling {
        Sampling::Sample { seed, .. } => seed,
        Sampling::Greedy => 0,
    };
    let mut rngs: Vec<Rng> = (0..b).map(|r| Rng::new(seed, r as u64)).collect();
    let mut out: Vec<Vec<u32>> = vec![vec![]; b];
    let mut done = vec![false; b];
    for _ in 0..opts.max_new_tokens {
        let (model_pos, hook_pos, mask) = batch.step_inputs(t, &device)?;
        let input = Tensor::from_vec(ids.clone(), (b, t), &device)?;
        let logits = match hooks.as_deref_mut() {
            Some(h) => {
                h.positions.set(Some(hook_pos));
                let r = h.run(|hx| model.forward_step(&input, &model_pos, &mask, &mut cache, hx));
                h.positions.set(None);
                r?
            }
            None => model.forward_step(&input, &model_pos, &mask, &mut cache, &mut Hx::none())?,
        };
        let last = logits.narrow(1, t - 1, 1)?.squeeze(1)?;
        let last = last.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        let mut next = Vec::with_capacity(b);
        for r in 0..b {
            if done[r] {
                next.push(opts.pad_token);
                continue;
            }
            let tok = pick(&last[r], &opts.sampling, &mut rngs[r]);
            out[r].push(tok);
            if opts.stop_tokens.contains(&tok) {
                done[r] = true;
            }
            next.push(tok);
        }
        if done.iter().all(|&d| d) {
            break;
        }
        for (r, row) in batch.attention.iter_mut().enumerate() {
            // A stopped row keeps running on padding that nothing attends to.
            row.push(u8::from(!done[r]));
        }
        ids = next;
        t = 1;
    }
    Ok(out)
}
