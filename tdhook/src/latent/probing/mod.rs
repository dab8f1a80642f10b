//! Probing (placeholder until the probing module lands).

/// Feed activations to probes while the model runs.
pub struct Probing;
