#!/usr/bin/env python3
"""Oracle: write tiny GPT-2 fixtures that the Rust tests compare against.

Run from the repository root:

    .venv-oracle/bin/python tests/oracle/gen_gpt2.py

Writes tests/oracle/gpt2_tiny/{config.json, model.safetensors, expected.safetensors,
named_modules.json}. Deterministic: CPU, float32, seed 0.
"""

import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

OUT_DIR = os.path.join("tests", "oracle", "gpt2_tiny")
BATCH, SEQ = 2, 7


def build_model() -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=101,
        n_positions=32,
        n_embd=64,
        n_layer=2,
        n_head=4,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        # defaults are 50256, outside the tiny vocab (transformers warns); irrelevant to the forward
        bos_token_id=100,
        eos_token_id=100,
    )
    config._attn_implementation = "eager"
    model = GPT2LMHeadModel(config)
    model.config._attn_implementation = "eager"
    model = model.to(torch.float32).eval()

    with torch.no_grad():
        for _, m in model.named_modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(1.0 + 0.1 * torch.randn_like(m.weight))
                m.bias.copy_(0.1 * torch.randn_like(m.bias))
            elif isinstance(m, Conv1D):
                m.weight.copy_(0.2 * torch.randn_like(m.weight))
                m.bias.copy_(0.1 * torch.randn_like(m.bias))
            elif isinstance(m, torch.nn.Embedding):
                m.weight.copy_(0.2 * torch.randn_like(m.weight))
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(), "lm_head not tied"
    return model


def first_tensor(out):
    if isinstance(out, (tuple, list)):
        out = out[0] if len(out) > 0 else None
    elif hasattr(out, "to_tuple") and not isinstance(out, torch.Tensor):  # ModelOutput
        out = out[0]
    return out if isinstance(out, torch.Tensor) else None


def main() -> int:
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)

    model = build_model()
    os.makedirs(OUT_DIR, exist_ok=True)
    model.save_pretrained(OUT_DIR, safe_serialization=True)
    # Only config.json + model.safetensors are needed by the Rust side.
    gen_cfg = os.path.join(OUT_DIR, "generation_config.json")
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)

    gen = torch.Generator().manual_seed(1234)
    input_ids = torch.randint(0, 101, (BATCH, SEQ), generator=gen, dtype=torch.int64)

    # ---- forward 1: hooks on every named module (no grad) ----
    names = [(n, type(m).__name__) for n, m in model.named_modules()]
    captured = {}
    non_tensor = []
    handles = []
    for name, mod in model.named_modules():
        if name == "":
            continue

        def hook(_m, _inp, out, name=name):
            t = first_tensor(out)
            if t is None:
                non_tensor.append((name, type(out).__name__))
                return
            captured[name] = t.detach().clone()

        handles.append(mod.register_forward_hook(hook))

    with torch.no_grad():
        out = model(input_ids=input_ids, output_attentions=True, use_cache=False)
    for h in handles:
        h.remove()
    logits = out.logits.detach().clone()
    attentions = out.attentions
    assert attentions is not None and len(attentions) == model.config.n_layer

    # ---- forward 2: gradients of logsumexp(logits).sum() w.r.t. block / ln_f outputs ----
    grad_points = [f"transformer.h.{i}" for i in range(model.config.n_layer)] + ["transformer.ln_f"]
    live = {}
    handles = []
    modules = dict(model.named_modules())
    for name in grad_points:

        def ghook(_m, _inp, out, name=name):
            live[name] = first_tensor(out)

        handles.append(modules[name].register_forward_hook(ghook))
    with torch.enable_grad():
        out2 = model(input_ids=input_ids, use_cache=False)
        loss = torch.logsumexp(out2.logits, dim=-1).sum()
        grads = torch.autograd.grad(loss, [live[n] for n in grad_points])
    for h in handles:
        h.remove()
    assert torch.equal(out2.logits.detach(), logits), "second forward differs from first"

    tensors = {
        "input_ids": input_ids.contiguous(),
        "logits": logits.contiguous(),
        "grad_loss": loss.detach().reshape(()).to(torch.float32).contiguous(),
    }
    for name, t in captured.items():
        tensors[f"module/{name}"] = t.to(torch.float32).contiguous()
    for i, a in enumerate(attentions):
        tensors[f"attn_probs/{i}"] = a.detach().to(torch.float32).contiguous()
    for name, g in zip(grad_points, grads):
        tensors[f"grad/{name}"] = g.detach().to(torch.float32).contiguous()

    exp_path = os.path.join(OUT_DIR, "expected.safetensors")
    save_file(tensors, exp_path, metadata={"generator": "tests/oracle/gen_gpt2.py"})
    with open(os.path.join(OUT_DIR, "named_modules.json"), "w") as f:
        json.dump(names, f, indent=1)
        f.write("\n")

    # ---- self-checks ----
    back = load_file(exp_path)
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert torch.equal(back[k], v), k
    reloaded = GPT2LMHeadModel.from_pretrained(OUT_DIR, attn_implementation="eager").eval()
    with torch.no_grad():
        re_logits = reloaded(input_ids=input_ids, use_cache=False).logits
    assert torch.equal(re_logits, logits), (re_logits - logits).abs().max()

    # ---- summary ----
    n_mod = sum(k.startswith("module/") for k in tensors)
    print(f"expected.safetensors: {len(tensors)} keys ({n_mod} module/, "
          f"{len(attentions)} attn_probs/, {len(grad_points)} grad/)")
    print(f"named_modules: {len(names)} entries (incl. root)")
    if non_tensor:
        print("modules with non-tensor output (skipped):", non_tensor)
    print(f"grad_loss = {loss.item():.6f}")
    total = 0
    for fn in sorted(os.listdir(OUT_DIR)):
        sz = os.path.getsize(os.path.join(OUT_DIR, fn))
        total += sz
        print(f"  {fn}: {sz} bytes")
    print(f"  total: {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
