"""Mamba vs Transformer at equal width and depth (24 layers, d_model 768 by default), on one GPU.

1. Training: forward + backward tokens/s and peak memory at several sequence lengths, bf16
   autocast, the Transformer on ``scaled_dot_product_attention`` (flash attention on H100/H200).
2. Generation: tokens/s of one decoding step, replayed as a CUDA graph, at batch 1 and 64, for
   ``MambaStack.step`` (constant-size state) and a Transformer with a static KV cache filled to
   the given context. Backbones only (no embedding or LM head) on both sides.

Run on the GPU machine (about 4 minutes on an H200):
    python benchmarks/bench_models.py --out benchmarks/results_models_h200.md
A small CPU smoke run (no CUDA graphs, PyTorch kernels):
    python benchmarks/bench_models.py --device cpu --d-model 32 --n-layer 2 --n-head 4 --seqlens 128 \
        --contexts 64 --batches 1 2 --tokens-per-step 256 --out /tmp/bench.md
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from seqmodels import BackboneConfig, MambaStack  # noqa: E402


# ------------------------------------------------------------------------------ the baseline
class AttentionBlock(nn.Module):
    """Pre-norm GPT block: causal self-attention (SDPA) and a 4x GELU MLP."""

    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.norm1, self.norm2 = nn.RMSNorm(d_model), nn.RMSNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model, bias=False), nn.GELU(),
                                 nn.Linear(4 * d_model, d_model, bias=False))

    def split_heads(self, x):  # (batch, seqlen, d_model) -> (batch, n_head, seqlen, d_head)
        b, l, d = x.shape
        return x.view(b, l, self.n_head, d // self.n_head).transpose(1, 2)

    def forward(self, x):
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        att = F.scaled_dot_product_attention(self.split_heads(q), self.split_heads(k), self.split_heads(v),
                                             is_causal=True)  # (batch, n_head, seqlen, d_head)
        x = x + self.proj(att.transpose(1, 2).flatten(2))
        return x + self.mlp(self.norm2(x))

    def decode(self, x, k_cache, v_cache, pos, visible):
        """One token with a static cache: x (batch, 1, d_model); caches (batch, n_head, max_len, d_head)
        written at ``pos`` (a 1-element device tensor, so the step can be replayed as a CUDA graph)."""
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        k_cache.index_copy_(2, pos, self.split_heads(k))
        v_cache.index_copy_(2, pos, self.split_heads(v))
        att = F.scaled_dot_product_attention(self.split_heads(q), k_cache, v_cache, attn_mask=visible)
        x = x + self.proj(att.transpose(1, 2).flatten(2))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    def __init__(self, d_model: int, n_layer: int, n_head: int):
        super().__init__()
        self.layers = nn.ModuleList(AttentionBlock(d_model, n_head) for _ in range(n_layer))
        self.norm_f = nn.RMSNorm(d_model)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.norm_f(x)


# ------------------------------------------------------------------------------ measurement
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats):
    """Median wall time of ``fn`` over ``repeats`` calls (after one warm-up call), in seconds."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_step_fn(model, x, device):
    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model(x)
        out.float().pow(2).mean().backward()
        model.zero_grad(set_to_none=True)
    return step


def measure_training(model, batch, seqlen, d_model, device, repeats):
    """(tokens/s, peak GiB) for forward + backward, or a reason it did not run."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    x = torch.randn(batch, seqlen, d_model, device=device, requires_grad=True)
    try:
        seconds = timed(train_step_fn(model, x, device), device, repeats)
    except torch.cuda.OutOfMemoryError:
        model.zero_grad(set_to_none=True)
        return None, None, "OOM"
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return batch * seqlen / seconds, peak, ""


def graphed(fn, device):
    """Capture ``fn`` (static shapes, in-place state) in a CUDA graph; returns its replay function."""
    if device.type != "cuda":
        return fn
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm up (Triton compilation, cuBLAS workspaces) outside the capture
            fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def measure_mamba_decode(stack, batch, d_model, device, steps):
    states = stack.allocate_inference_cache(batch, 1, dtype=torch.bfloat16)
    token = torch.randn(batch, 1, d_model, device=device, dtype=torch.bfloat16)

    @torch.no_grad()
    def one():
        stack.step(token, states)

    replay = graphed(one, device)
    seconds = timed(lambda: [replay() for _ in range(steps)], device, 3)
    return batch * steps / seconds


def measure_transformer_decode(model, batch, context, d_model, n_head, device, steps):
    """The cache holds ``context`` earlier tokens (random: the cost does not depend on their values);
    each replay attends over the whole static cache with a mask, as CUDA-graphed decoders do."""
    max_len = context + 1
    d_head = d_model // n_head
    caches = [(torch.randn(batch, n_head, max_len, d_head, device=device, dtype=torch.bfloat16),
               torch.randn(batch, n_head, max_len, d_head, device=device, dtype=torch.bfloat16))
              for _ in model.layers]
    pos = torch.tensor([context], device=device)
    visible = torch.ones(1, 1, 1, max_len, dtype=torch.bool, device=device)
    token = torch.randn(batch, 1, d_model, device=device, dtype=torch.bfloat16)

    @torch.no_grad()
    def one():
        x = token
        for layer, (k, v) in zip(model.layers, caches):
            x = layer.decode(x, k, v, pos, visible)
        model.norm_f(x)

    replay = graphed(one, device)
    seconds = timed(lambda: [replay() for _ in range(steps)], device, 3)
    return batch * steps / seconds


# ------------------------------------------------------------------------------ main
def fmt(value, spec):
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="markdown file to write")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--n-layer", type=int, default=24)
    parser.add_argument("--n-head", type=int, default=12)
    parser.add_argument("--seqlens", type=int, nargs="+", default=[2048, 8192, 32768, 131072])
    parser.add_argument("--tokens-per-step", type=int, default=32768, help="batch = max(1, this / seqlen)")
    parser.add_argument("--contexts", type=int, nargs="+", default=[2048, 16384])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--decode-steps", type=int, default=32, help="graph replays per timing")
    parser.add_argument("--budget-s", type=float, default=200.0, help="skip what would start after this")
    args = parser.parse_args(argv)
    if args.d_model % args.n_head:
        parser.error(f"--d-model {args.d_model} is not divisible by --n-head {args.n_head}")

    device = torch.device(args.device)
    torch.manual_seed(0)
    began = time.perf_counter()
    over_budget = lambda: time.perf_counter() - began > args.budget_s
    mamba = MambaStack(BackboneConfig(d_model=args.d_model, n_layer=args.n_layer)).to(device)
    transformer = Transformer(args.d_model, args.n_layer, args.n_head).to(device)
    n_mamba = sum(p.numel() for p in mamba.parameters()) / 1e6
    n_tf = sum(p.numel() for p in transformer.parameters()) / 1e6
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"

    lines = [f"### Mamba vs Transformer, {args.n_layer} layers, d_model {args.d_model} ({device_name})", "",
             f"Mamba {n_mamba:.1f}M parameters, Transformer {n_tf:.1f}M ({args.n_head} heads, SDPA). "
             f"torch {torch.__version__}.", "",
             "Training (forward + backward, bf16 autocast, median of 3 steps after 1 warm-up; "
             "128k: median of 1):", "",
             "| seqlen | batch | Mamba tokens/s | Mamba peak GiB | Transformer tokens/s | Transformer peak GiB | "
             "speed-up |", "|---|---|---|---|---|---|---|"]
    for seqlen in args.seqlens:
        batch = max(1, args.tokens_per_step // seqlen)
        row = []
        for model in (mamba, transformer):
            if over_budget():
                row.append((None, None, "skipped (time)"))
                continue
            repeats = 1 if seqlen >= 131072 else 3
            result = measure_training(model, batch, seqlen, args.d_model, device, repeats)
            if result[2] == "OOM" and model is mamba:  # retry with activation checkpointing per layer
                mamba.config.checkpointing = True
                result = measure_training(model, batch, seqlen, args.d_model, device, repeats)
                mamba.config.checkpointing = False
                result = result[:2] + ("(checkpointed)" if not result[2] else "OOM",)
            row.append(result)
        (m_tps, m_mem, m_note), (t_tps, t_mem, t_note) = row
        ratio = f"{m_tps / t_tps:.2f}x" if m_tps and t_tps else "–"
        lines.append(f"| {seqlen} | {batch} | {fmt(m_tps, ',.0f')} {m_note} | {fmt(m_mem, '.1f')} | "
                     f"{fmt(t_tps, ',.0f')} {t_note} | {fmt(t_mem, '.1f')} | {ratio} |")
        print(lines[-1], flush=True)

    mamba.to(torch.bfloat16)
    transformer.to(torch.bfloat16)
    graphs = "CUDA graph per step" if device.type == "cuda" else "no CUDA graphs (CPU)"
    lines += ["", f"Generation (one token per sequence per step, bf16, {graphs}, "
                  f"median of 3 runs of {args.decode_steps} steps):", "",
              "| batch | context | Mamba tokens/s | Transformer tokens/s | speed-up |", "|---|---|---|---|---|"]
    for batch in args.batches:
        m_tps = None if over_budget() else measure_mamba_decode(mamba, batch, args.d_model, device,
                                                                 args.decode_steps)
        for context in args.contexts:
            note = ""
            t_tps = None
            if over_budget():
                note = "skipped (time)"
            else:
                try:
                    t_tps = measure_transformer_decode(transformer, batch, context, args.d_model, args.n_head,
                                                       device, args.decode_steps)
                except torch.cuda.OutOfMemoryError:
                    note = "OOM"
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            ratio = f"{m_tps / t_tps:.2f}x" if m_tps and t_tps else "–"
            lines.append(f"| {batch} | {context} | {fmt(m_tps, ',.0f')} | {fmt(t_tps, ',.0f')} {note} | {ratio} |")
            print(lines[-1], flush=True)
    lines += ["", f"Mamba's step does not depend on the context (its state has a fixed size). "
                  f"Total time {time.perf_counter() - began:.0f} s.", ""]
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
