//! The key/value cache generation keeps per layer (shared by every family).

use candle_core::Tensor;

/// One block's cached keys and values, `[B, heads, S, head_dim]` each.
pub type LayerKv = Option<(Tensor, Tensor)>;

/// The key/value cache of a generation: one entry per block / decoder layer.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    /// Per block.
    pub layers: Vec<LayerKv>,
}

impl KvCache {
    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |(k, _)| k.dims()[2])
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
