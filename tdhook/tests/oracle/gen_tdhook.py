#!/usr/bin/env python3
"""Oracle: run Python tdhook 0.3.0 itself and record what it returns.

Run from the repository root:

    .venv-oracle/bin/python tests/oracle/gen_tdhook.py

Writes tests/oracle/tdhook/:

* ``shared_mlp/model.safetensors``, ``tiny_transformer/model.safetensors`` --
  the weights (PyTorch ``state_dict`` names) of the two small models defined
  below. ``gpt2_tiny`` reuses ``tests/oracle/gpt2_tiny/`` (written by
  ``gen_gpt2.py``) and is not copied.
* ``<model>/<case>.safetensors`` -- one file per tdhook call: the input
  TensorDict (``in/...``, snapshot taken *before* the call), the TensorDict
  tdhook returned (``out/...``), auxiliary tensors (``aux/...``), plain-PyTorch
  reference semantics where asked for (``expected/...``), the context cache
  after a backward pass (``ctx_cache/...``) and probe state (``probe/...``,
  ``results/...``). Keys are TensorDict nested keys joined with ``/``.
* ``cases.json`` -- for every (model, case): the exact tdhook call (class,
  explicit args, effective args with defaults, ``prepare`` args, how the input
  TensorDict was built), a precise description of every callback, the hooks
  tdhook installed (its own ``HookProgram``), the error text if tdhook raised,
  and the observed quirks.

Deterministic: CPU, float32, fixed seeds, ``torch.use_deterministic_algorithms``.
"""

import hashlib
import inspect
import json
import math
import os
import sys
import traceback
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file
from tensordict import TensorDict, TensorDictBase

import tdhook
from tdhook.latent import (
    ActivationAddition,
    ActivationCaching,
    ActivationPatching,
    MeanDifferenceClassifier,
    ProbeManager,
    Probing,
    SteeringVectors,
)

OUT_DIR = os.path.join("tests", "oracle", "tdhook")
GPT2_DIR = os.path.join("tests", "oracle", "gpt2_tiny")


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


class SharedMlp(nn.Module):
    """fc3(act(fc2(act(fc1(x))))) -- ``act`` is ONE module called TWICE."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(8, 8)
        self.fc3 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))


N_HEADS, HEAD_DIM, WIDTH, VOCAB = 2, 8, 16, 20


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(WIDTH, WIDTH)
        self.k_proj = nn.Linear(WIDTH, WIDTH)
        self.v_proj = nn.Linear(WIDTH, WIDTH)
        self.o_proj = nn.Linear(WIDTH, WIDTH)

    def forward(self, x):
        b, t, c = x.shape

        def split(y):  # [b, t, c] -> [b, h, t, d]
            return y.view(b, t, N_HEADS, HEAD_DIM).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        scores = q @ k.transpose(-2, -1) / math.sqrt(HEAD_DIM)
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        scores = scores.masked_fill(mask, float("-inf"))
        p = scores.softmax(dim=-1)
        o = (p @ v).transpose(1, 2).reshape(b, t, c)  # merge heads
        return self.o_proj(o)


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(WIDTH, 2 * WIDTH)
        self.act = nn.GELU()  # exact erf
        self.down = nn.Linear(2 * WIDTH, WIDTH)

    def forward(self, x):
        return self.down(self.act(self.up(x)))


class Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1 = nn.LayerNorm(WIDTH)
        self.attn = Attention()
        self.ln2 = nn.LayerNorm(WIDTH)
        self.mlp = Mlp()

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
        return x


class TinyTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.layers = nn.ModuleList([Layer(), Layer()])
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, VOCAB)

    def forward(self, ids):
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x))


def build_shared_mlp():
    torch.manual_seed(0)
    return SharedMlp().eval()


def build_tiny_transformer():
    torch.manual_seed(1)
    model = TinyTransformer()
    with torch.no_grad():
        for _, m in model.named_modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(1.0 + 0.1 * torch.randn_like(m.weight))
                m.bias.copy_(0.1 * torch.randn_like(m.bias))
    return model.eval()


def build_gpt2():
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(GPT2_DIR, attn_implementation="eager").eval()


def save_weights(model, name):
    d = os.path.join(OUT_DIR, name)
    os.makedirs(d, exist_ok=True)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(d, "model.safetensors"), metadata={"generator": "tests/oracle/gen_tdhook.py"})
    back = load_file(os.path.join(d, "model.safetensors"))
    assert set(back) == set(sd)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------

CASES = []
CALLABLE_DESCRIPTIONS = {}


def described(description):
    """Decorator attaching a plain-English description to a callback."""

    def wrap(fn):
        CALLABLE_DESCRIPTIONS[fn] = description
        return fn

    return wrap


def key_str(key):
    return "/".join(key) if isinstance(key, tuple) else key


def jsonable(value):
    if callable(value) and not isinstance(value, type):
        return {"callable": getattr(value, "__name__", repr(value)), "description": CALLABLE_DESCRIPTIONS.get(value)}
    if isinstance(value, type):
        return {"class": value.__name__}
    if isinstance(value, tuple):
        return {"nested_key": list(value)} if all(isinstance(v, str) for v in value) and value else list(value)
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def effective_args(cls, kwargs):
    sig = inspect.signature(cls.__init__)
    bound = sig.bind(None, **kwargs)
    bound.apply_defaults()
    args = dict(bound.arguments)
    args.pop("self", None)
    return {k: jsonable(v) for k, v in args.items()}


def structure(td):
    """Every entry of a TensorDict (nested keys joined with '/'), leaves and sub-TensorDicts."""
    out = {}
    for key, value in td.items(include_nested=True, leaves_only=False):
        k = key_str(key)
        if isinstance(value, TensorDictBase):
            out[k] = f"TensorDict(batch_size={list(value.batch_size)})"
        elif isinstance(value, torch.Tensor):
            out[k] = f"{str(value.dtype).replace('torch.', '')}{list(value.shape)}"
        else:
            out[k] = f"non-tensor {type(value).__name__}: {value!r}"
    return out


def flat(td, prefix):
    tensors = {}
    for key, value in td.items(include_nested=True, leaves_only=True):
        if isinstance(value, torch.Tensor):
            tensors[prefix + key_str(key)] = value.detach().clone().contiguous()
    return tensors


def err_text(e):
    msg = f"{type(e).__name__}: {e}"
    return msg if len(msg) < 1000 else msg[:1000] + "..."


def hooks_of(ctx, relative_root):
    prog = ctx.program
    if prog is None:
        return []
    out = []
    for spec in prog.hooks:
        item = {"module_path": spec.module_path, "operation": spec.operation, "direction": spec.direction}
        if spec.prepend:
            item["prepend"] = True
        if spec.source is not None:
            item["source_hook_index"] = spec.source.hook_index
        # absolute path inside the TensorDictModule wrapper tdhook built (root = the wrapper)
        item["wrapper_path"] = spec.module_path if not relative_root else (
            f"{relative_root}.{spec.module_path}" if spec.module_path else relative_root
        )
        out.append(item)
    return out


def save_case(model_name, case, tensors, entry):
    d = os.path.join(OUT_DIR, model_name)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"{case}.safetensors")
    tensors = {k: v.contiguous() for k, v in sorted(tensors.items())}
    save_file(tensors, path, metadata={"generator": f"tests/oracle/gen_tdhook.py (tdhook {tdhook.__version__})"})
    back = load_file(path)
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert torch.equal(back[k], v), k
    entry["file"] = os.path.relpath(path, OUT_DIR)
    entry["keys"] = {k: f"{str(v.dtype).replace('torch.', '')}{list(v.shape)}" for k, v in tensors.items()}
    CASES.append(entry)


def run_case(
    model_name,
    case,
    *,
    cls,
    kwargs,
    model,
    td,
    prepare_kwargs,
    td_description,
    grad=False,
    after=None,
    aux=None,
    expected=None,
    notes=None,
    check=None,
):
    """Run one tdhook call: cls(**kwargs).prepare(model, **prepare_kwargs) as hm: out = hm(td)."""
    entry = {
        "model": model_name,
        "case": case,
        "method": cls.__name__,
        "args": jsonable(kwargs),
        "effective_args": effective_args(cls, kwargs),
        "prepare": jsonable(prepare_kwargs),
        "input_td": td_description,
        "input_td_structure_before": structure(td),
        "grad_enabled": grad,
        "relative_root": "module",
    }
    tensors = flat(td, "in/")
    for k, v in (aux or {}).items():
        tensors["aux/" + k] = v.detach().clone().contiguous()
    for k, v in (expected or {}).items():
        tensors["expected/" + k] = v.detach().clone().contiguous()
    try:
        factory = cls(**kwargs)
        ctx = factory.prepare(model, **prepare_kwargs)
        with torch.enable_grad() if grad else torch.no_grad():
            with ctx as hm:
                entry["hooked"] = hooks_of(ctx, "module")
                out = hm(td)
                extra = after(ctx, hm, out) if after is not None else {}
        entry["output_is_input_object"] = out is td
        entry["output_td_structure"] = structure(out)
        entry["input_td_structure_after"] = structure(td)
        tensors.update(flat(out, "out/"))
        for k, v in (extra or {}).items():
            tensors[k] = v.detach().clone().contiguous()
        if check is not None:
            entry["checks"] = check(tensors)
    except Exception as e:  # noqa: BLE001 -- recorded, it is the point
        entry["error"] = err_text(e)
        entry["error_traceback_tail"] = traceback.format_exc().strip().splitlines()[-3:]
        entry["input_td_structure_after"] = structure(td)
    if notes:
        entry["notes"] = notes
    save_case(model_name, case, tensors, entry)
    status = "ERROR " + entry["error"][:100] if "error" in entry else "ok"
    print(f"  {model_name}/{case}: {status}")
    return entry


def close(a, b, tol=1e-6):
    return bool(a.shape == b.shape and torch.allclose(a, b, atol=tol, rtol=0))


def maxdiff(a, b):
    """Max |a - b| as a float (a recorded check value), or a string on shape mismatch."""
    if a.shape != b.shape:
        return f"shape mismatch {list(a.shape)} vs {list(b.shape)}"
    return float((a.to(torch.float64) - b.to(torch.float64)).abs().max()) if a.numel() else 0.0


def plain(model, fwd, inp, replace=None, capture=(), capture_inputs=(), grad=False):
    """Plain-PyTorch forward with nn.Module forward hooks (no tdhook).

    replace: {path: fn(path, output) -> new output}; capture: paths whose outputs are recorded per call (after
    replacement); capture_inputs: paths whose first positional input is recorded per call. Returns
    (output, {path: [outputs...]}, {path: [inputs...]}).
    """
    mods = dict(model.named_modules())
    caps = {p: [] for p in capture}
    ins = {p: [] for p in capture_inputs}
    handles = []
    for p, fn in (replace or {}).items():
        handles.append(mods[p].register_forward_hook(lambda m, a, o, fn=fn, p=p: fn(p, o)))
    for p in capture:
        handles.append(mods[p].register_forward_hook(lambda m, a, o, p=p: caps[p].append(o if grad else o.detach().clone())))
    for p in capture_inputs:
        handles.append(mods[p].register_forward_pre_hook(lambda m, a, p=p: ins[p].append(a[0].detach().clone())))
    try:
        with torch.enable_grad() if grad else torch.no_grad():
            out = fwd(model, inp)
    finally:
        for h in handles:
            h.remove()
    return out, caps, ins


def fwd_plain_call(model, inp):
    return model(inp)


def fwd_hf_logits(model, inp):
    return model(input_ids=inp).logits


def cache_checks(model, fwd, inp, mode="fwd", loss_key=None):
    """Build a check comparing every out/cache/<path> (or ctx_cache/[<dir>/]<path>) with plain PyTorch."""
    paths = [n for n, _ in model.named_modules() if n]

    def check(t):
        res = {}
        cached = {}
        for k in t:
            for pre in ("out/cache/", "ctx_cache/"):
                if k.startswith(pre):
                    rest = k[len(pre):]
                    direction = None
                    if rest.startswith(("fwd/", "bwd/", "fwd_pre/")):
                        direction, rest = rest.split("/", 1)
                    path = rest[len("module."):] if rest.startswith("module.") else rest
                    if path in paths:
                        cached[k] = (direction, path)
        need = sorted({p for _, p in cached.values()})
        _, caps, ins = plain(model, fwd, inp, capture=need, capture_inputs=need)
        grads = {}
        if mode in ("bwd", "fwd_bwd"):
            out, live, _ = plain(model, fwd, inp, capture=need, grad=True)
            loss = logsumexp_loss(out)
            flat_live = [(p, i) for p in need for i in range(len(live[p]))]
            gs = torch.autograd.grad(loss, [live[p][i] for p, i in flat_live])
            for (p, i), g in zip(flat_live, gs):
                grads.setdefault(p, []).append(g)
        for k, (direction, path) in sorted(cached.items()):
            d = direction or mode
            if d == "fwd_pre":
                ref = ins[path][-1]
            elif d == "bwd":
                ref = grads[path][0]  # backward visits calls in reverse: the kept (last) write is call 0
            elif d == "mean":
                ref = caps[path][-1].mean(dim=-1)
            else:
                ref = caps[path][-1]
            res[f"max_abs_diff {k} vs plain PyTorch"] = maxdiff(t[k], ref)
        return res

    return check


# --------------------------------------------------------------------------------------
# Callbacks (each with the description recorded in cases.json)
# --------------------------------------------------------------------------------------


@described("callback(module, args, key, direction) for direction 'fwd_pre' = args[0] (the first positional input tensor)")
def cb_first_arg(module, args, key, direction):
    return args[0]


@described(
    "callback(module, grad_input, grad_output, key, direction) for direction 'bwd' = grad_output[0] "
    "(gradient of the loss w.r.t. the module output)"
)
def cb_grad_output(module, grad_input, grad_output, key, direction):
    return grad_output[0]


@described(
    "callback(**kwargs): if kwargs['direction'] == 'fwd' return kwargs['output'] (the module output); "
    "if 'bwd' return kwargs['grad_output'][0]"
)
def cb_fwd_or_bwd(**kwargs):
    if kwargs["direction"] == "fwd":
        return kwargs["output"]
    return kwargs["grad_output"][0]


@described("callback(module, args, output, key, direction) = output.mean(dim=-1) (mean over the last / feature dim)")
def cb_mean_last(module, args, output, key, direction):
    return output.mean(dim=-1)


@described(
    "callback(module, args, output) = 2 * output -- NOTE it does not accept the `key` and `direction` keyword "
    "arguments that tdhook always passes, so tdhook's signature check passes but the call raises TypeError"
)
def cb_bad_signature(module, args, output):
    return 2 * output


@described(
    "patch_fn(module_key, output, output_to_patch): r = output.clone(); r[:, 1] = output_to_patch[:, 1]; return r "
    "-- output is the module output in the corrupted run, output_to_patch the one captured in the clean run; only "
    "sequence position 1 is replaced"
)
def patch_pos1(module_key, output, output_to_patch):
    r = output.clone()
    r[:, 1] = output_to_patch[:, 1]
    return r


@described(
    "cache_callback(module, args, output, key, direction) = output.mean(dim=0, keepdim=True).expand_as(output) "
    "(mean over the batch of the clean-run output, broadcast back to the batch: mean-ablation); this value is what "
    "is stored/captured and later patched in"
)
def cache_batch_mean(module, args, output, key, direction):
    return output.mean(dim=0, keepdim=True).expand_as(output)


def make_steer_fn(vectors, alpha):
    @described(
        f"steer_fn(module_key, output) = output + {alpha} * v[module_key] where v[module_key] = tensor "
        f"`aux/v/<module_key>` (shape [width], broadcast over batch and sequence)"
    )
    def steer_fn(module_key, output):
        return output + alpha * vectors[module_key]

    return steer_fn


def logsumexp_loss(t):
    return torch.logsumexp(t, dim=-1).sum()


LOSS_DESC = "L = torch.logsumexp(out[<out_key>], dim=-1).sum(); L.backward() inside the context, after hm(td)"


def backward_after(out_key):
    def after(ctx, hm, out):
        loss = logsumexp_loss(out[out_key])
        loss.backward()
        extra = {"aux/loss": loss.detach().reshape(())}
        for k, v in ctx.cache.items(include_nested=True, leaves_only=True):
            extra["ctx_cache/" + key_str(k)] = v
        return extra

    return after


# --------------------------------------------------------------------------------------
# Common case families
# --------------------------------------------------------------------------------------


def caching_family(name, model, td_fn, td_desc, prep, out_key, fwd, inp, blocks, blocks_nonrel, linear,
                   attn_tuple=None):
    """ActivationCaching cases shared by the block-structured models."""
    common = dict(model=model, prepare_kwargs=prep, td_description=td_desc)
    run_case(name, "cache_blocks", cls=ActivationCaching, kwargs={"key_pattern": blocks + "$"}, td=td_fn(),
             check=cache_checks(model, fwd, inp), **common,
             notes="block pattern anchored with '$' so that only the blocks match")
    run_case(name, "cache_blocks_prefix", cls=ActivationCaching, kwargs={"key_pattern": blocks}, td=td_fn(),
             check=cache_checks(model, fwd, inp), **common,
             notes="UNanchored block pattern: tdhook uses re.match (prefix match), so every descendant of "
                   "each block is hooked too")
    run_case(name, "cache_linear", cls=ActivationCaching, kwargs={"key_pattern": linear}, td=td_fn(),
             check=cache_checks(model, fwd, inp), **common)
    run_case(name, "cache_blocks_nonrelative", cls=ActivationCaching,
             kwargs={"key_pattern": blocks_nonrel + "$", "relative": False}, td=td_fn(),
             check=cache_checks(model, fwd, inp), **common,
             notes="relative=False: names are taken from the TensorDictModule wrapper, so they carry the "
                   "'module.' prefix and the pattern must include it")
    run_case(name, "cache_nonrelative_unprefixed", cls=ActivationCaching,
             kwargs={"key_pattern": blocks + "$", "relative": False}, td=td_fn(), **common,
             notes="relative=False with a pattern lacking 'module\\.': nothing matches, no hook is installed, "
                   "the published cache is an empty TensorDict (no out/cache/* key)")
    run_case(name, "cache_fwd_pre_no_callback", cls=ActivationCaching,
             kwargs={"key_pattern": blocks + "$", "directions": ["fwd_pre"]}, td=td_fn(), **common,
             notes="fwd_pre without callback: the cached value is the `args` tuple -> tdhook raises")
    run_case(name, "cache_fwd_pre", cls=ActivationCaching,
             kwargs={"key_pattern": blocks + "$", "directions": ["fwd_pre"], "callback": cb_first_arg},
             td=td_fn(), check=cache_checks(model, fwd, inp, mode="fwd_pre"), **common)
    run_case(name, "cache_bwd_no_callback", cls=ActivationCaching,
             kwargs={"key_pattern": blocks + "$", "directions": ["bwd"]}, td=td_fn(), grad=True,
             after=backward_after(out_key), **common,
             notes="bwd without callback: the cached value is the grad_output tuple -> tdhook raises during "
                   "backward (inside loss.backward()). Loss: " + LOSS_DESC)
    run_case(name, "cache_bwd", cls=ActivationCaching,
             kwargs={"key_pattern": blocks + "$", "directions": ["bwd"], "callback": cb_grad_output},
             td=td_fn(), grad=True, after=backward_after(out_key), check=cache_checks(model, fwd, inp, mode="bwd"),
             **common,
             notes="Loss: " + LOSS_DESC + ". The gradients land in the context cache during backward, i.e. AFTER "
                   "the returned TensorDict's `cache` (a shallow copy made at the end of the forward) was "
                   "published: out/cache is an empty TensorDict; ctx_cache/ is ctx.cache read after backward.")
    run_case(name, "cache_fwd_bwd", cls=ActivationCaching,
             kwargs={"key_pattern": blocks + "$", "directions": ["fwd", "bwd"], "callback": cb_fwd_or_bwd},
             td=td_fn(), grad=True, after=backward_after(out_key),
             check=cache_checks(model, fwd, inp, mode="fwd_bwd"), **common,
             notes="two directions -> nested keys (direction, path) forced even though use_nested_keys=False. "
                   "Loss: " + LOSS_DESC + ". out/cache holds only the fwd entries; ctx_cache/ has both.")
    run_case(name, "cache_nested_one_direction", cls=ActivationCaching,
             kwargs={"key_pattern": blocks + "$", "use_nested_keys": True}, td=td_fn(),
             check=cache_checks(model, fwd, inp), **common)
    run_case(name, "cache_callback_mean", cls=ActivationCaching,
             kwargs={"key_pattern": blocks + "$", "callback": cb_mean_last}, td=td_fn(),
             check=cache_checks(model, fwd, inp, mode="mean"), **common)
    run_case(name, "cache_callback_bad_signature", cls=ActivationCaching,
             kwargs={"key_pattern": blocks + "$", "callback": cb_bad_signature}, td=td_fn(), **common)
    if attn_tuple is not None:
        run_case(name, "cache_attn_tuple_output", cls=ActivationCaching, kwargs={"key_pattern": attn_tuple},
                 td=td_fn(), **common,
                 notes="module whose forward returns a tuple: caching without callback raises")


def patch_checks(model, fwd, clean, corrupted, mods, out_key, mode="default", keep=False):
    """Plain-PyTorch reference for single-call modules: clean run untouched, corrupted run patched."""

    def check(t):
        ref_clean, caps, _ = plain(model, fwd, clean, capture=mods)

        def repl(p, o):
            c = caps[p][0]
            if mode == "pos1":
                r = o.clone()
                r[:, 1] = c[:, 1]
                return r
            if mode == "batch_mean":
                return c.mean(dim=0, keepdim=True).expand_as(c)
            return c

        ref_patched, pcaps, _ = plain(model, fwd, corrupted, replace={m: repl for m in mods}, capture=mods)
        res = {f"max_abs_diff out/{out_key} vs plain clean run": maxdiff(t[f"out/{out_key}"], ref_clean),
               f"max_abs_diff out/patched/{out_key} vs plain patched run": maxdiff(t[f"out/patched/{out_key}"],
                                                                                  ref_patched)}
        if keep:
            for m in mods:
                res[f"max_abs_diff out/_cache/{m} vs clean-run output of {m}"] = maxdiff(t[f"out/_cache/{m}"],
                                                                                         caps[m][0])
                res[f"max_abs_diff out/_cache/{m} vs corrupted-run (patched) output of {m}"] = maxdiff(
                    t[f"out/_cache/{m}"], pcaps[m][0])
        return res

    return check


def patching_family(name, model, fwd, clean, corrupted, prep, one, two, pos1, cb_mod, tuple_mod=None):
    in_key, out_key = prep["in_keys"][0], prep["out_keys"][0]

    def td_fn(batch_size=None):
        bs = [clean.shape[0]] if batch_size is None else batch_size
        return TensorDict({in_key: clean.clone(), ("patched", in_key): corrupted.clone()}, batch_size=bs)

    desc = (f"TensorDict({{'{in_key}': clean ids, ('patched', '{in_key}'): corrupted ids}}, "
            f"batch_size=[{clean.shape[0]}])")
    common = dict(model=model, prepare_kwargs=prep, td_description=desc)
    run_case(name, "patch_one", cls=ActivationPatching, kwargs={"modules_to_patch": one}, td=td_fn(),
             check=patch_checks(model, fwd, clean, corrupted, one, out_key), **common)
    run_case(name, "patch_two", cls=ActivationPatching, kwargs={"modules_to_patch": two}, td=td_fn(),
             check=patch_checks(model, fwd, clean, corrupted, two, out_key), **common)
    run_case(name, "patch_fn_pos1", cls=ActivationPatching, kwargs={"modules_to_patch": pos1, "patch_fn": patch_pos1},
             td=td_fn(), check=patch_checks(model, fwd, clean, corrupted, pos1, out_key, mode="pos1"), **common)
    run_case(name, "patch_cache_callback", cls=ActivationPatching,
             kwargs={"modules_to_patch": cb_mod, "cache_callback": cache_batch_mean}, td=td_fn(),
             check=patch_checks(model, fwd, clean, corrupted, cb_mod, out_key, mode="batch_mean"), **common)
    run_case(name, "patch_keep_intermediate", cls=ActivationPatching,
             kwargs={"modules_to_patch": two, "clean_intermediate_keys": False}, td=td_fn(),
             check=patch_checks(model, fwd, clean, corrupted, two, out_key, keep=True), **common,
             notes="clean_intermediate_keys=False: the captures stay in the output under `_cache`")
    run_case(name, "patch_fn_pos1_keep_intermediate", cls=ActivationPatching,
             kwargs={"modules_to_patch": pos1, "patch_fn": patch_pos1, "clean_intermediate_keys": False},
             td=td_fn(), check=patch_checks(model, fwd, clean, corrupted, pos1, out_key, mode="pos1", keep=True),
             **common,
             notes="`_cache` is NOT the clean activation: the capture hook also runs in the corrupted pass "
                   "(after the prepended replace hook) and writes into the same `_cache` TensorDict, so "
                   "out/_cache/<m> ends up = the patched corrupted-run output of <m>")
    run_case(name, "patch_one_no_batch_dim", cls=ActivationPatching, kwargs={"modules_to_patch": one},
             td=td_fn(batch_size=[]), model=model, prepare_kwargs=prep,
             td_description=desc.replace(f"batch_size=[{clean.shape[0]}]", "batch_size=[]"),
             notes="input TensorDict without batch dims")
    if tuple_mod is not None:
        run_case(name, "patch_attn_tuple_output", cls=ActivationPatching, kwargs={"modules_to_patch": tuple_mod},
                 td=td_fn(), **common, notes="patched module returns a tuple: the capture (caching) hook raises")


def steering_family(name, model, fwd, ids, prep, width, one, two, gen):
    in_key, out_key = prep["in_keys"][0], prep["out_keys"][0]

    def td_fn():
        return TensorDict({in_key: ids.clone()}, batch_size=[ids.shape[0]])

    desc = f"TensorDict({{'{in_key}': ids}}, batch_size=[{ids.shape[0]}])"
    for case, mods in (("steer_one", one), ("steer_two", two)):
        if mods is None:
            continue
        vectors = {m: torch.randn(width, generator=gen) for m in mods}
        alpha = 0.5

        def check(t, vectors=vectors, mods=mods):
            ref, _, _ = plain(model, fwd, ids, replace={m: (lambda p, o: o + alpha * vectors[p]) for m in mods})
            return {f"max_abs_diff out/{out_key} vs plain PyTorch": maxdiff(t[f"out/{out_key}"], ref)}

        run_case(name, case, cls=SteeringVectors,
                 kwargs={"modules_to_steer": mods, "steer_fn": make_steer_fn(vectors, alpha)}, model=model,
                 td=td_fn(), prepare_kwargs=prep, td_description=desc, check=check,
                 aux={f"v/{m}": v for m, v in vectors.items()} | {"alpha": torch.tensor(alpha)})


def addition_family(name, model, fwd, pos, neg, prep, one, two, no_batch=True):
    in_key = prep["in_keys"][0]

    def td_fn(batch_size=None):
        bs = [pos.shape[0]] if batch_size is None else batch_size
        return TensorDict({("positive", in_key): pos.clone(), ("negative", in_key): neg.clone()}, batch_size=bs)

    desc = (f"TensorDict({{('positive', '{in_key}'): positive input, ('negative', '{in_key}'): negative input}}, "
            f"batch_size=[{pos.shape[0]}])")
    steer_desc = ("steer/<path> = mean over the TensorDict batch dims (dim 0) of (output of <path> on the positive "
                  "input - output of <path> on the negative input). The returned TensorDict holds ONLY `steer` "
                  "(batch_size=[]); the intermediates (_positive_out, _positive_cache, _negative_out, "
                  "_negative_cache) are written into the caller's input TensorDict whatever "
                  "clean_intermediate_keys says")

    def check_for(mods):
        def check(t):
            _, pc, _ = plain(model, fwd, pos, capture=mods)
            _, nc, _ = plain(model, fwd, neg, capture=mods)
            return {f"max_abs_diff out/steer/{m} vs plain PyTorch": maxdiff(t[f"out/steer/{m}"],
                                                                            (pc[m][0] - nc[m][0]).mean(dim=0))
                    for m in mods}

        return check

    common = dict(model=model, prepare_kwargs=prep, td_description=desc, notes=steer_desc)
    run_case(name, "addition_one", cls=ActivationAddition, kwargs={"modules_to_steer": one}, td=td_fn(),
             check=check_for(one), **common)
    if two is not None:
        run_case(name, "addition_two", cls=ActivationAddition, kwargs={"modules_to_steer": two}, td=td_fn(),
                 check=check_for(two), **common)
    run_case(name, "addition_keep_intermediate", cls=ActivationAddition,
             kwargs={"modules_to_steer": one, "clean_intermediate_keys": False}, td=td_fn(), check=check_for(one),
             **common)
    if no_batch:
        run_case(name, "addition_one_no_batch_dim", cls=ActivationAddition, kwargs={"modules_to_steer": one},
                 td=td_fn(batch_size=[]), model=model, prepare_kwargs=prep,
                 td_description=desc.replace(f"batch_size=[{pos.shape[0]}]", "batch_size=[]"),
                 notes="input TensorDict without batch dims")


# --------------------------------------------------------------------------------------
# shared_mlp
# --------------------------------------------------------------------------------------


def shared_mlp_cases():
    name = "shared_mlp"
    model = build_shared_mlp()
    save_weights(model, name)
    gen = torch.Generator().manual_seed(100)
    x = torch.randn(4, 6, generator=gen)
    x_corr = torch.randn(4, 6, generator=gen)
    prep = {"in_keys": ["input"], "out_keys": ["output"]}

    # plain-PyTorch references
    with torch.no_grad():
        h1 = model.fc1(x)
        a0 = torch.tanh(h1)  # act call 0
        h2 = model.fc2(a0)
        a1 = torch.tanh(h2)  # act call 1
        y = model.fc3(a1)
        c_h1 = model.fc1(x_corr)
        c_a0 = torch.tanh(c_h1)
        c_y = model.fc3(torch.tanh(model.fc2(c_a0)))
    assert torch.equal(y, model(x))

    def td_fn():
        return TensorDict({"input": x.clone()}, batch_size=[4])

    desc = "TensorDict({'input': x}, batch_size=[4])"
    act_aux = {"act_call0": a0, "act_call1": a1, "act_input_call0": h1, "act_input_call1": h2}

    run_case(name, "cache_act", cls=ActivationCaching, kwargs={"key_pattern": "act"}, model=model, td=td_fn(),
             prepare_kwargs=prep, td_description=desc, aux=act_aux,
             check=lambda t: {"cache_equals_act_call1 (last call wins)": torch.equal(t["out/cache/act"], t["aux/act_call1"]),
                              "cache_equals_act_call0": torch.equal(t["out/cache/act"], t["aux/act_call0"])},
             notes="`act` runs twice per forward; the caching hook does cache[key] = value on each call, so the "
                   "second call overwrites the first (last call wins). aux/act_call{0,1} are the two outputs "
                   "computed in plain PyTorch.")
    run_case(name, "cache_linear", cls=ActivationCaching, kwargs={"key_pattern": r"fc\d+"}, model=model, td=td_fn(),
             prepare_kwargs=prep, td_description=desc)
    run_case(name, "cache_act_fwd_pre", cls=ActivationCaching,
             kwargs={"key_pattern": "act", "directions": ["fwd_pre"], "callback": cb_first_arg}, model=model,
             td=td_fn(), prepare_kwargs=prep, td_description=desc, aux=act_aux,
             check=lambda t: {"cache_equals_act_input_call1": torch.equal(t["out/cache/act"], t["aux/act_input_call1"])})

    # gradients of L w.r.t. the two act outputs, plain PyTorch
    mg = build_shared_mlp()
    xa = x.clone()
    z0 = torch.tanh(mg.fc1(xa))
    z0.retain_grad()
    z1 = torch.tanh(mg.fc2(z0))
    z1.retain_grad()
    loss = logsumexp_loss(mg.fc3(z1))
    g0, g1 = torch.autograd.grad(loss, [z0, z1])
    bwd_aux = {"grad_act_call0": g0, "grad_act_call1": g1}
    run_case(name, "cache_act_bwd", cls=ActivationCaching,
             kwargs={"key_pattern": "act", "directions": ["bwd"], "callback": cb_grad_output}, model=model,
             td=td_fn(), prepare_kwargs=prep, td_description=desc, grad=True, after=backward_after("output"),
             aux=bwd_aux,
             check=lambda t: {"ctx_cache_equals_grad_act_call0": close(t["ctx_cache/act"], t["aux/grad_act_call0"]),
                              "ctx_cache_equals_grad_act_call1": close(t["ctx_cache/act"], t["aux/grad_act_call1"])},
             notes="Loss: " + LOSS_DESC + ". Backward hooks fire in reverse call order, so the last write (the one "
                   "kept) is the gradient w.r.t. the output of the FIRST forward call of act. aux/grad_act_call{0,1} "
                   "are plain-PyTorch gradients w.r.t. the two act outputs.")

    # ---- activation patching of the shared act ----
    # The semantics we want: clean run untouched; in the corrupted run, call k of act is replaced by clean call k.
    # act call 0 replaced by a0, call 1 replaced by a1 -> fc3(a1) (= clean output, act is the last nonlinearity).
    exp_patched = model.fc3(a1)
    # What tdhook 0.3.0 does (re-implementation used to explain the recorded output): a single capture slot per
    # patched module, reset once per outer call. Clean run: call 0 -> slot empty, output kept, slot := a0;
    # call 1 -> slot full -> output replaced by a0 (slot := a0 again). Corrupted run: both calls replaced by a0.
    with torch.no_grad():
        tdh_clean = model.fc3(a0)
        tdh_patched = model.fc3(a0)

    def ptd():
        return TensorDict({"input": x.clone(), ("patched", "input"): x_corr.clone()}, batch_size=[4])

    pdesc = "TensorDict({'input': x (clean), ('patched', 'input'): x' (corrupted)}, batch_size=[4])"
    run_case(name, "patch_act", cls=ActivationPatching, kwargs={"modules_to_patch": ["act"]}, model=model, td=ptd(),
             prepare_kwargs=prep, td_description=pdesc,
             aux={"act_call0": a0, "act_call1": a1, "corrupted_output_unpatched": c_y,
                  "tdhook_explained/output": tdh_clean, "tdhook_explained/patched_output": tdh_patched},
             expected={"output": y, "patched_output": exp_patched},
             check=lambda t: {
                 "out_output_equals_expected_output": close(t["out/output"], t["expected/output"]),
                 "out_patched_output_equals_expected_patched_output": close(t["out/patched/output"],
                                                                           t["expected/patched_output"]),
                 "out_output_equals_tdhook_explained (fc3(act_call0))": close(t["out/output"],
                                                                             t["aux/tdhook_explained/output"]),
                 "out_patched_equals_tdhook_explained (fc3(act_call0))": close(
                     t["out/patched/output"], t["aux/tdhook_explained/patched_output"]),
             },
             notes="expected/* = wanted semantics computed in plain PyTorch: clean run untouched (= model(x)); "
                   "corrupted run with act call k replaced by clean act call k -> fc3(act_call1). tdhook instead "
                   "keeps ONE capture slot per patched module (reset by a fwd_pre hook on the outer hooked module, "
                   "i.e. once per hm(td), not per model pass), and its replace hook fires whenever the slot is "
                   "non-empty -- including during the clean run. So in the clean run act call 1 is replaced by act "
                   "call 0's output, and in the corrupted run both calls get act call 0's output: both out/output "
                   "and out/patched/output equal fc3(act_call0) (aux/tdhook_explained/*).")
    # control: a module called once
    with torch.no_grad():
        exp_fc2 = model.fc3(torch.tanh(h2))
    run_case(name, "patch_fc2", cls=ActivationPatching, kwargs={"modules_to_patch": ["fc2"]}, model=model, td=ptd(),
             prepare_kwargs=prep, td_description=pdesc, expected={"output": y, "patched_output": exp_fc2},
             check=lambda t: {"out_output_equals_expected": close(t["out/output"], t["expected/output"]),
                              "out_patched_equals_expected": close(t["out/patched/output"],
                                                                  t["expected/patched_output"])},
             notes="control: fc2 is called once, patching works as intended")
    run_case(name, "patch_fc2_no_batch_dim", cls=ActivationPatching, kwargs={"modules_to_patch": ["fc2"]},
             model=model, td=TensorDict({"input": x.clone(), ("patched", "input"): x_corr.clone()}, batch_size=[]),
             prepare_kwargs=prep, td_description=pdesc.replace("batch_size=[4]", "batch_size=[]"),
             notes="input TensorDict without batch dims (the model itself accepts x [4,6])")

    # ---- steering / activation addition on the shared act ----
    gen_v = torch.Generator().manual_seed(101)
    v = torch.randn(8, generator=gen_v)
    alpha = 0.5
    with torch.no_grad():
        s0 = torch.tanh(model.fc1(x)) + alpha * v
        s1 = torch.tanh(model.fc2(s0)) + alpha * v
        steered = model.fc3(s1)
    run_case(name, "steer_act", cls=SteeringVectors,
             kwargs={"modules_to_steer": ["act"], "steer_fn": make_steer_fn({"act": v}, alpha)}, model=model,
             td=td_fn(), prepare_kwargs=prep, td_description=desc, aux={"v/act": v, "alpha": torch.tensor(alpha)},
             expected={"output": steered},
             check=lambda t: {"max_abs_diff out/output vs expected/output": maxdiff(t["out/output"],
                                                                                   t["expected/output"])},
             notes="the replace hook fires on EVERY call of act: expected/output = fc3(act(fc2(act(fc1(x)) + "
                   "alpha*v)) + alpha*v)")
    x_pos = torch.randn(4, 6, generator=gen)
    x_neg = torch.randn(4, 6, generator=gen)
    with torch.no_grad():
        p0 = torch.tanh(model.fc1(x_pos))
        p1 = torch.tanh(model.fc2(p0))
        n0 = torch.tanh(model.fc1(x_neg))
        n1 = torch.tanh(model.fc2(n0))
    adesc = "TensorDict({('positive', 'input'): x_pos [4,6], ('negative', 'input'): x_neg [4,6]}, batch_size=[4])"

    def atd(bs):
        return TensorDict({("positive", "input"): x_pos.clone(), ("negative", "input"): x_neg.clone()}, batch_size=bs)

    run_case(name, "addition_act", cls=ActivationAddition, kwargs={"modules_to_steer": ["act"]}, model=model,
             td=atd([4]), prepare_kwargs=prep, td_description=adesc,
             aux={"steer_call0": (p0 - n0).mean(0), "steer_call1": (p1 - n1).mean(0)},
             check=lambda t: {"out/steer/act == aux/steer_call1 (last call wins)": close(t["out/steer/act"],
                                                                                        t["aux/steer_call1"])},
             notes="act is called twice per pass; the cache keeps the last call, so steer/act = mean_batch("
                   "act_call1(pos) - act_call1(neg))")
    run_case(name, "addition_fc2", cls=ActivationAddition, kwargs={"modules_to_steer": ["fc2"]}, model=model,
             td=atd([4]), prepare_kwargs=prep, td_description=adesc,
             aux={"steer_ref": (model.fc2(p0) - model.fc2(n0)).mean(0).detach()},
             check=lambda t: {"max_abs_diff out/steer/fc2 vs aux/steer_ref": maxdiff(t["out/steer/fc2"],
                                                                                     t["aux/steer_ref"])})
    run_case(name, "addition_fc2_no_batch_dim", cls=ActivationAddition, kwargs={"modules_to_steer": ["fc2"]},
             model=model, td=atd([]), prepare_kwargs=prep, td_description=adesc.replace("[4])", "[])"),
             aux={"steer_ref_batched": (model.fc2(p0) - model.fc2(n0)).mean(0).detach(),
                  "mean_of_everything": (model.fc2(p0) - model.fc2(n0)).mean().detach()},
             check=lambda t: {"out/steer/fc2 == aux/mean_of_everything": close(t["out/steer/fc2"],
                                                                               t["aux/mean_of_everything"])},
             notes="batch_size=[]: tdhook flattens to batch [1], then means over tuple(range(td.dim())) = () "
                   "which torch treats as ALL dims: the steering vector collapses to a 0-d scalar")


# --------------------------------------------------------------------------------------
# tiny_transformer
# --------------------------------------------------------------------------------------


def tiny_transformer_cases():
    name = "tiny_transformer"
    model = build_tiny_transformer()
    save_weights(model, name)
    gen = torch.Generator().manual_seed(200)
    ids = torch.randint(0, VOCAB, (3, 5), generator=gen)
    corr = torch.randint(0, VOCAB, (3, 5), generator=gen)
    pos = torch.randint(0, VOCAB, (3, 5), generator=gen)
    neg = torch.randint(0, VOCAB, (3, 5), generator=gen)
    prep = {"in_keys": ["input"], "out_keys": ["output"]}

    def td_fn():
        return TensorDict({"input": ids.clone()}, batch_size=[3])

    desc = "TensorDict({'input': ids int64[3,5]}, batch_size=[3])"
    caching_family(name, model, td_fn, desc, prep, "output", fwd_plain_call, ids,
                   blocks=r"layers\.\d+", blocks_nonrel=r"module\.layers\.\d+",
                   linear=r"(.*\.)?(q_proj|k_proj|v_proj|o_proj|up|down|head)$")
    patching_family(name, model, fwd_plain_call, ids, corr, prep, one=["layers.0"], two=["layers.0.attn", "layers.1.mlp"],
                    pos1=["layers.0"], cb_mod=["layers.1.mlp"])
    steering_family(name, model, fwd_plain_call, ids, prep, WIDTH, one=["layers.0"], two=["layers.0", "layers.1.mlp"],
                    gen=torch.Generator().manual_seed(201))
    addition_family(name, model, fwd_plain_call, pos, neg, prep, one=["layers.0"], two=["layers.0", "layers.1.mlp"])
    probing_cases(name, model)


def probing_cases(name, model):
    gen = torch.Generator().manual_seed(300)
    n_fit, n_pred = 24, 16
    ids = torch.randint(0, VOCAB, (n_fit + n_pred, 5), generator=gen)
    # make the classes reasonably balanced: put token 7 at a random position in every other sequence
    pos = torch.randint(0, 5, (n_fit + n_pred,), generator=gen)
    for i in range(0, n_fit + n_pred, 2):
        ids[i, pos[i]] = 7
    labels = (ids == 7).any(dim=-1).to(torch.int64)
    fit_ids, pred_ids = ids[:n_fit], ids[n_fit:]
    fit_labels, pred_labels = labels[:n_fit], labels[n_fit:]
    assert 0 < fit_labels.sum() < n_fit and 0 < pred_labels.sum() < n_pred

    @described(
        "compute_metrics(predictions, labels) = {'accuracy': (predictions == labels).float().mean() (f32 0-d), "
        "'predictions': predictions.to(int64)} -- predictions is MeanDifferenceClassifier.predict(X), a bool "
        "tensor (decision > 0), labels the int64 `labels` entry of the input TensorDict"
    )
    def compute_metrics(predictions, labels):
        predictions = torch.as_tensor(predictions)
        return {
            "accuracy": (predictions == labels).to(torch.float32).mean(),
            "predictions": predictions.to(torch.int64),
        }

    pattern = r"layers\.\d+$"
    manager_kwargs = {"estimator_class": MeanDifferenceClassifier, "estimator_kwargs": {},
                      "compute_metrics": compute_metrics}
    manager = ProbeManager(**manager_kwargs)
    probing_kwargs = {"key_pattern": pattern, "probe_factory": manager.probe_factory,
                      "additional_keys": ["labels", "step_type"]}
    prep = {"in_keys": ["input"], "out_keys": ["output"]}

    def td(ids_, labels_, step):
        return TensorDict({"input": ids_.clone(), "labels": labels_.clone(), "step_type": step},
                          batch_size=[ids_.shape[0]])

    entry = {
        "model": name,
        "case": "probing_mean_difference",
        "method": "Probing",
        "args": jsonable(probing_kwargs) | {"probe_factory": "ProbeManager(...).probe_factory"},
        "effective_args": effective_args(Probing, probing_kwargs) | {"probe_factory": "ProbeManager.probe_factory"},
        "probe_manager": {"class": "ProbeManager", "args": jsonable(manager_kwargs),
                          "effective_args": effective_args(ProbeManager, manager_kwargs)},
        "estimator": "MeanDifferenceClassifier(normalize=True): pos = mean of X over label-1 rows, neg = mean over "
                     "label-0 rows; coef = pos - neg; intercept = -0.5 * (|pos|^2 - |neg|^2); both divided by "
                     "|coef|; predict(X) = (X @ coef.T + intercept) > 0. X = activation.detach().flatten(1) "
                     "(Probe's default preprocessing), e.g. [N, 5*16] for a block output.",
        "prepare": jsonable(prep),
        "calls": [
            "with Probing(**args).prepare(model, **prepare) as hm: hm(TensorDict({'input': fit ids int64[24,5], "
            "'labels': int64[24], 'step_type': 'fit'}, batch_size=[24]))",
            "with Probing(**args).prepare(model, **prepare) as hm: hm(TensorDict({'input': predict ids int64[16,5], "
            "'labels': int64[16], 'step_type': 'predict'}, batch_size=[16]))  (a NEW Probing context, SAME manager)",
        ],
        "dataset": "40 sequences int64[40,5] drawn uniformly from 0..20 (torch.Generator seed 300), then token 7 "
                   "written at a random position (same generator) in every even-indexed sequence; label = 1 if "
                   "token 7 appears anywhere in the sequence else 0. First 24 = fit set, last 16 = predict set.",
        "relative_root": "module",
        "grad_enabled": False,
    }
    tensors = {"aux/ids": ids, "aux/labels": labels}
    try:
        with torch.no_grad():
            fit_td = td(fit_ids, fit_labels, "fit")
            entry["fit_input_td_structure_before"] = structure(fit_td)
            tensors.update(flat(fit_td, "fit/in/"))
            ctx = Probing(**probing_kwargs).prepare(model, **prep)
            with ctx as hm:
                entry["hooked"] = hooks_of(ctx, "module")
                fit_out = hm(fit_td)
            entry["fit_output_is_input_object"] = fit_out is fit_td
            entry["fit_output_td_structure"] = structure(fit_out)
            tensors.update(flat(fit_out, "fit/out/"))

            pred_td = td(pred_ids, pred_labels, "predict")
            tensors.update(flat(pred_td, "predict/in/"))
            with Probing(**probing_kwargs).prepare(model, **prep) as hm:
                pred_out = hm(pred_td)
            entry["predict_output_td_structure"] = structure(pred_out)
            tensors.update(flat(pred_out, "predict/out/"))

            # activations (plain PyTorch) for debugging the Rust side
            for i, layer_acts in enumerate(_block_outputs(model, ids)):
                tensors[f"aux/X/layers.{i}"] = layer_acts.flatten(1)

        estimators = {}
        for key, est in manager.estimators.items():
            coef, intercept = est.coef_, est.intercept_
            estimators[key] = {"coef": f"{type(coef).__module__}.{type(coef).__name__} {coef.dtype} "
                                       f"{list(coef.shape)}",
                               "intercept": f"{type(intercept).__module__}.{type(intercept).__name__} "
                                            f"{intercept.dtype} {list(intercept.shape)}"}
            tensors[f"probe/{key}/coef"] = torch.as_tensor(np.asarray(coef))
            tensors[f"probe/{key}/intercept"] = torch.as_tensor(np.asarray(intercept))
        entry["estimators"] = estimators
        entry["results_structure"] = structure(manager.results)
        tensors.update(flat(manager.results, "results/"))
        # independent check of the fit on our own activations
        checks = {}
        for key in manager.estimators:
            path = key.rsplit("_", 1)[0]
            X = tensors[f"aux/X/{path}"].to(torch.float64)
            Xf, yf = X[:n_fit], fit_labels.to(torch.float64)
            p = (Xf * yf[:, None]).sum(0) / yf.sum()
            n = (Xf * (1 - yf)[:, None]).sum(0) / (1 - yf).sum()
            c = p - n
            b = -0.5 * (p.norm() ** 2 - n.norm() ** 2) / c.norm()
            c = c / c.norm()
            checks[f"{key}: coef matches independent mean-difference fit"] = bool(
                torch.allclose(tensors[f"probe/{key}/coef"].flatten(), c, atol=1e-6))
            checks[f"{key}: intercept matches"] = bool(
                torch.allclose(tensors[f"probe/{key}/intercept"].flatten(), b.reshape(1), atol=1e-6))
            pred = ((X[n_fit:] @ c + b) > 0).to(torch.int64)
            checks[f"{key}: predictions match"] = bool(
                torch.equal(pred, tensors[f"results/predict/{key}/predictions"]))
        entry["checks"] = checks
    except Exception as e:  # noqa: BLE001
        entry["error"] = err_text(e)
        entry["error_traceback_tail"] = traceback.format_exc().strip().splitlines()[-3:]
    entry["notes"] = (
        "Probing passes the `additional_keys` entries of the input TensorDict to Probe.step as keyword arguments "
        "(labels=<int64 tensor>, step_type=<str>), captured by a fwd_pre hook on the TensorDictModule. "
        "step_type 'fit' calls estimator.fit(X, y=labels) then records fit metrics (predictions on the fit set); "
        "'predict' records predict metrics. Results live in manager.results[(phase, f'{path}_{direction}')]; a "
        "second write to the same (phase, key) raises unless overwrite_results=True. coef_ comes back as a torch "
        "float64 tensor [1, D] and intercept_ as a numpy float64 array [1] (mixed torch/numpy arithmetic)."
    )
    save_case(name, "probing_mean_difference", tensors, entry)
    print(f"  {name}/probing_mean_difference: {'ERROR ' + entry['error'] if 'error' in entry else 'ok'}")

    # error probes: bool labels, missing step_type
    for case, labels_dtype, step, note in (
        ("probing_bad_step_type", torch.int64, "train", "step_type not in ('fit', 'predict')"),
    ):
        m2 = ProbeManager(**manager_kwargs)
        kw = {"key_pattern": pattern, "probe_factory": m2.probe_factory, "additional_keys": ["labels", "step_type"]}
        e2 = {"model": name, "case": case, "method": "Probing",
              "args": jsonable(kw) | {"probe_factory": "ProbeManager(...).probe_factory"},
              "probe_manager": {"class": "ProbeManager", "args": jsonable(manager_kwargs)},
              "prepare": jsonable(prep), "relative_root": "module", "notes": note,
              "input_td": f"fit set as in probing_mean_difference, labels dtype {labels_dtype}, step_type {step!r}"}
        t2 = td(fit_ids, fit_labels.to(labels_dtype), step)
        tens2 = flat(t2, "in/")
        try:
            with torch.no_grad():
                with Probing(**kw).prepare(model, **prep) as hm:
                    hm(t2)
            e2["result"] = "no error"
            e2["results_structure"] = structure(m2.results)
        except Exception as e:  # noqa: BLE001
            e2["error"] = err_text(e)
        save_case(name, case, tens2, e2)
        print(f"  {name}/{case}: {'ERROR ' + e2['error'][:100] if 'error' in e2 else 'ok'}")


def _block_outputs(model, ids):
    outs = []
    x = model.embed(ids)
    for layer in model.layers:
        x = layer(x)
        outs.append(x)
    return outs


# --------------------------------------------------------------------------------------
# gpt2_tiny
# --------------------------------------------------------------------------------------


def gpt2_cases():
    name = "gpt2_tiny"
    model = build_gpt2()
    ids = load_file(os.path.join(GPT2_DIR, "expected.safetensors"))["input_ids"]
    b, t = ids.shape
    gen = torch.Generator().manual_seed(400)
    corr = torch.randint(0, 101, (b, t), generator=gen)
    pos = torch.randint(0, 101, (b, t), generator=gen)
    neg = torch.randint(0, 101, (b, t), generator=gen)
    prep = {"in_keys": ["input_ids"], "out_keys": ["logits"]}

    def td_fn():
        return TensorDict({"input_ids": ids.clone()}, batch_size=[b])

    desc = f"TensorDict({{'input_ids': input_ids int64[{b},{t}] from gpt2_tiny/expected.safetensors}}, batch_size=[{b}])"
    caching_family(name, model, td_fn, desc, prep, "logits", fwd_hf_logits, ids,
                   blocks=r"transformer\.h\.\d+", blocks_nonrel=r"module\.transformer\.h\.\d+",
                   linear=r"(.*\.)?(c_attn|c_proj|c_fc)$|lm_head$", attn_tuple=r"transformer\.h\.\d+\.attn$")
    patching_family(name, model, fwd_hf_logits, ids, corr, prep, one=["transformer.h.0"],
                    two=["transformer.h.0.mlp", "transformer.h.1"],
                    pos1=["transformer.h.0"], cb_mod=["transformer.h.1.mlp"], tuple_mod=["transformer.h.1.attn"])
    steering_family(name, model, fwd_hf_logits, ids, prep, 64, one=["transformer.h.0"], two=None,
                    gen=torch.Generator().manual_seed(401))
    addition_family(name, model, fwd_hf_logits, pos, neg, prep, one=["transformer.h.0"],
                    two=["transformer.h.0", "transformer.h.1.mlp"], no_batch=False)


# --------------------------------------------------------------------------------------


QUIRKS = [
    "Module selection uses re.compile(pattern).match(name) over model.named_modules() (root skipped): a PREFIX match. "
    "'layers\\.\\d+' also hooks every descendant (layers.0.attn.q_proj, ...); anchor with '$' to get blocks only "
    "(tiny_transformer/cache_blocks_prefix; on gpt2 the prefix pattern reaches the tuple-returning attn and raises).",
    "relative=True (default): names are relative to the wrapped model. relative=False: names come from the "
    "TensorDictModule wrapper and start with 'module.'; the pattern must include 'module\\.' or nothing is hooked "
    "(silently: empty cache, no error) -- cache_blocks_nonrelative / cache_nonrelative_unprefixed.",
    "A plain nn.Module is wrapped as TensorDictModule(model, in_keys or ['input'], out_keys or ['output']); the "
    "model is called positionally with the in_keys tensors; HF ModelOutput results are accepted (logits extracted "
    "by out_keys=['logits']).",
    "ActivationCaching/SteeringVectors/Probing write into and return the SAME TensorDict object the caller passed "
    "(output_is_input_object=true): the caller's input gains `output` and `cache`.",
    "ActivationCaching publishes cache.copy() (shallow) under `cache` at the end of the forward. bwd captures happen "
    "later, during loss.backward() inside the context, so they are only visible in the context's cache "
    "(ctx.cache / hm.hooking_context.cache), never in the returned TensorDict (cache_bwd: out/cache empty).",
    "Cached value = hook argument 'output' (fwd), 'args' (fwd_pre, a TUPLE), 'grad_output' (bwd, a TUPLE). Tuples "
    "are rejected: RuntimeError 'tuple values are not supported for caching, use a `callback` to return a tensor or "
    "a tensordict'. Same for modules returning tuples (GPT2Attention) in caching AND patching. For bwd the error "
    "surfaces from inside loss.backward().",
    "callback is called as callback(<direction params by name>, key=<cache key>, direction=<dir>) -- fwd: module, "
    "args, output; fwd_pre: module, args; bwd: module, grad_input, grad_output. The signature check only verifies "
    "the direction params are present, so a callback without key/direction passes construction and fails at call "
    "time with TypeError (cache_callback_bad_signature).",
    "Cache keys: path (a single str containing dots) by default; (direction, path) when use_nested_keys=True OR "
    "when more than one direction is given (forced).",
    "Last call wins: a module called several times in one pass is cached once, cache[key] = value overwritten per "
    "call (shared_mlp/cache_act = act call 1). In bwd the hooks fire in reverse order, so the surviving gradient "
    "is the one w.r.t. the FIRST forward call (shared_mlp/cache_act_bwd). ActivationAddition inherits this "
    "(shared_mlp/addition_act uses act call 1).",
    "ActivationPatching keeps ONE capture slot per patched module, reset by a fwd_pre hook on the outer hooked "
    "module (once per hm(td) call, NOT per model pass); its replace hook (prepended) fires whenever the slot is "
    "non-empty, including during the clean pass. For a module called k>1 times per pass, the clean pass itself is "
    "corrupted (calls 1.. get call 0's output) and the corrupted pass gets call 0's output at every call "
    "(shared_mlp/patch_act: out/output = out/patched/output = fc3(act_call0); expected/* holds the wanted "
    "per-call semantics). Single-call modules behave as intended (all patch_* checks 0.0 vs plain PyTorch).",
    "ActivationPatching call layout: pass 1 = clean on td[in_keys] writing td[out_keys] and td['_cache'][path]; "
    "pass 2 = corrupted on td['patched'][in_keys] writing td['patched'][out_keys]. patch_fn is called as "
    "patch_fn(module_key=path, output=<corrupted-pass output>, output_to_patch=<clean capture>); returning None "
    "means 'use output_to_patch'. cache_callback(module, args, output, key, direction) transforms what is "
    "captured (and stored in _cache).",
    "ActivationPatching `_cache` is NOT the clean activation when it differs from the patched value: the capture "
    "hook also runs in the corrupted pass (after the replace hook) and overwrites the same `_cache` entry with the "
    "patched corrupted-pass output (patch_fn_pos1_keep_intermediate).",
    "ActivationPatching / ActivationAddition return a NEW TensorDict (output_is_input_object=false): Patching "
    "returns td.exclude('_cache') (with clean_intermediate_keys=True) while the caller's input still gains "
    "`output`, `patched/output` and `_cache`; Addition returns ONLY {'steer': {...}} with batch_size=[] while the "
    "caller's input gains _positive_out, _positive_cache, _negative_out, _negative_cache. For Addition, "
    "clean_intermediate_keys=False changes nothing in the returned TensorDict.",
    "ActivationAddition: steer[path] = (positive_capture - negative_capture).mean(dim=tuple(range(td.dim()))) -> "
    "[seq, width] for batch_size=[B].",
    "Batch dims: the multi-pass methods call td.flatten() on the input (batch [] becomes [1], inputs gain a "
    "leading 1): patching with batch_size=[] fails ('too many values to unpack' in the tiny attention, TensorDict "
    "'batch dimension mismatch' on gpt2, or 'Dead reference to cache' on shared_mlp -- the capture cache is held "
    "only by a weakref and the flattened/reshaped TensorDict that owned it is gone before pass 2). Addition with "
    "batch_size=[] on shared_mlp 'works' but means over dim=() = ALL dims: the steering vector is a 0-d scalar.",
    "SteeringVectors calls steer_fn(module_key=path, output=<module output>) (keyword names module_key/output) on "
    "EVERY call of the module (shared_mlp/steer_act adds alpha*v at both act calls); returned type must equal the "
    "original output type.",
    "Probing: the `additional_keys` entries of the input TensorDict are passed to Probe.step as keyword arguments "
    "(labels tensor, step_type str stored as NonTensorData); ProbeManager keys estimators '{path}_{direction}'; "
    "step_type 'fit' fits and records fit metrics on the fit set, 'predict' records predict metrics; anything else "
    "raises ValueError. MeanDifferenceClassifier mixes numpy and torch: coef_ is a torch float64 [1, D] tensor, "
    "intercept_ a numpy float64 [1] array; predictions are a torch bool tensor. Probing skips ModuleList/Sequential "
    "by class (classes_to_skip).",
]


def main() -> int:
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    torch.set_num_threads(1)
    assert tdhook.__version__ == "0.3.0", tdhook.__version__
    os.makedirs(OUT_DIR, exist_ok=True)

    print("shared_mlp")
    shared_mlp_cases()
    print("tiny_transformer")
    tiny_transformer_cases()
    print("gpt2_tiny")
    gpt2_cases()

    doc = {
        "generator": "tests/oracle/gen_tdhook.py",
        "versions": {"tdhook": tdhook.__version__, "torch": torch.__version__.split("+")[0],
                     "tensordict": __import__("tensordict").__version__,
                     "transformers": __import__("transformers").__version__, "numpy": np.__version__},
        "conventions": {
            "wrapping": "model is a plain nn.Module; tdhook's prepare(model, in_keys, out_keys) wraps it in "
                        "TensorDictModule(model, in_keys, out_keys); hook paths are relative to the wrapped model "
                        "(the wrapper's attribute 'module') unless relative=False",
            "keys": "in/<k>: input TensorDict snapshot before the call; out/<k>: the TensorDict hm(td) returned; "
                    "'/' joins nested keys (module paths keep their dots: out/cache/layers.0); aux/: auxiliary "
                    "tensors; expected/: plain-PyTorch reference semantics; ctx_cache/: ctx.cache read after "
                    "backward (inside the context); probe/, results/, fit/, predict/: probing",
            "hooked": "tdhook's own HookProgram specs in registration order: module_path as tdhook names it, "
                      "operation (capture | replace | probe | capture_inputs), direction; wrapper_path = path "
                      "from the TensorDictModule wrapper root",
            "error": "present when tdhook raised; the safetensors file then holds only in/ (and aux/) tensors",
        },
        "models": {
            "shared_mlp": {"weights": "shared_mlp/model.safetensors", "input": "x float32[4,6] (key 'input')",
                           "def": "fc1=Linear(6,8), act=Tanh, fc2=Linear(8,8), fc3=Linear(8,3); "
                                  "fc3(act(fc2(act(fc1(x))))); torch.manual_seed(0) default init"},
            "tiny_transformer": {"weights": "tiny_transformer/model.safetensors",
                                 "input": "ids int64[3,5] (key 'input'), vocab 20",
                                 "def": "embed=Embedding(20,16); layers=2x[ln1, attn(q/k/v/o_proj Linear(16,16), 2 "
                                        "heads of 8, causal, scores q@k^T/sqrt(8), -inf mask, softmax), ln2, mlp(up "
                                        "Linear(16,32), GELU erf, down Linear(32,16))], x=x+attn(ln1(x)); "
                                        "x=x+mlp(ln2(x)); norm=LayerNorm(16); head=Linear(16,20). LayerNorm eps "
                                        "1e-5, weights 1+0.1*randn, biases 0.1*randn; torch.manual_seed(1)"},
            "gpt2_tiny": {"weights": "../gpt2_tiny/model.safetensors (+ config.json)",
                          "input": "input_ids int64[2,7] from gpt2_tiny/expected.safetensors (key 'input_ids')",
                          "def": "GPT2LMHeadModel.from_pretrained('tests/oracle/gpt2_tiny', "
                                 "attn_implementation='eager').eval(); TensorDictModule extracts `logits` from "
                                 "the returned CausalLMOutputWithCrossAttentions (out_keys=['logits'])"},
        },
        "quirks": QUIRKS,
        "cases": CASES,
    }
    with open(os.path.join(OUT_DIR, "cases.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")

    total = 0
    for root, _, files in sorted(os.walk(OUT_DIR)):
        for fn in sorted(files):
            p = os.path.join(root, fn)
            total += os.path.getsize(p)
    n_err = sum("error" in c for c in CASES)
    print(f"{len(CASES)} cases ({n_err} with tdhook errors), total {total} bytes")
    digest = hashlib.sha256()
    for root, _, files in sorted(os.walk(OUT_DIR)):
        for fn in sorted(files):
            with open(os.path.join(root, fn), "rb") as f:
                digest.update(fn.encode() + f.read())
    print("content sha256:", digest.hexdigest())
    return 0


if __name__ == "__main__":
    sys.exit(main())
