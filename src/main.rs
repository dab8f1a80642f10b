//! The main job. Until the tour lands, it caches a pattern on the reference GPT-2 (the oracle's
//! tiny random GPT-2, committed under `tests/oracle/gpt2_tiny`) and prints what it got.

use anyhow::Result;
use candle_core::{D, Device, Tensor};
use tdhook::models::gpt2::Gpt2;
use tdhook::prelude::*;

fn main() -> Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/gpt2_tiny");
    let model = Gpt2::load(&dir, &Device::Cpu)?;
    println!(
        "reference GPT-2 from {}: {} hook points",
        dir.display(),
        model.hook_points().len()
    );

    let ids = Tensor::new(&[[3u32, 14, 15, 92, 65, 35, 89]], &Device::Cpu)?;
    let pattern = r"transformer\.h\.\d+(\.attn\.hook_pattern)?";
    let mut cache = TensorDict::unbatched();
    let mut hooks = HookSet::new(&model);
    hooks.read(pattern, Direction::Fwd, |ev, t| {
        cache.insert(ev.path, t.clone())?;
        Ok(())
    })?;
    let logits = hooks.run(|hx| model.forward(&ids, hx))?;
    drop(hooks);

    println!("cached `{pattern}`:");
    for (key, t) in cache.leaves() {
        let mean = t.flatten_all()?.mean(0)?.to_scalar::<f32>()?;
        println!("  {:<40} {:?}  mean {mean:+.4}", key.to_string(), t.dims());
    }
    let next = logits.get(0)?.get(6)?.argmax(D::Minus1)?.to_scalar::<u32>()?;
    println!("logits {:?}; next-token argmax after the prompt: {next}", logits.dims());
    Ok(())
}
