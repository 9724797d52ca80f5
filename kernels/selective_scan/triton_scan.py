"""Selective scan on Triton: launchers and the ``autograd.Function`` around the kernels.

The forward kernel (``triton_fwd.py``) reads every input once, keeps the state on chip and stores
only the state at each chunk start; the backward kernel recomputes states from those, with the
same chunk: ``triton_bwd.py`` ("v1", (T, N, BLOCK_D) tiles), ``triton_bwd_v2.py`` ("v2", the
forward's layout; "v3", the same kernel reading the output before the gate, which the forward then
stores, instead of recomputing it) or ``triton_bwd_v4.py`` ("v4", v3's math with the in-chunk scans
as in-lane folds: the GPU default), chosen by ``ScanConfig.bwd_kernel``. Gradients flow to every
input, to ``initial_state`` and through the returned last state.
With ``ScanConfig.bwd_segments`` > 1 the v2-v4 backward is sequence-parallel: a pre-pass
(``triton_bwd_seg.py``) summarises each segment so that every segment's programs start from the
right adjoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

import torch
import triton

from .._checks import scan_shapes
from .triton_bwd import scan_bwd_kernel
from .triton_bwd_seg import scan_bwd_seg_kernel
from .triton_bwd_v2 import scan_bwd_v2_kernel
from .triton_bwd_v4 import scan_bwd_v4_kernel
from .triton_common import BC_GROUP_TILE, BC_INVARIANT, BC_PER_CHANNEL
from .triton_fwd import scan_fwd_kernel

BWD_KERNELS = ("v1", "v2", "v3", "v4")


@dataclasses.dataclass(frozen=True)
class ScanConfig:
    """Launch parameters: channels per program, time steps per chunk, warps per program, and
    whether B and C are converted to fp32 once before the kernels (else each thread converts).

    The backward restarts from the forward's per-chunk states, with a chunk of ``bwd_chunk_factor``
    forward chunks (v2-v4; 1 for v1), and its own channels per program; ``bwd_kernel`` picks "v1"
    (``triton_bwd.py``, always one warp), "v2" (``triton_bwd_v2.py``, ``bwd_num_warps`` warps),
    "v3" (v2 with the forward storing the output before the gate when z is given and gradients are
    needed: one more (batch, dim, seqlen) write in u's dtype, one recompute pass less) or "v4"
    (``triton_bwd_v4.py``: v3's math with the two in-chunk scans as in-lane folds, fewer live
    registers; even backward chunks). ``bwd_bc_partials`` (v2-v4): per-program dB / dC channel
    sums stored and summed by torch instead of atomics, where B / C are shared by every channel of
    a program (the Mamba block's layout). ``bwd_segments`` (v2-v4): the backward
    splits the sequence into at most this many segments of whole backward chunks, each walked
    by its own programs (grid (dim / bwd_block_d, batch, segments)); a short pre-pass
    (``triton_bwd_seg.py``) gives every segment the adjoint entering it from the right.
    ``fast_softplus`` (v2-v4): softplus and its derivative as polynomials on the FMA pipe instead
    of the MUFU's exp / log / reciprocal, in the forward and the backward (``softplus_fma``)."""

    block_d: int
    chunk: int
    num_warps: int = 4
    bc_fp32: bool = False
    bwd_block_d: int = 4  # the backward kernel's channels per program
    bwd_kernel: str = "v1"
    bwd_num_warps: int = 1  # v2-v4 only
    bwd_bc_partials: bool = False  # v2-v4 only
    bwd_chunk_factor: int = 1  # v2-v4: the backward's chunk is this many forward chunks
    bwd_segments: int = 1  # v2-v4: sequence-parallel segments of the backward
    fast_softplus: bool = False  # v2-v4: softplus without the MUFU, forward and backward
    # v2-v4: a cap on the backward kernel's registers per thread (PTX .maxnreg; None: the
    # compiler's choice). Fewer registers let more programs reside on an SM, at the risk of spills.
    bwd_maxnreg: int | None = None

    def __post_init__(self):
        if self.bwd_kernel not in BWD_KERNELS:
            raise ValueError(f"ScanConfig.bwd_kernel must be one of {sorted(BWD_KERNELS)}, "
                             f"got {self.bwd_kernel!r}")
        factor = self.bwd_chunk_factor
        if factor < 1 or factor & (factor - 1) or (factor != 1 and self.bwd_kernel == "v1"):
            # A power of two, so the backward's chunk stays one (a tile length in Triton).
            raise ValueError(f"ScanConfig.bwd_chunk_factor must be 1 for v1 and a power of two for v2-v4, "
                             f"got {factor}")
        segments = self.bwd_segments
        if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1 or (
                segments != 1 and self.bwd_kernel == "v1"):
            raise ValueError(f"ScanConfig.bwd_segments must be an integer >= 1 for v2-v4 and 1 for v1, "
                             f"got {segments!r} with bwd_kernel {self.bwd_kernel!r}")
        cap = self.bwd_maxnreg
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or not 24 <= cap <= 255
                                or self.bwd_kernel == "v1"):
            raise ValueError(f"ScanConfig.bwd_maxnreg must be None or an integer in [24, 255] for v2-v4, "
                             f"got {cap!r} with bwd_kernel {self.bwd_kernel!r}")
        if self.bwd_kernel == "v4" and (self.chunk * self.bwd_chunk_factor) % 2:
            raise ValueError(f"ScanConfig: bwd_kernel 'v4' needs an even backward chunk (chunk x bwd_chunk_factor), "
                             f"got {self.chunk} x {self.bwd_chunk_factor}")
        if self.fast_softplus and self.bwd_kernel == "v1":
            # v1's backward recomputes Δ with the MUFU softplus: it must match the forward's.
            raise ValueError("ScanConfig.fast_softplus needs bwd_kernel 'v2', 'v3' or 'v4', got 'v1'")


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def resident_programs(registers: int, num_warps: int = 1) -> int:
    """Programs of ``num_warps`` warps at ``registers`` per thread that one H100/H200 SM holds at
    once: the register file (65,536, allocated per warp in units of 256, i.e. per thread in units
    of 8) bounded by 64 warps and 32 blocks per SM. E.g. a one-warp backward capped at 128
    registers (the default v4 launch): 16; v3 uncapped (~162-168): 12."""
    if registers < 1 or num_warps < 1:
        raise ValueError(f"resident_programs needs registers >= 1 and num_warps >= 1, got {registers}, {num_warps}")
    per_warp = -(-registers // 8) * 8 * 32
    return max(0, min(65536 // (per_warp * num_warps), 64 // num_warps, 32))


# The default backward's register cap: 16 one-warp programs per SM, no spills on the H200
# (sweep 5: 128 registers, 0 bytes spilled; uncapped the compiler takes 152-157).
BWD_MAXNREG = 128
BWD_PROGRAMS_PER_SM = resident_programs(BWD_MAXNREG)
MAX_BWD_SEGMENTS = 16
# Segments aim at this many waves of resident programs: more, shorter programs balance the SMs
# better than exactly one wave (results/h200_bwd_segments.md).
BWD_SEGMENT_WAVES = 3


def backward_segments(batch: int, dim: int, block_d: int, sm_count: int | None,
                      programs_per_sm: int = BWD_PROGRAMS_PER_SM, max_segments: int = MAX_BWD_SEGMENTS,
                      waves: int = BWD_SEGMENT_WAVES) -> int:
    """Sequence segments of the backward, from the grid it would have without them.

    The backward's grid is (dim / block_d, batch, segments). Measured on the H200 for the v4
    launch (``benchmarks/bench_bwd_segments.py``, dim 1536, 132 SMs x 16 slots): a grid that
    fills at least half the SMs' resident slots gains nothing from segments (batch 16 and 32:
    one segment fastest, the pre-pass only adds work); a smaller one is fastest cut into about
    ``waves`` waves of programs (batch 1, 4, 8: 16, 16, 8 segments, 3.3x / 1.9x / 1.3x faster
    than one), up to ``max_segments``."""
    if not sm_count:
        return 1
    programs = max(1, batch * triton.cdiv(dim, block_d))
    slots = programs_per_sm * sm_count
    if 2 * programs >= slots:
        return 1
    return max(1, min(max_segments, waves * slots // programs))


def default_config(dim: int, seqlen: int, dstate: int, itemsize: int = 2, batch: int = 1,
                   sm_count: int | None = None) -> ScanConfig:
    """Launch parameters for a problem size; small under the interpreter, where time is per element.

    On the GPU a chunk is two 16-byte loads (16 steps of bf16/fp16, 8 of fp32) held by two lanes,
    so the scan is a sequential fold in registers plus one shuffle level; one-warp programs of 16
    channels measured fastest on the H200 (benchmarks/NOTES.md). The backward is "v4" (in-lane
    folds instead of scan shuffles) in one-warp programs of 16 channels over chunks of 16 steps,
    capped at 128 registers (16 resident programs per SM, no spills), with the sequence split into
    segments by :func:`backward_segments` (``sm_count``: the GPU's SMs; None: one segment): 3.94 ms
    forward+backward at issue 3's 4k size against 4.99 for round 4's v3 default and 7.29 for "v1"
    (``benchmarks/results/h200_bwd_sweep5.md``)."""
    if _interpreting():
        return ScanConfig(block_d=min(4, triton.next_power_of_2(dim)), chunk=16, num_warps=1)
    chunk = 32 // itemsize
    return ScanConfig(block_d=16, chunk=chunk, num_warps=1, bwd_kernel="v4", bwd_block_d=16, bwd_num_warps=1,
                      bwd_chunk_factor=max(1, 16 // chunk), bwd_maxnreg=BWD_MAXNREG,
                      bwd_segments=backward_segments(batch, dim, 16, sm_count))


def _sm_count(device: torch.device) -> int | None:
    if device.type != "cuda" or _interpreting():
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNTS:
        _SM_COUNTS[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SM_COUNTS[index]


_SM_COUNTS: dict[int, int] = {}


# Tests and the benchmark override the choice through this hook (None: default_config).
CONFIG_OVERRIDE: ScanConfig | None = None


def _bc_layout(t: torch.Tensor, dim: int, block_d: int):
    """(mode, dim_per_group, (s_b, s_g, s_n, s_t)) of B or C for the kernels."""
    if t.dim() == 2:  # (dim, dstate): s_g doubles as the channel stride
        return BC_INVARIANT, 1, (0, t.stride(0), t.stride(1), 0)
    t4 = t if t.dim() == 4 else t.unsqueeze(1)  # (batch, ngroups, dstate, seqlen)
    dpg = dim // t4.shape[1]
    mode = BC_GROUP_TILE if dpg % block_d == 0 else BC_PER_CHANNEL
    return mode, dpg, tuple(t4.stride())


def _flags(D, z, delta_bias, delta_softplus):
    # The one-instruction exp2 is PTX: NVIDIA GPUs only (not the interpreter, not ROCm).
    fast_exp2 = not _interpreting() and torch.version.hip is None
    return dict(HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
                SOFTPLUS=bool(delta_softplus), FAST_EXP2=fast_exp2)


def _forward(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus, save_ckpt, cfg):
    """out, last state, chunk-start states (``save_ckpt``) and, for the "v3" / "v4" backward with z, the
    output before the gate (else None)."""
    batch, dim, seqlen = u.shape
    dstate = A.shape[1]
    nchunks = triton.cdiv(seqlen, cfg.chunk)
    out = torch.empty_like(u, memory_format=torch.contiguous_format)
    last = torch.empty(batch, dim, dstate, device=u.device, dtype=torch.float32)
    # (batch, nchunks, dstate, dim): channels contiguous, so each state's store is coalesced
    ckpt = (torch.empty(batch, nchunks, dstate, dim, device=u.device, dtype=torch.float32)
            if save_ckpt else last)  # placeholder pointer when not stored
    save_y = save_ckpt and z is not None and cfg.bwd_kernel in ("v3", "v4")
    ypre = torch.empty_like(out) if save_y else None
    b_mode, b_dpg, b_str = _bc_layout(B, dim, cfg.block_d)
    c_mode, c_dpg, c_str = _bc_layout(C, dim, cfg.block_d)
    grid = (triton.cdiv(dim, cfg.block_d), batch)
    scan_fwd_kernel[grid](
        u, delta, A, B, C, D, z, delta_bias, initial_state,
        out, last, ckpt, ypre,
        dim, seqlen, nchunks,
        b_dpg, *b_str, c_dpg, *c_str,
        BLOCK_D=cfg.block_d, N=dstate, T=cfg.chunk,
        B_MODE=b_mode, C_MODE=c_mode, HAS_H0=initial_state is not None, SAVE_CKPT=save_ckpt, SAVE_Y=save_y,
        FAST_SOFTPLUS=cfg.fast_softplus, num_warps=cfg.num_warps, **_flags(D, z, delta_bias, delta_softplus),
    )
    return out, last, (ckpt if save_ckpt else None), ypre


def _bc_grad_buffer(t, mode, dpg, batch, nprog, dstate, seqlen, partials, f32, nseg=1):
    """fp32 buffer the backward kernel accumulates dB or dC into: per-row (nseg * batch, dim, dstate)
    sums for the time-invariant form (a row per backward segment and batch row), per-program
    channel sums (batch, programs, dstate, seqlen) with ``partials`` in the group-tile form, else
    zeros in the layout of ``t`` (atomics)."""
    if t.dim() == 2:
        return torch.empty(nseg * batch, t.shape[0], dstate, **f32)
    if partials and mode == BC_GROUP_TILE:
        return torch.empty(batch, nprog, dstate, seqlen, **f32)  # every element is stored once
    return torch.zeros(t.shape, **f32)


def _bc_grad_finish(buf, t, mode, dpg, block_d, partials):
    """The gradient of B or C (fp32, t's shape) from the kernel's buffer (see _bc_grad_buffer)."""
    if t.dim() == 2:
        return buf.sum(0)
    if partials and mode == BC_GROUP_TILE:
        batch, nprog, dstate, seqlen = buf.shape
        # Programs are numbered along channels, so a group's programs are consecutive.
        return buf.view(batch, nprog // (dpg // block_d), dpg // block_d, dstate, seqlen).sum(2).view(t.shape)
    return buf


def segment_split(nchunks: int, segments: int) -> tuple[int, int]:
    """(chunks per segment, number of segments) for the backward: at most ``segments`` segments of
    whole backward chunks, equal but for the last; fewer when there are fewer chunks."""
    if nchunks <= 1 or segments <= 1:
        return max(nchunks, 1), 1
    per_seg = triton.cdiv(nchunks, segments)
    return per_seg, triton.cdiv(nchunks, per_seg)


def _segment_summaries(delta, A, C, z, delta_bias, dout, delta_softplus, c_mode, c_dpg, c_str,
                       nchunks, per_seg, nseg, T, block_d, num_warps, fast_softplus=False):
    """Pre-pass of the segmented backward: fp32 (nseg - 1, batch, dstate, dim) local adjoints and
    decays of segments 1 .. nseg - 1 (``triton_bwd_seg.py``)."""
    batch, dim, seqlen = delta.shape
    dstate = A.shape[1]
    loc = torch.empty(nseg - 1, batch, dstate, dim, device=delta.device, dtype=torch.float32)
    dec = torch.empty_like(loc)
    flags = _flags(None, z, delta_bias, delta_softplus)
    flags.pop("HAS_D")
    scan_bwd_seg_kernel[(triton.cdiv(dim, block_d), batch, nseg - 1)](
        delta, A, C, z, delta_bias, dout, loc, dec, dim, seqlen, nchunks, per_seg, c_dpg, *c_str,
        BLOCK_D=block_d, N=dstate, T=T, C_MODE=c_mode, FAST_SOFTPLUS=fast_softplus, num_warps=num_warps, **flags)
    return loc, dec


def _backward(u, delta, A, B, C, D, z, delta_bias, ckpt, ypre, dout, dlast, delta_softplus, cfg):
    batch, dim, seqlen = u.shape
    dstate = A.shape[1]
    ckpt_chunks = ckpt.shape[1]
    factor = cfg.bwd_chunk_factor if cfg.bwd_kernel != "v1" else 1
    nchunks = triton.cdiv(seqlen, cfg.chunk * factor)
    per_seg, nseg = segment_split(nchunks, cfg.bwd_segments if cfg.bwd_kernel != "v1" else 1)
    f32 = dict(device=u.device, dtype=torch.float32)
    du = torch.empty_like(u, memory_format=torch.contiguous_format)
    ddelta = torch.empty_like(delta, memory_format=torch.contiguous_format)
    dz = torch.empty_like(z, memory_format=torch.contiguous_format) if z is not None else None
    # Per segment (v2-v4) and batch row: scratch and partial sums, summed over both below.
    dA = torch.empty(nseg * batch, dim, dstate, **f32)
    dh0 = torch.empty(nseg * batch, dim, dstate, **f32)  # segment 0's rows: dL/d initial_state
    dD = torch.empty(nseg * batch, dim, **f32) if D is not None else None
    dbias = torch.empty(nseg * batch, dim, **f32) if delta_bias is not None else None
    block_d = cfg.bwd_block_d
    b_mode, b_dpg, b_str = _bc_layout(B, dim, block_d)
    c_mode, c_dpg, c_str = _bc_layout(C, dim, block_d)
    grid = (triton.cdiv(dim, block_d), batch, nseg)
    partials = cfg.bwd_bc_partials and cfg.bwd_kernel != "v1"
    # Time-varying B/C: fp32 buffers in B/C's own layout (they are made contiguous by the caller).
    # Segments cover disjoint steps, so they share the per-program partials' rows.
    dB = _bc_grad_buffer(B, b_mode, b_dpg, batch, grid[0], dstate, seqlen, partials, f32, nseg)
    dC = _bc_grad_buffer(C, c_mode, c_dpg, batch, grid[0], dstate, seqlen, partials, f32, nseg)
    args = (u, delta, A, B, C, D, z, delta_bias, dout, ckpt, dlast,
            du, ddelta, dz, dA, dB, dC, dD, dbias, dh0)
    common = dict(T=cfg.chunk * factor, B_MODE=b_mode, C_MODE=c_mode, HAS_DLAST=dlast is not None,
                  **_flags(D, z, delta_bias, delta_softplus))
    if cfg.bwd_kernel in ("v2", "v3", "v4"):
        loc = dec = dA  # placeholder pointers when there is one segment
        if nseg > 1:
            loc, dec = _segment_summaries(delta, A, C, z, delta_bias, dout, delta_softplus, c_mode, c_dpg, c_str,
                                          nchunks, per_seg, nseg, cfg.chunk * factor, block_d, cfg.bwd_num_warps,
                                          cfg.fast_softplus)
        # The state index is a run-time loop: any dstate, no padding to a power of two.
        cap = {} if cfg.bwd_maxnreg is None else {"maxnreg": cfg.bwd_maxnreg}
        if cfg.bwd_kernel == "v4":
            # ypre is None without z: v4 then never reads it (HAS_Z off).
            scan_bwd_v4_kernel[grid](*args, ypre, dim, seqlen, dstate, nchunks, ckpt_chunks, loc, dec, per_seg, nseg,
                                     b_dpg, *b_str, c_dpg, *c_str, BLOCK_D=block_d, num_warps=cfg.bwd_num_warps,
                                     BC_PARTIALS=partials, CKPT_EVERY=factor, SEGMENTED=nseg > 1,
                                     FAST_SOFTPLUS=cfg.fast_softplus,
                                     LOG2H=(cfg.chunk * factor // 2).bit_length() - 1, **cap, **common)
        else:
            scan_bwd_v2_kernel[grid](*args, ypre, dim, seqlen, dstate, nchunks, ckpt_chunks, loc, dec, per_seg, nseg,
                                     b_dpg, *b_str, c_dpg, *c_str, BLOCK_D=block_d, num_warps=cfg.bwd_num_warps,
                                     Y_SAVED=ypre is not None, BC_PARTIALS=partials, CKPT_EVERY=factor,
                                     SEGMENTED=nseg > 1, FAST_SOFTPLUS=cfg.fast_softplus, **cap, **common)
    else:
        scan_bwd_kernel[grid[:2]](*args, dim, seqlen, dstate, nchunks, b_dpg, *b_str, c_dpg, *c_str,
                                  BLOCK_D=block_d, N=triton.next_power_of_2(dstate), num_warps=1, **common)
    # Partial sums -> gradients (deterministic, unlike atomics).
    dB = _bc_grad_finish(dB, B, b_mode, b_dpg, block_d, partials)
    dC = _bc_grad_finish(dC, C, c_mode, c_dpg, block_d, partials)
    return (du, ddelta, dA.sum(0), dB, dC, dD.sum(0) if dD is not None else None, dz,
            dbias.sum(0) if dbias is not None else None, dh0[:batch])


class SelectiveScanTriton(torch.autograd.Function):
    """out, last_state = scan(...); differentiable in every tensor input and in last_state."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus):
        # The kernels index (batch, dim, seqlen) rows directly and the backward's fp32 dB/dC buffers
        # share B/C's strides: make everything contiguous (a no-op for the usual layouts).
        u, delta, z, A, B, C, D, delta_bias, initial_state = (
            t.contiguous() if t is not None else None for t in (u, delta, z, A, B, C, D, delta_bias, initial_state))
        cfg = CONFIG_OVERRIDE or default_config(u.shape[1], u.shape[2], A.shape[1], u.element_size(),
                                                batch=u.shape[0], sm_count=_sm_count(u.device))
        # B and C are read by every channel of their group: converting them once (small tensors,
        # (batch, ngroups, dstate, seqlen)) saves each thread a conversion per element, but fp32
        # rows double the registers the compiler hoists for them (a configuration choice).
        bc_dtypes = (B.dtype, C.dtype)
        if cfg.bc_fp32:
            B, C = B.to(torch.float32), C.to(torch.float32)
        save = any(ctx.needs_input_grad)
        with _on_device(u):
            out, last, ckpt, ypre = _forward(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus,
                                       save, cfg)
        if save:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, ckpt, ypre)
            ctx.delta_softplus, ctx.cfg, ctx.bc_dtypes = delta_softplus, cfg, bc_dtypes
            ctx.h0_dtype = initial_state.dtype if initial_state is not None else None
        ctx.set_materialize_grads(False)
        return out, last

    @staticmethod
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, z, delta_bias, ckpt, ypre = ctx.saved_tensors
        dout = torch.zeros_like(u) if dout is None else dout.contiguous()
        dlast = dlast.contiguous() if dlast is not None else None
        with _on_device(u):
            grads = _backward(u, delta, A, B, C, D, z, delta_bias, ckpt, ypre, dout, dlast, ctx.delta_softplus, ctx.cfg)
        du, ddelta, dA, dB, dC, dD, dz, dbias, dh0 = grads
        cast = lambda g, like: None if g is None or like is None else g.to(like.dtype)  # noqa: E731
        dh0 = dh0.to(ctx.h0_dtype) if ctx.h0_dtype is not None else None
        dB, dC = dB.to(ctx.bc_dtypes[0]), dC.to(ctx.bc_dtypes[1])
        return (du, ddelta, cast(dA, A), dB, dC, cast(dD, D), dz, cast(dbias, delta_bias),
                dh0, None)


def _on_device(t: torch.Tensor):
    """Launch on the tensor's GPU (Triton uses the current device), or nothing on the CPU."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False, *, initial_state=None):
    """Triton selective scan with ``selective_scan_fn``'s signature (see ``reference.py``).

    Any float dtype in; fp32 state and accumulation; out in u's dtype; last state fp32.
    """
    scan_shapes(u, delta, A, B, C, D, z, delta_bias, initial_state)
    out, last = SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, initial_state, delta_softplus)
    return (out, last) if return_last_state else out
