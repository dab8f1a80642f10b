//! Reference models whose hook paths are the HF names and whose outputs equal transformers'.

pub mod gpt2;
pub mod kv;
pub mod llama;
mod load;
mod safetensors_file;

pub use load::read_weights;
pub use safetensors_file::load_safetensors;
