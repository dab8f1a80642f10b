#!/usr/bin/env python3
"""Side by side: Python tdhook 0.3.0 (torch, CPU) against this library (the `compare` bench).

Run through ``scripts/compare-python.sh`` (it makes the venv and builds the Rust side); by hand:

    .venv-bench/bin/python scripts/bench_python.py --rust-bin target/release/deps/compare-<hash>

What it does, in one process that is side A and drives side B (the Rust ``compare`` binary in
``--serve`` mode, a child process speaking one line per command):

1. Exports random weights: a seeded HF ``GPT2LMHeadModel`` of each shape (tiny: 2 layers, d 64,
   4 heads, vocab 101, batch 4 x 16; gpt2_small: 12 layers, 768, 12 heads, vocab 50257, batch
   1 x 128) saved with ``save_pretrained`` into a work dir, plus the inputs (clean, corrupted,
   positive, negative ids) and what Python tdhook returns for each workload. Both sides load that
   folder (Python with ``attn_implementation="eager"``, Rust with ``Gpt2::load``); the Rust side
   checks its logits, cache, patched and steered outputs and steering vector against Python's.
2. For each thread count N (``torch.set_num_threads(N)`` here, ``RAYON_NUM_THREADS=N`` there) and
   each workload: warm-up on both sides, then ``--rounds`` alternations of a timed batch of
   iterations on A and on B (the order flips every round so drift hits both alike). Reports the
   median per-iteration time of each side and the ratio Python / Rust.
   Workloads: ``forward`` (no hooks), ``cache_all`` (every block, ``transformer\\.h\\.\\d+``),
   ``patch_one`` (block 0; two passes), ``steer_one`` (block 0: ``out + v``), ``add_one``
   (ActivationAddition at block 0; two passes). ``_ctx``: Python calls ``hm(td)`` inside an
   already entered ``with`` / Rust runs an already prepared method; ``_whole``: Python's whole
   ``with X.prepare(...) as hm: hm(td)`` / Rust's ``prepare(&model)?.run(&td)``.
3. Probes: last-token outputs of the 12 blocks of the gpt2_small-shaped model on 3000 random
   sequences, z-scored, with a learnable synthetic label (see ``make_probe_data``): scikit-learn
   ``LogisticRegression`` (lbfgs; C = 1, its default, and C = 0.001, which generalises better
   here) fitted per layer against ``train_logistic_probes`` (all 12 at once, same objective and
   stopping rule), the same trainer one layer at a time, tdhook's own ``LogisticRegression``
   estimator and torch LBFGS on the batched problem; held-out accuracies.
4. Memory: a fresh Rust process caching every block output of gpt2_small for one batch: peak RSS
   against the bytes of the cached tensors plus the model.

Prints markdown tables and writes everything to ``--out`` (JSON).
"""

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from safetensors.torch import save_file
from tensordict import TensorDict

import tdhook
from tdhook.latent import ActivationAddition, ActivationCaching, ActivationPatching, SteeringVectors

PREP = {"in_keys": ["input_ids"], "out_keys": ["logits"]}
BLOCKS = r"transformer\.h\.\d+$"  # tdhook matches with re.match (a prefix match): anchor it
ONE = ["transformer.h.0"]
STEER_ALPHA = 0.5

SHAPES = {
    # name: (GPT2Config kwargs, batch, seq, seed)
    "tiny": (dict(vocab_size=101, n_positions=32, n_embd=64, n_layer=2, n_head=4), 4, 16, 11),
    "gpt2_small": (dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12), 1, 128, 12),
}

# (workload, passes per iteration)
WORKLOADS = [
    ("forward", 1),
    ("cache_all_ctx", 1),
    ("cache_all_whole", 1),
    ("patch_one_ctx", 2),
    ("patch_one_whole", 2),
    ("steer_one_ctx", 1),
    ("steer_one_whole", 1),
    ("add_one_ctx", 2),
    ("add_one_whole", 2),
]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def export_shape(name, root):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg_kwargs, b, t, seed = SHAPES[name]
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(seed)
    special = min(50256, cfg_kwargs["vocab_size"] - 1)
    cfg = GPT2Config(**cfg_kwargs, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=special,
                     eos_token_id=special)
    model = GPT2LMHeadModel(cfg).eval()
    model.save_pretrained(d, safe_serialization=True)
    del model
    gen = torch.Generator().manual_seed(seed + 100)
    v = cfg_kwargs["vocab_size"]
    inputs = {k: torch.randint(0, v, (b, t), generator=gen) for k in ("input", "corrupted", "positive", "negative")}
    inputs["steer_v"] = torch.randn(cfg_kwargs["n_embd"], generator=gen) * STEER_ALPHA
    save_file({k: x.contiguous() for k, x in inputs.items()}, os.path.join(d, "inputs.safetensors"))
    model = GPT2LMHeadModel.from_pretrained(d, attn_implementation="eager").eval()
    model.config.use_cache = False  # no KV cache: the Rust forward keeps none either
    return Side(name, d, model, inputs, cfg_kwargs["n_layer"])


class Side:
    """Side A for one shape: the HF model, its inputs and the tdhook workloads."""

    def __init__(self, name, d, model, inputs, n_layer):
        self.name, self.dir, self.model, self.inputs, self.n_layer = name, d, model, inputs, n_layer
        self.ctx = {}
        v = inputs["steer_v"]

        def steer_fn(module_key, output):
            return output + v

        self.steer_fn = steer_fn

    def td(self, kind):
        i = self.inputs
        b = i["input"].shape[0]
        if kind == "plain":
            return TensorDict({"input_ids": i["input"].clone()}, batch_size=[b])
        if kind == "patch":
            return TensorDict({"input_ids": i["input"].clone(), ("patched", "input_ids"): i["corrupted"].clone()},
                              batch_size=[b])
        if kind == "add":
            return TensorDict({("positive", "input_ids"): i["positive"].clone(),
                               ("negative", "input_ids"): i["negative"].clone()}, batch_size=[b])
        raise ValueError(kind)

    def factory(self, method):
        if method == "cache_all":
            return ActivationCaching(key_pattern=BLOCKS), "plain"
        if method == "patch_one":
            return ActivationPatching(modules_to_patch=ONE), "patch"
        if method == "steer_one":
            return SteeringVectors(modules_to_steer=ONE, steer_fn=self.steer_fn), "steer"
        if method == "add_one":
            return ActivationAddition(modules_to_steer=ONE), "add"
        raise ValueError(method)

    def callable_for(self, workload):
        """A zero-argument function running one iteration of `workload`."""
        model = self.model
        if workload == "forward":
            ids = self.inputs["input"]
            return lambda: model(input_ids=ids).logits
        method, mode = workload.rsplit("_", 1)
        factory, kind = self.factory(method)
        kind = "plain" if kind == "steer" else kind
        if mode == "ctx":
            ctx = factory.prepare(model, **PREP)
            hm = ctx.__enter__()
            self.ctx[workload] = ctx
            return lambda: hm(self.td(kind))

        def whole():
            with factory.prepare(model, **PREP) as hm:
                return hm(self.td(kind))

        return whole

    def close(self):
        for ctx in self.ctx.values():
            ctx.__exit__(None, None, None)
        self.ctx.clear()

    def expected(self):
        """What Python tdhook returns, for the Rust side's equality check."""
        out = {}
        with torch.no_grad():
            out["forward/logits"] = self.model(input_ids=self.inputs["input"]).logits
            r = self.callable_for("cache_all_whole")()
            for i in range(self.n_layer):
                out[f"cache/transformer.h.{i}"] = r["cache", f"transformer.h.{i}"]
            out["cache/logits"] = r["logits"]
            r = self.callable_for("patch_one_whole")()
            out["patch/logits"] = r["logits"]
            out["patch/patched_logits"] = r["patched", "logits"]
            r = self.callable_for("steer_one_whole")()
            out["steer/logits"] = r["logits"]
            r = self.callable_for("add_one_whole")()
            out["add/steer"] = r["steer", ONE[0]]
        save_file({k: v.detach().contiguous() for k, v in out.items()}, os.path.join(self.dir, "expected.safetensors"))


# --------------------------------------------------------------------------------------------
# Side B
# --------------------------------------------------------------------------------------------


class Rust:
    def __init__(self, binary, threads, default_pool=False):
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        argv = [binary, "--serve"] + (["--default-pool"] if default_pool else [])
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True, bufsize=1)
        hello = self.read()
        assert hello.get("ready"), hello

    def read(self):
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"the Rust side exited (code {self.p.poll()})")
        msg = json.loads(line)
        if "error" in msg:
            raise RuntimeError("Rust side: " + msg["error"])
        return msg

    def cmd(self, *words):
        self.p.stdin.write(" ".join(str(w) for w in words) + "\n")
        self.p.stdin.flush()
        return self.read()

    def close(self):
        try:
            self.cmd("quit")
        except Exception:  # noqa: BLE001
            pass
        self.p.wait(timeout=30)


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def time_python(fn, iters):
    ts = []
    with torch.no_grad():
        for _ in range(iters):
            t0 = time.perf_counter()
            r = fn()
            del r
            ts.append(time.perf_counter() - t0)
    return ts


PAUSE = 0.05  # let the other side's worker threads go to sleep before timing


def bench_workloads(side, rust, threads, rounds, iters, warmup, only=None, pool=None):
    """Alternates Python ("py"), Rust ("rs") and, if given, Rust with its main thread outside rayon's pool ("rp")."""
    rows = []
    for workload, passes in WORKLOADS:
        if only and workload not in only and workload != "forward":
            continue
        fn = side.callable_for(workload)
        time_python(fn, warmup)
        rust.cmd("time", side.name, workload, warmup)
        if pool is not None:
            pool.cmd("time", side.name, workload, warmup)
        py, rs, rp, round_ratios = [], [], [], []
        arms = ["py", "rs"] + (["rp"] if pool is not None else [])
        for r in range(rounds):
            order = arms[r % len(arms):] + arms[:r % len(arms)]
            if r % 2 == 1:
                order = order[::-1]
            got = {}
            for who in order:
                time.sleep(PAUSE)
                if who == "py":
                    got["py"] = time_python(fn, iters)
                elif who == "rs":
                    got["rs"] = rust.cmd("time", side.name, workload, iters)["times"]
                else:
                    got["rp"] = pool.cmd("time", side.name, workload, iters)["times"]
            py += got["py"]
            rs += got["rs"]
            rp += got.get("rp", [])
            round_ratios.append(statistics.median(got["py"]) / statistics.median(got["rs"]))
        side.close()
        gc.collect()
        row = dict(shape=side.name, threads=threads, workload=workload, passes=passes, rounds=rounds, iters=iters,
                   py_median=statistics.median(py), rs_median=statistics.median(rs),
                   round_ratio_min=min(round_ratios), round_ratio_max=max(round_ratios))
        row["ratio"] = row["py_median"] / row["rs_median"]
        if rp:
            row["rp_median"] = statistics.median(rp)
            row["ratio_pool"] = row["py_median"] / row["rp_median"]
        rows.append(row)
        log(f"  [{side.name} N={threads}] {workload:17s} python {fmt(row['py_median'])}  rust {fmt(row['rs_median'])}"
            f"  python/rust {row['ratio']:.2f} (rounds {min(round_ratios):.2f}-{max(round_ratios):.2f})"
            + (f"; rust outside the pool {fmt(row['rp_median'])}, python/that {row['ratio_pool']:.2f}" if rp else ""))
    if not rows:
        return rows
    fwd = next(r for r in rows if r["workload"] == "forward")
    for r in rows:
        r["py_x_fwd"] = r["py_median"] / (r["passes"] * fwd["py_median"])
        r["rs_x_fwd"] = r["rs_median"] / (r["passes"] * fwd["rs_median"])
        if "rp_median" in r:
            r["rp_x_fwd"] = r["rp_median"] / (r["passes"] * fwd["rp_median"])
    return rows


def fmt(s):
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms" if s < 0.1 else f"{s * 1e3:.0f} ms"
    return f"{s * 1e6:.0f} µs"


# --------------------------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------------------------

PROBE_TRAIN, PROBE_TEST, PROBE_SEQ, PROBE_LAYER, PROBE_PCS, PROBE_FLIP = 2000, 1000, 6, 6, 8, 0.08


def make_probe_data(side, path):
    """Last-token outputs of every block on random token sequences, z-scored with the training
    rows' statistics. The label is learnable by construction: the sign of a random direction in
    the span of the top PROBE_PCS principal directions of block PROBE_LAYER's (z-scored) output,
    split at the median, with PROBE_FLIP of the labels
    flipped (held-out accuracy peaks near 1 - PROBE_FLIP there and falls off with the distance to
    that block). Random weights carry no natural concept to probe for."""
    model = side.model
    n = PROBE_TRAIN + PROBE_TEST
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(0, model.config.vocab_size, (n, PROBE_SEQ), generator=gen)
    acts = [[] for _ in range(side.n_layer)]
    hooks = []
    for i, block in enumerate(model.transformer.h):
        def hook(mod, args, out, i=i):
            out = out[0] if isinstance(out, tuple) else out
            acts[i].append(out[:, -1, :].detach().clone())

        hooks.append(block.register_forward_hook(hook))
    with torch.no_grad():
        for s in range(0, n, 250):
            model.transformer(input_ids=ids[s:s + 250])
    for h in hooks:
        h.remove()
    x = torch.stack([torch.cat(a) for a in acts])  # [K, n, D]
    mu = x[:, :PROBE_TRAIN].mean(1, keepdim=True)
    sd = x[:, :PROBE_TRAIN].std(1, keepdim=True).clamp_min(1e-6)
    x = (x - mu) / sd
    # A random direction in the span of block PROBE_LAYER's top principal directions: a concept
    # the activations carry strongly (a random direction of all 768 would need far more samples).
    _, _, v = torch.linalg.svd(x[PROBE_LAYER, :PROBE_TRAIN], full_matrices=False)
    u = v[:PROBE_PCS].T @ torch.randn(PROBE_PCS, generator=gen)
    score = x[PROBE_LAYER] @ u
    y = (score > score[:PROBE_TRAIN].median()).long()
    flip = torch.rand(n, generator=gen) < PROBE_FLIP
    y = torch.where(flip, 1 - y, y)
    data = {"x_train": x[:, :PROBE_TRAIN].float().contiguous(), "x_test": x[:, PROBE_TRAIN:].float().contiguous(),
            "y_train": y[:PROBE_TRAIN].to(torch.uint8).contiguous(),
            "y_test": y[PROBE_TRAIN:].to(torch.uint8).contiguous()}
    save_file(data, path)
    return {k: v.numpy() for k, v in data.items()}


def sklearn_probes(data, threads, c):
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    k = data["x_train"].shape[0]
    accs, iters = [], []
    with threadpool_limits(limits=threads):
        t0 = time.perf_counter()
        for layer in range(k):
            clf = LogisticRegression(C=c, solver="lbfgs", max_iter=1000, tol=1e-4)
            clf.fit(data["x_train"][layer], data["y_train"])
            accs.append(float(clf.score(data["x_test"][layer], data["y_test"])))
            iters.append(int(clf.n_iter_[0]))
        elapsed = time.perf_counter() - t0
    return elapsed, accs, iters


def torch_lbfgs_probes(data, threads, c):
    """The batched problem [K, N, D] with torch.optim.LBFGS (DESIGN's other Python reference)."""
    x = torch.from_numpy(data["x_train"])
    y = torch.from_numpy(data["y_train"]).float()
    k, n, d = x.shape
    lam = 1.0 / (c * n)  # sklearn's C on the mean loss
    w = torch.zeros(k, d, requires_grad=True)
    b = torch.zeros(k, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=1000, tolerance_grad=1e-4, tolerance_change=1e-12, history_size=10,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        z = torch.einsum("knd,kd->kn", x, w) + b[:, None]
        loss = (torch.nn.functional.softplus(z) - y * z).mean(1).sum() + 0.5 * lam * (w * w).sum()
        loss.backward()
        return loss

    t0 = time.perf_counter()
    with torch.enable_grad():
        opt.step(closure)
    elapsed = time.perf_counter() - t0
    with torch.no_grad():
        xt = torch.from_numpy(data["x_test"])
        pred = (torch.einsum("knd,kd->kn", xt, w) + b[:, None]) > 0
        accs = (pred == torch.from_numpy(data["y_test"]).bool()).float().mean(1).tolist()
    return elapsed, accs


def bench_probes(rust, data, path, threads, rounds, c):
    sk_t, rs_b, rs_l = [], [], []
    res = {"C": c}
    rust.cmd("probe_load", path)
    rust.cmd("probe", "batched", c)  # warm-up
    for r in range(rounds):
        order = ("sk", "rs") if r % 2 == 0 else ("rs", "sk")
        for who in order:
            time.sleep(PAUSE)
            if who == "sk":
                t, accs, iters = sklearn_probes(data, threads, c)
                sk_t.append(t)
                res["sk_acc"], res["sk_iters"] = accs, iters
            else:
                b = rust.cmd("probe", "batched", c)
                rs_b.append(b["seconds"])
                res["rs_acc"], res["rs_iters"] = b["test_acc"], b["iterations"]
                res["rs_converged"] = b["converged"]
                l1 = rust.cmd("probe", "per_layer", c)
                rs_l.append(l1["seconds"])
                res["rs_loop_acc"] = l1["test_acc"]
    torch.set_num_threads(threads)
    tl_t, tl_acc = torch_lbfgs_probes(data, threads, c)
    est = rust.cmd("probe", "estimator", c)
    res.update(threads=threads, rounds=rounds, sk_median=statistics.median(sk_t), rs_batched_median=statistics.median(rs_b),
               rs_per_layer_median=statistics.median(rs_l), torch_lbfgs=tl_t, torch_lbfgs_acc=tl_acc,
               rs_estimator=est["seconds"], rs_estimator_acc=est["test_acc"])
    res["speedup_vs_sklearn"] = res["sk_median"] / res["rs_batched_median"]
    res["max_acc_gap"] = max(abs(a - b) for a, b in zip(res["sk_acc"], res["rs_acc"]))
    log(f"  [probes N={threads} C={c}] sklearn {res['sk_median']:.3f} s, ours batched {res['rs_batched_median']:.3f} s "
        f"({res['speedup_vs_sklearn']:.1f}x), per layer {res['rs_per_layer_median']:.3f} s, torch LBFGS "
        f"{tl_t:.3f} s, tdhook LogisticRegression {est['seconds']:.3f} s; max acc gap {res['max_acc_gap']:.4f}")
    return res


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def report(results):
    out = []
    p = out.append
    p(f"versions: tdhook {tdhook.__version__}, torch {torch.__version__}, "
      f"transformers {__import__('transformers').__version__}, tensordict {__import__('tensordict').__version__}, "
      f"scikit-learn {__import__('sklearn').__version__}")
    p("")
    p("| shape | threads | workload | Python tdhook (median) | Rust (median) | Python / Rust | Python × fwd | "
      "Rust × fwd | per-round ratio [min, max] | Rust, main thread outside the pool | Python / that |")
    p("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results["workloads"]:
        pool = (f"{fmt(r['rp_median'])} ({r['rp_x_fwd']:.3f} × fwd) | {r['ratio_pool']:.2f}" if "rp_median" in r
                else "– | –")
        p(f"| {r['shape']} | {r['threads']} | {r['workload']} | {fmt(r['py_median'])} | {fmt(r['rs_median'])} | "
          f"**{r['ratio']:.2f}** | {r['py_x_fwd']:.3f} | {r['rs_x_fwd']:.3f} | "
          f"[{r['round_ratio_min']:.2f}, {r['round_ratio_max']:.2f}] | {pool} |")
    p("")
    if results.get("probes"):
        p("| threads | C | scikit-learn lbfgs, 12 layers one by one | ours, 12 batched | speed-up | ours, one layer "
          "at a time | torch LBFGS batched | tdhook LogisticRegression (Newton) per layer | held-out acc. sklearn "
          "(mean, range) | ours | max per-layer gap |")
        p("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in results["probes"]:
            sk, rs = r["sk_acc"], r["rs_acc"]
            p(f"| {r['threads']} | {r['C']:g} | {r['sk_median']:.3f} s | {r['rs_batched_median']:.3f} s | "
              f"**{r['speedup_vs_sklearn']:.1f}×** | {r['rs_per_layer_median']:.3f} s | {r['torch_lbfgs']:.3f} s | "
              f"{r['rs_estimator']:.3f} s | {statistics.mean(sk):.4f} ({min(sk):.3f}–{max(sk):.3f}) | "
              f"{statistics.mean(rs):.4f} ({min(rs):.3f}–{max(rs):.3f}) | {100 * r['max_acc_gap']:.2f} pt |")
        p("")
    if results.get("rust_cache_vs_forward"):
        p("Rust alone, forward against cache-all-blocks (prepared), interleaved in one process:")
        p("")
        p("| shape | threads | runs on | rounds × iters | forward | cache_all_ctx | ratio | "
          "per-round ratio median [min, max] |")
        p("|---|---|---|---|---|---|---|---|")
        for r in results["rust_cache_vs_forward"]:
            p(f"| {r['shape']} | {r['threads']} | {r['where']} | {r['rounds']} × {r['iters']} | {fmt(r['a_median'])} | "
              f"{fmt(r['b_median'])} | **{r['ratio']:.4f}** | {r['round_ratio_median']:.4f} "
              f"[{r['round_ratio_min']:.3f}, {r['round_ratio_max']:.3f}] |")
        p("")
    if results.get("memory"):
        m = results["memory"]
        mib = 1 << 20
        p(f"memory (gpt2_small, batch {m['batch']}×{m['seq']}, caching all 12 block outputs, "
          f"RAYON_NUM_THREADS={m['threads']}): model {m['model_bytes'] / mib:.1f} MiB, cached tensors "
          f"{m['cache_bytes'] / mib:.2f} MiB, logits {m['output_bytes'] / mib:.1f} MiB; "
          f"RSS before load {m['rss_start_kib'] / 1024:.1f} MiB, peak during load {m['hwm_load_kib'] / 1024:.1f} MiB, "
          f"RSS after load {m['rss_loaded_kib'] / 1024:.1f} MiB, peak while caching (peak counter reset after load) "
          f"{m['hwm_run_kib'] / 1024:.1f} MiB, process peak {m['hwm_process_kib'] / 1024:.1f} MiB. "
          f"Ratios to (cache + model): caching peak {m['ratio_run']:.3f}, process peak {m['ratio_process']:.3f}; "
          f"to (cache + model + logits): caching peak {m['ratio_run_with_output']:.3f}.")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rust-bin", required=True, help="the compare bench binary (built with `cargo bench -p tdhook-suite --no-run`)")
    ap.add_argument("--threads", default="2,1", help="comma-separated thread counts (default 2,1)")
    ap.add_argument("--rounds", type=int, default=5, help="A/B alternations per workload (default 5)")
    ap.add_argument("--iters-tiny", type=int, default=60, help="iterations per timed batch, tiny (default 60)")
    ap.add_argument("--iters-small", type=int, default=2, help="iterations per timed batch, gpt2_small (default 2)")
    ap.add_argument("--probe-rounds", type=int, default=3)
    ap.add_argument("--probe-c", default="1,0.001", help="scikit-learn C values to fit at (default 1,0.001)")
    ap.add_argument("--shapes", default="tiny,gpt2_small")
    ap.add_argument("--workloads", default="", help="comma-separated subset (forward always runs); "
                    "'none' runs no workload")
    ap.add_argument("--no-probes", action="store_true")
    ap.add_argument("--no-pool", action="store_true", help="skip the tiny model's Rust-outside-the-pool arm")
    ap.add_argument("--ab-rounds", type=int, default=16,
                    help="rounds of Rust forward vs cache_all_ctx interleaved in one process (0: skip)")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--workdir", default=None, help="where the weights go (default: a temp dir, removed after)")
    ap.add_argument("--out", default=None, help="write the results (JSON) here")
    args = ap.parse_args()

    tmp = None
    root = args.workdir
    if root is None:
        tmp = tempfile.TemporaryDirectory(prefix="tdhook-compare-")
        root = tmp.name
    os.makedirs(root, exist_ok=True)
    shapes = [s for s in args.shapes.split(",") if s]
    threads = [int(t) for t in args.threads.split(",")]
    torch.manual_seed(0)
    t_start = time.perf_counter()

    log("== export (seeded HF GPT-2, save_pretrained)")
    sides = {}
    for name in shapes:
        torch.set_num_threads(max(threads))
        sides[name] = export_shape(name, root)
        sides[name].expected()
        log(f"  {name}: {sides[name].dir}")
    probe_path = os.path.join(root, "probe.safetensors")
    data = None
    if not args.no_probes and "gpt2_small" in sides:
        t0 = time.perf_counter()
        data = make_probe_data(sides["gpt2_small"], probe_path)
        log(f"  probe data: {data['x_train'].shape} train, {data['x_test'].shape} test "
            f"({time.perf_counter() - t0:.1f} s)")

    results = {"workloads": [], "probes": [], "memory": None, "rust_cache_vs_forward": [],
               "versions": {"tdhook": tdhook.__version__, "torch": torch.__version__}}
    for n in threads:
        torch.set_num_threads(n)
        log(f"== threads {n}: torch.set_num_threads({n}), RAYON_NUM_THREADS={n}")
        rust = Rust(args.rust_bin, n)
        # The Rust side's main thread joins rayon's pool (tdhook::threads::use_current_thread, as
        # README recommends). For the tiny model a second Rust process skips that
        # (`--default-pool`): every candle op then hops from the main thread to the pool and back.
        pool = Rust(args.rust_bin, n, default_pool=True) if "tiny" in shapes and not args.no_pool else None
        try:
            for name in shapes:
                side = sides[name]
                chk = rust.cmd("load", name, side.dir)
                log(f"  {name}: Rust loaded it; max |Rust - Python tdhook| over logits, caches, patched and steered "
                    f"outputs and the steering vector: {chk['max_abs_diff']:.2e} ({chk['worst']})")
                if chk["max_abs_diff"] > 2e-3:
                    raise SystemExit(f"{name}: Rust and Python disagree ({chk})")
                iters = args.iters_tiny if name == "tiny" else args.iters_small
                warm = max(3, iters // 4) if name == "tiny" else 1
                side_pool = pool if name == "tiny" else None
                if side_pool is not None:
                    side_pool.cmd("load", name, side.dir)
                if args.workloads != "none":
                    only = [w for w in args.workloads.split(",") if w]
                    results["workloads"] += bench_workloads(side, rust, n, args.rounds, iters, warm, only, side_pool)
                if args.ab_rounds > 0:
                    ab_iters = 40 if name == "tiny" else 2
                    for where, server in (("main thread in the pool", rust), ("main thread outside the pool", side_pool)):
                        if server is None:
                            continue
                        r = server.cmd("ab", name, "forward", "cache_all_ctx", args.ab_rounds, ab_iters)
                        r.update(shape=name, threads=n, where=where)
                        results["rust_cache_vs_forward"].append(r)
                        log(f"  [{name} N={n}] Rust alone ({where}), interleaved: forward {fmt(r['a_median'])}, "
                            f"cache_all_ctx {fmt(r['b_median'])}: ratio {r['ratio']:.4f} (per round "
                            f"{r['round_ratio_min']:.3f}-{r['round_ratio_max']:.3f})")
            if data is not None:
                for c in [float(v) for v in args.probe_c.split(",") if v]:
                    results["probes"].append(bench_probes(rust, data, probe_path, n, args.probe_rounds, c))
        finally:
            rust.close()
            if pool is not None:
                pool.close()

    if not args.no_memory and "gpt2_small" in sides:
        log("== memory (fresh Rust process)")
        env = dict(os.environ, RAYON_NUM_THREADS=str(max(threads)))
        out = subprocess.run([args.rust_bin, "--mem", sides["gpt2_small"].dir], env=env, check=True,
                             capture_output=True, text=True).stdout
        results["memory"] = json.loads(out.strip().splitlines()[-1])
        results["memory"]["threads"] = max(threads)

    results["seconds"] = time.perf_counter() - t_start
    text = report(results)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    log(f"total {results['seconds']:.0f} s")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
