#!/usr/bin/env python3
"""Oracle: tiny Llama fixtures (transformers + Python tdhook 0.3.0) that the Rust tests compare against.

Run from the repository root:

    .venv-oracle/bin/python tests/oracle/gen_llama.py

Writes

* ``tests/oracle/llama_tiny/``: ``config.json``, ``model.safetensors`` (``save_pretrained``),
  ``expected.safetensors`` (inputs, logits, every module output, attention probabilities,
  gradients at the decoder layers), ``named_modules.json``, and one
  ``tdhook_<case>.safetensors`` per Python-tdhook call, described in ``tdhook_cases.json``;
* ``tests/oracle/llama_tiny_sharded/``: the same weights saved in two shards with
  ``model.safetensors.index.json``.

Deterministic: CPU, float32, fixed seeds, ``torch.use_deterministic_algorithms(True)``.
The tdhook conventions (``in/`` / ``out/`` / ``aux/`` keys, ``/`` joining nested keys, the
case entries) follow ``tests/oracle/gen_tdhook.py``.
"""

import inspect
import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file
from tensordict import TensorDict, TensorDictBase
from transformers import LlamaConfig, LlamaForCausalLM

import tdhook
from tdhook.latent import ActivationAddition, ActivationCaching, ActivationPatching, SteeringVectors

OUT_DIR = os.path.join("tests", "oracle", "llama_tiny")
SHARDED_DIR = os.path.join("tests", "oracle", "llama_tiny_sharded")
BATCH, SEQ, VOCAB, HIDDEN = 2, 7, 101, 64


def build_model() -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        attention_dropout=0.0,
        # defaults (1, 2) are inside the vocab; irrelevant to the forward
        bos_token_id=1,
        eos_token_id=2,
        attn_implementation="eager",
    )
    # transformers 5 keeps rope settings in `rope_parameters` (`rope_scaling` is its alias):
    # plain RoPE, no scaling.
    assert config.rope_parameters == {"rope_theta": 10000.0, "rope_type": "default"}, config.rope_parameters
    assert getattr(config, "rope_scaling", None) in (None, config.rope_parameters)
    assert config.head_dim == 16
    model = LlamaForCausalLM(config)
    model.config._attn_implementation = "eager"
    model = model.to(torch.float32).eval()

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif "embed_tokens" in name:
                p.copy_(0.5 * torch.randn_like(p))
            else:  # q/k/v/o, gate/up/down, lm_head
                p.copy_(0.15 * torch.randn_like(p))
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr(), "lm_head tied"
    return model


def first_tensor(out):
    if isinstance(out, (tuple, list)):
        out = out[0] if len(out) > 0 else None
    elif hasattr(out, "to_tuple") and not isinstance(out, torch.Tensor):  # ModelOutput
        out = out[0]
    return out if isinstance(out, torch.Tensor) else None


# --------------------------------------------------------------------------------------
# transformers fixtures
# --------------------------------------------------------------------------------------


def transformers_fixtures(model, input_ids):
    names = [(n, type(m).__name__) for n, m in model.named_modules()]
    captured, non_tensor, called = {}, [], set()
    handles = []
    for name, mod in model.named_modules():
        if name == "":
            continue

        def hook(_m, _inp, out, name=name):
            called.add(name)
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
    assert attentions is not None and len(attentions) == model.config.num_hidden_layers
    never_called = [n for n, _ in names if n and n not in called]

    # gradients of logsumexp(logits).sum() w.r.t. each decoder layer's output and the final norm
    grad_points = [f"model.layers.{i}" for i in range(model.config.num_hidden_layers)] + ["model.norm"]
    live, handles = {}, []
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
        **rope_fixtures(),
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
    save_file(tensors, exp_path, metadata={"generator": "tests/oracle/gen_llama.py"})
    with open(os.path.join(OUT_DIR, "named_modules.json"), "w") as f:
        json.dump(names, f, indent=1)
        f.write("\n")
    back = load_file(exp_path)
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert torch.equal(back[k], v), k

    n_mod = sum(k.startswith("module/") for k in tensors)
    print(f"expected.safetensors: {len(tensors)} keys ({n_mod} module/, {len(attentions)} attn_probs/, "
          f"{len(grad_points)} grad/)")
    print(f"named_modules: {len(names)} entries (incl. root)")
    print("modules never called:", never_called)
    print("modules with non-tensor output (skipped):", non_tensor)
    print(f"grad_loss = {loss.item():.6f}")
    return logits


# Rope settings as real checkpoints write them (pre-transformers-5 keys `rope_theta` + `rope_scaling`):
# Llama 3.1's llama3 scaling, and linear scaling.
ROPE_CONFIGS = {
    "llama3": {"rope_theta": 500000.0, "max_position_embeddings": 131072,
               "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 8192, "rope_type": "llama3"}},
    "linear": {"rope_theta": 10000.0, "max_position_embeddings": 64,
               "rope_scaling": {"factor": 2.0, "type": "linear"}},
}
ROPE_SHAPE = {"vocab_size": VOCAB, "hidden_size": 256, "intermediate_size": 128, "num_hidden_layers": 1,
              "num_attention_heads": 4, "num_key_value_heads": 2}
ROPE_POSITIONS = [0, 1, 5, 100, 3000, 9000]


def rope_fixtures():
    """inv_freq and cos/sin of LlamaRotaryEmbedding for scaled-rope configs (head_dim 64)."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    tensors, configs = {}, {}
    for name, extra in ROPE_CONFIGS.items():
        cfg_dict = {"model_type": "llama", **ROPE_SHAPE, **extra}
        config = LlamaConfig.from_dict(json.loads(json.dumps(cfg_dict)))  # a copy: transformers edits it
        rot = LlamaRotaryEmbedding(config)
        assert rot.rope_type == name and rot.attention_scaling == 1.0, (rot.rope_type, rot.attention_scaling)
        pos = torch.tensor([ROPE_POSITIONS])
        cos, sin = rot(torch.zeros(1, dtype=torch.float32), pos)
        tensors[f"rope/{name}/inv_freq"] = rot.inv_freq.detach().clone().contiguous()
        tensors[f"rope/{name}/positions"] = pos.contiguous()
        tensors[f"rope/{name}/cos"] = cos.contiguous()
        tensors[f"rope/{name}/sin"] = sin.contiguous()
        configs[name] = cfg_dict
    with open(os.path.join(OUT_DIR, "rope_configs.json"), "w") as f:
        json.dump(configs, f, indent=1)
        f.write("\n")
    return tensors


# --------------------------------------------------------------------------------------
# Python tdhook cases (conventions of gen_tdhook.py)
# --------------------------------------------------------------------------------------

CASES = []
DESCRIPTIONS = {}


def key_str(key):
    return "/".join(key) if isinstance(key, tuple) else key


def jsonable(value):
    if callable(value) and not isinstance(value, type):
        return {"callable": getattr(value, "__name__", repr(value)), "description": DESCRIPTIONS.get(value)}
    if isinstance(value, tuple):
        return {"nested_key": list(value)} if value and all(isinstance(v, str) for v in value) else list(value)
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def effective_args(cls, kwargs):
    bound = inspect.signature(cls.__init__).bind(None, **kwargs)
    bound.apply_defaults()
    args = dict(bound.arguments)
    args.pop("self", None)
    return {k: jsonable(v) for k, v in args.items()}


def structure(td):
    out = {}
    for key, value in td.items(include_nested=True, leaves_only=False):
        if isinstance(value, TensorDictBase):
            out[key_str(key)] = f"TensorDict(batch_size={list(value.batch_size)})"
        elif isinstance(value, torch.Tensor):
            out[key_str(key)] = f"{str(value.dtype).replace('torch.', '')}{list(value.shape)}"
        else:
            out[key_str(key)] = f"non-tensor {type(value).__name__}: {value!r}"
    return out


def flat(td, prefix):
    return {
        prefix + key_str(k): v.detach().clone().contiguous()
        for k, v in td.items(include_nested=True, leaves_only=True)
        if isinstance(v, torch.Tensor)
    }


def hooks_of(ctx):
    prog = ctx.program
    if prog is None:
        return []
    return [
        {"module_path": s.module_path, "operation": s.operation, "direction": s.direction}
        | ({"prepend": True} if s.prepend else {})
        for s in prog.hooks
    ]


def run_case(case, *, cls, kwargs, model, td, prep, td_description, aux=None, notes=None):
    """cls(**kwargs).prepare(model, **prep) as hm: out = hm(td), under torch.no_grad()."""
    entry = {
        "model": "llama_tiny",
        "case": case,
        "method": cls.__name__,
        "args": jsonable(kwargs),
        "effective_args": effective_args(cls, kwargs),
        "prepare": jsonable(prep),
        "input_td": td_description,
        "input_td_structure_before": structure(td),
        "grad_enabled": False,
        "relative_root": "module",
    }
    tensors = flat(td, "in/")
    for k, v in (aux or {}).items():
        tensors["aux/" + k] = v.detach().clone().contiguous()
    ctx = cls(**kwargs).prepare(model, **prep)
    with torch.no_grad(), ctx as hm:
        entry["hooked"] = hooks_of(ctx)
        out = hm(td)
    entry["output_td_structure"] = structure(out)
    tensors.update(flat(out, "out/"))
    if notes:
        entry["notes"] = notes
    path = os.path.join(OUT_DIR, f"tdhook_{case}.safetensors")
    tensors = {k: v for k, v in sorted(tensors.items())}
    save_file(tensors, path, metadata={"generator": f"tests/oracle/gen_llama.py (tdhook {tdhook.__version__})"})
    back = load_file(path)
    assert set(back) == set(tensors) and all(torch.equal(back[k], v) for k, v in tensors.items())
    entry["file"] = os.path.basename(path)
    entry["keys"] = {k: f"{str(v.dtype).replace('torch.', '')}{list(v.shape)}" for k, v in tensors.items()}
    CASES.append(entry)
    print(f"  tdhook_{case}: {sorted(entry['keys'])}")
    return tensors


def tdhook_cases(model, ids):
    gen = torch.Generator().manual_seed(500)
    corr = torch.randint(0, VOCAB, ids.shape, generator=gen)
    pos = torch.randint(0, VOCAB, ids.shape, generator=gen)
    neg = torch.randint(0, VOCAB, ids.shape, generator=gen)
    v = torch.randn(HIDDEN, generator=gen)
    alpha = 0.5
    prep = {"in_keys": ["input_ids"], "out_keys": ["logits"]}
    b = ids.shape[0]

    t = run_case(
        "cache_layers", cls=ActivationCaching, kwargs={"key_pattern": r"model\.layers\.\d+$"}, model=model,
        td=TensorDict({"input_ids": ids.clone()}, batch_size=[b]), prep=prep,
        td_description=f"TensorDict({{'input_ids': input_ids int64[{b},{SEQ}] from expected.safetensors}}, "
                       f"batch_size=[{b}])",
        notes="pattern anchored with '$' (tdhook matches with re.match, a prefix match); out/cache/<path> is "
              "each decoder layer's output")
    assert set(k for k in t if k.startswith("out/cache/")) == {"out/cache/model.layers.0", "out/cache/model.layers.1"}

    patched = run_case(
        "patch_layer", cls=ActivationPatching, kwargs={"modules_to_patch": ["model.layers.0"]}, model=model,
        td=TensorDict({"input_ids": ids.clone(), ("patched", "input_ids"): corr.clone()}, batch_size=[b]),
        prep=prep,
        td_description="TensorDict({'input_ids': clean ids (expected.safetensors), ('patched', 'input_ids'): "
                       "corrupted ids (torch.Generator seed 500, first draw)}, batch_size=[2])",
        notes="out/logits: clean run; out/patched/logits: corrupted run with model.layers.0's output replaced "
              "by the clean run's")

    @torch.no_grad()
    def steer_fn(module_key, output):
        return output + alpha * v

    DESCRIPTIONS[steer_fn] = (f"steer_fn(module_key, output) = output + {alpha} * v, v = aux/v/model.layers.0 "
                              f"(float32[{HIDDEN}], broadcast over batch and sequence)")
    run_case(
        "steer_layer", cls=SteeringVectors, kwargs={"modules_to_steer": ["model.layers.0"], "steer_fn": steer_fn},
        model=model, td=TensorDict({"input_ids": ids.clone()}, batch_size=[b]), prep=prep,
        td_description="TensorDict({'input_ids': input_ids from expected.safetensors}, batch_size=[2])",
        aux={"v/model.layers.0": v, "alpha": torch.tensor(alpha)})

    run_case(
        "addition_layer", cls=ActivationAddition, kwargs={"modules_to_steer": ["model.layers.0"]}, model=model,
        td=TensorDict({("positive", "input_ids"): pos.clone(), ("negative", "input_ids"): neg.clone()},
                      batch_size=[b]),
        prep=prep,
        td_description="TensorDict({('positive', 'input_ids'): positive ids, ('negative', 'input_ids'): "
                       "negative ids (torch.Generator seed 500, second and third draws)}, batch_size=[2])",
        notes="out/steer/<path> = mean over the batch dim of (output of <path> on the positive input - output "
              "on the negative input): [seq, hidden]")

    # independent checks in plain PyTorch
    with torch.no_grad():
        clean = model(input_ids=ids, use_cache=False).logits
        assert torch.allclose(patched["out/logits"], clean, atol=1e-6, rtol=0)

    doc = {
        "generator": "tests/oracle/gen_llama.py",
        "versions": {"tdhook": tdhook.__version__, "torch": torch.__version__.split("+")[0],
                     "tensordict": __import__("tensordict").__version__,
                     "transformers": __import__("transformers").__version__},
        "conventions": {
            "wrapping": "LlamaForCausalLM.from_pretrained('tests/oracle/llama_tiny', attn_implementation='eager')"
                        ".eval(); prepare(model, in_keys=['input_ids'], out_keys=['logits']) wraps it in a "
                        "TensorDictModule that takes `logits` from the CausalLMOutputWithPast; hook paths are "
                        "relative to the model (named_modules() names)",
            "keys": "in/<k>: input TensorDict before the call; out/<k>: the TensorDict hm(td) returned; '/' joins "
                    "nested keys (module paths keep their dots: out/cache/model.layers.0); aux/: auxiliary tensors",
            "hooked": "tdhook's own HookProgram specs in registration order",
        },
        "cases": CASES,
    }
    with open(os.path.join(OUT_DIR, "tdhook_cases.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


# --------------------------------------------------------------------------------------


def main() -> int:
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    torch.set_num_threads(1)
    assert tdhook.__version__ == "0.3.0", tdhook.__version__

    model = build_model()
    for d in (OUT_DIR, SHARDED_DIR):
        if os.path.isdir(d):
            shutil.rmtree(d)
    model.save_pretrained(OUT_DIR, safe_serialization=True)
    model.save_pretrained(SHARDED_DIR, safe_serialization=True, max_shard_size="200KB")
    for d in (OUT_DIR, SHARDED_DIR):
        gen_cfg = os.path.join(d, "generation_config.json")
        if os.path.exists(gen_cfg):
            os.remove(gen_cfg)
    shards = sorted(f for f in os.listdir(SHARDED_DIR) if f.endswith(".safetensors"))
    assert len(shards) == 2 and os.path.exists(os.path.join(SHARDED_DIR, "model.safetensors.index.json")), shards
    assert "lm_head.weight" in load_file(os.path.join(OUT_DIR, "model.safetensors"))

    gen = torch.Generator().manual_seed(1234)
    input_ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen, dtype=torch.int64)
    logits = transformers_fixtures(model, input_ids)

    # reload both copies: bit-identical logits
    for d in (OUT_DIR, SHARDED_DIR):
        reloaded = LlamaForCausalLM.from_pretrained(d, attn_implementation="eager").eval()
        with torch.no_grad():
            re_logits = reloaded(input_ids=input_ids, use_cache=False).logits
        assert torch.equal(re_logits, logits), (d, (re_logits - logits).abs().max())

    print("tdhook cases")
    tdhook_model = LlamaForCausalLM.from_pretrained(OUT_DIR, attn_implementation="eager").eval()
    tdhook_model.config.use_cache = False
    tdhook_cases(tdhook_model, input_ids)

    total = 0
    for d in (OUT_DIR, SHARDED_DIR):
        for fn in sorted(os.listdir(d)):
            sz = os.path.getsize(os.path.join(d, fn))
            total += sz
            print(f"  {os.path.basename(d)}/{fn}: {sz} bytes")
    print(f"  total: {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
