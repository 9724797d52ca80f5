"""Triton helpers shared by the selective-scan forward and backward kernels.

Tiles are laid out (T, N, BLOCK_D): time steps of one chunk, state (padded to a power of two),
channels. Channels last puts them on the lanes of Triton's default layout, so the scan over time runs
inside each thread and the sum over the state crosses few lanes. Every quantity is fp32 in registers
whatever the input dtype.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)  # a constexpr, so kernels may read it

# How B and C arrive; chosen by the launcher.
BC_INVARIANT = 0  # (dim, dstate): one (BLOCK_D, N) tile for the whole sequence
BC_GROUP_TILE = 1  # (batch, ngroups, dstate, seqlen), every channel of the block in one group: (N, T)
BC_PER_CHANNEL = 2  # (batch, ngroups, dstate, seqlen), block spans groups: (BLOCK_D, N, T)


@triton.jit
def affine_combine(a_early, b_early, a_late, b_late):
    """Compose h -> a_early h + b_early, then h -> a_late h + b_late (forward scan)."""
    return a_early * a_late, a_late * b_early + b_late


@triton.jit
def load_dt(delta_ptrs, mask, bias, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr):
    """Δ tile (T, BLOCK_D) in fp32 after bias and softplus; 0 outside ``mask`` so padded steps are
    identities (exp(0·A) = 1, Δ·B·u = 0). Also returns the pre-softplus value for the backward."""
    raw = tl.load(delta_ptrs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        raw = raw + bias[None, :]
    dt = raw
    if SOFTPLUS:
        # log(1 + e^x) for x <= 20, x above (as mamba_ssm); the clamp keeps exp finite.
        dt = tl.where(raw > 20.0, raw, tl.log(1.0 + tl.exp(tl.minimum(raw, 20.0))))
    return tl.where(mask, dt, 0.0), raw


@triton.jit
def bc_offsets(pid_b, offs_d, offs_n, offs_t, dim_per_group, s_b, s_g, s_n, s_t,
               BLOCK_D: tl.constexpr, MODE: tl.constexpr):
    """Element offsets of the B or C tile. MODE BC_INVARIANT: (1, N, BLOCK_D) with s_g the channel
    stride; BC_GROUP_TILE: (T, N, 1) for the group of the block's first channel; BC_PER_CHANNEL:
    (T, N, BLOCK_D), each channel reading its own group."""
    if MODE == 0:
        offs = (offs_n[:, None] * s_n + offs_d[None, :] * s_g)[None, :, :]
    elif MODE == 1:
        g = (tl.program_id(0) * BLOCK_D) // dim_per_group
        base = pid_b.to(tl.int64) * s_b + g * s_g
        offs = (base + offs_t[:, None].to(tl.int64) * s_t + offs_n[None, :] * s_n)[:, :, None]
    else:
        g = offs_d // dim_per_group
        base = pid_b.to(tl.int64) * s_b + g.to(tl.int64) * s_g
        offs = (base[None, None, :] + offs_t[:, None, None].to(tl.int64) * s_t
                + offs_n[None, :, None] * s_n)
    return offs


@triton.jit
def bc_mask(d_mask, n_mask, t_mask, MODE: tl.constexpr):
    """Mask matching ``bc_offsets``'s tile shape."""
    if MODE == 0:
        m = (n_mask[:, None] & d_mask[None, :])[None, :, :]
    elif MODE == 1:
        m = (t_mask[:, None] & n_mask[None, :])[:, :, None]
    else:
        m = t_mask[:, None, None] & n_mask[None, :, None] & d_mask[None, None, :]
    return m
