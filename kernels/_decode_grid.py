"""Launch shape of the two decoding-step kernels (state update and conv update).

A decoding step moves a few hundred KB and is latency-bound: what matters is that every SM gets
programs (so their memory round trips overlap) and that each program is small (one or two warps
reach their loads quickly). Both kernels give one program a block of channels with the whole
per-channel row (the dstate row, or the conv window) in registers.
"""

from __future__ import annotations

import functools

import torch

# Elements per program: one warp holding 8 fp32 per thread (two 16-byte vectors).
TARGET_ELEMENTS = 256
# Below this many programs per SM (at batch 1, say) blocks are halved to spread the step out.
MIN_PROGRAMS_PER_SM = 2
# SMs assumed off the GPU (Triton's interpreter): the H200's, so CPU tests run the GPU's grid.
DEFAULT_SMS = 132


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@functools.lru_cache(maxsize=16)
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of ``device`` (cached: no driver call per decoding step)."""
    if device.type == "cuda":
        return _cuda_sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return DEFAULT_SMS


def decode_block(batch: int, dim: int, row: int, n_sm: int) -> tuple[int, int]:
    """(BLOCK_D, num_warps) for a grid of (batch, cdiv(dim, BLOCK_D)) programs that each hold
    BLOCK_D channels times ``row`` elements (a power of two)."""
    block_d = max(1, min(_next_pow2(dim), TARGET_ELEMENTS // row))
    while block_d > 1 and batch * -(-dim // block_d) < MIN_PROGRAMS_PER_SM * n_sm:
        block_d //= 2
    elements = block_d * row
    num_warps = 1 if elements <= 256 else 2 if elements <= 512 else 4
    return block_d, num_warps
