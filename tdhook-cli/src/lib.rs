//! The tour of tdhook and its building blocks.
//!
//! * [`toy`] — a seeded toy language whose truths are known (sentiment reviews, indirect-object
//!   sentences) and its word tokenizer;
//! * [`tiny`] — the tiny GPT-2 trained on it (`examples/train_tiny.rs`), embedded in the binary,
//!   and loading a GPT-2 folder with its `tokenizer.json`;
//! * [`eval`] — how well a model speaks the toy language;
//! * [`tour`] — the five latent methods on the tiny model, with pictures;
//! * [`report`] — the SVG charts and the HTML page the tour writes.

pub mod eval;
pub mod report;
pub mod tiny;
pub mod tour;
pub mod toy;
