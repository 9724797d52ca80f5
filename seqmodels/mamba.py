"""The Mamba block (Gu & Dao 2023, Fig. 3) with mamba_ssm's constructor, initialisation and
parameter names, so ``Mamba(d_model=dim)(x)`` and mamba_ssm state dicts work unchanged.

All sequence mixing goes through the public operators of ``kernels``, which pick Triton or
PyTorch from the tensors' device. Our additions: a padding ``mask`` and a chunked forward that
carries (conv_state, ssm_state) between calls, in the same layout as ``step``'s cache.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from kernels import causal_conv1d_fn, causal_conv1d_update, selective_scan_fn, selective_state_update

# Added to Δ's pre-activation at padded positions: softplus(-1e4 + bias) is exactly 0 in every
# float format with that range, so exp(Δ A) = 1 and Δ B u = 0 — the state passes padding unchanged.
_MASKED_DT = -1e4


@dataclasses.dataclass
class InferenceParams:
    """mamba_ssm's decoding cache: per-layer (conv_state, ssm_state) keyed by ``layer_idx``."""

    max_seqlen: int
    max_batch_size: int
    seqlen_offset: int = 0
    key_value_memory_dict: dict = dataclasses.field(default_factory=dict)


class Mamba(nn.Module):
    """Selective SSM block. forward: (batch, seqlen, d_model) -> (batch, seqlen, d_model).

    ``use_fast_path`` is accepted for mamba_ssm compatibility and ignored: ``kernels`` decides.
    """

    def __init__(self, d_model, d_state=16, d_conv=4, expand=2, dt_rank="auto", dt_min=0.001, dt_max=0.1,
                 dt_init="random", dt_scale=1.0, dt_init_floor=1e-4, conv_bias=True, bias=False,
                 use_fast_path=True, layer_idx=None, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        for name, value in (("d_model", d_model), ("d_state", d_state), ("d_conv", d_conv)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 2 <= d_conv <= 4:
            raise ValueError(f"d_conv must be 2, 3 or 4 (the causal conv kernels' range), got {d_conv}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        if self.d_inner < 1:
            raise ValueError(f"expand * d_model must be at least 1, got expand={expand}")
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else dt_rank
        if not isinstance(self.dt_rank, int) or self.dt_rank < 1:
            raise ValueError(f"dt_rank must be 'auto' or a positive integer, got {dt_rank!r}")
        self.use_fast_path = use_fast_path
        self.layer_idx = layer_idx
        self.activation = "silu"

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **factory)
        # Depthwise conv; the padding is only there so the module matches mamba_ssm's (the
        # forward calls causal_conv1d_fn with the weight directly).
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner,
                                padding=d_conv - 1, bias=conv_bias, **factory)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)

        # dt_proj.weight scaled so Δ's pre-activation keeps unit-ish variance at initialisation.
        std = self.dt_rank ** -0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -std, std)
        else:
            raise ValueError(f"dt_init must be 'random' or 'constant', got {dt_init!r}")
        # Bias = softplus^-1(dt) with dt log-uniform in [dt_min, dt_max], so Δ starts in that range.
        log_lo, log_hi = math.log(dt_min), math.log(dt_max)
        dt = torch.exp(torch.rand(self.d_inner, device=device) * (log_hi - log_lo) + log_lo)
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True

        # S4D-real: A[d, n] = -(n + 1), stored as its log; A_log and D stay fp32 whatever ``dtype``.
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)

    # ------------------------------------------------------------------ parallel forward
    def forward(self, hidden_states, inference_params=None, *, mask=None):
        """hidden_states (batch, seqlen, d_model) -> same shape.

        ``mask`` (batch, seqlen) bool, True at real tokens: padded positions feed zeros to the
        conv and leave the SSM state unchanged, so padding before (left) or after (right) the
        real tokens does not change their outputs. ``inference_params`` follows mamba_ssm.
        """
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(f"hidden_states must have shape (batch, seqlen, d_model={self.d_model}), "
                             f"got {tuple(hidden_states.shape)}")
        if inference_params is None:
            out, _ = self._mix(hidden_states, mask, None, None, want_state=False)
            return out
        if mask is not None:
            raise ValueError("mask is not supported together with inference_params")
        conv_state, ssm_state = self._states_from_cache(inference_params, hidden_states.shape[0])
        if inference_params.seqlen_offset > 0:
            out, _, _ = self.step(hidden_states, conv_state, ssm_state)
            return out
        out, (new_conv, new_ssm) = self._mix(hidden_states, None, None, None, want_state=True)
        conv_state.copy_(new_conv)
        ssm_state.copy_(new_ssm)
        return out

    def forward_chunk(self, hidden_states, state=None):
        """Causal forward of one chunk that continues from ``state``.

        state: None (start of sequence) or (conv_state (batch, d_inner, d_conv), ssm_state
        (batch, d_inner, d_state)), the layout of ``allocate_inference_cache``. Returns
        (out (batch, seqlen, d_model), new_state); feeding chunks in order equals one pass.
        """
        conv_state, ssm_state = (None, None) if state is None else state
        if conv_state is not None:
            batch = hidden_states.shape[0]
            expected = {"conv_state": (batch, self.d_inner, self.d_conv),
                        "ssm_state": (batch, self.d_inner, self.d_state)}
            for name, t in (("conv_state", conv_state), ("ssm_state", ssm_state)):
                if tuple(t.shape) != expected[name]:
                    raise ValueError(f"{name} must have shape {expected[name]}, got {tuple(t.shape)}")
        return self._mix(hidden_states, None, conv_state, ssm_state, want_state=True)

    def _mix(self, hidden_states, mask, conv_state, ssm_state, want_state):
        batch, seqlen, _ = hidden_states.shape
        xz = self.in_proj(hidden_states).transpose(1, 2)  # (batch, 2 * d_inner, seqlen)
        x, z = xz.chunk(2, dim=1)  # (batch, d_inner, seqlen) each
        if mask is not None:
            if tuple(mask.shape) != (batch, seqlen) or mask.dtype != torch.bool:
                raise ValueError(f"mask must be a bool tensor of shape ({batch}, {seqlen}), "
                                 f"got {mask.dtype} {tuple(mask.shape)}")
            x = x.masked_fill(~mask[:, None, :], 0.0)
        conv_weight = self.conv1d.weight.squeeze(1)  # (d_inner, d_conv)
        history = None if conv_state is None else conv_state[..., 1:].to(x.dtype)  # (batch, d_inner, d_conv - 1)
        x_conv = causal_conv1d_fn(x, conv_weight, self.conv1d.bias, initial_states=history,
                                  activation=self.activation)  # (batch, d_inner, seqlen)

        x_dbl = self.x_proj(x_conv.transpose(1, 2))  # (batch, seqlen, dt_rank + 2 * d_state)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # (batch, d_inner, seqlen); bias in the scan
        if mask is not None:
            dt = dt.masked_fill(~mask[:, None, :], _MASKED_DT)
        B = B.transpose(1, 2).contiguous()  # (batch, d_state, seqlen)
        C = C.transpose(1, 2).contiguous()  # (batch, d_state, seqlen)
        work = self._ssm_dtype()
        A = -torch.exp(self.A_log.to(work))  # (d_inner, d_state)
        # dt and z go in as transposed views: the CPU kernel reads them in place (benchmarks/NOTES.md
        # C7), and the GPU launchers make their own contiguous copies.
        result = selective_scan_fn(x_conv, dt, A, B, C, self.D.to(work), z=z,
                                   delta_bias=self.dt_proj.bias.to(work), delta_softplus=True,
                                   return_last_state=want_state, initial_state=ssm_state)
        y, last = result if want_state else (result, None)
        out = self.out_proj(y.transpose(1, 2))  # (batch, seqlen, d_model)
        if not want_state:
            return out, None
        # The conv state keeps the last d_conv inputs (zeros before the start), as ``step`` expects.
        past = x.new_zeros(batch, self.d_inner, self.d_conv) if conv_state is None else conv_state.to(x.dtype)
        new_conv = torch.cat([past, x], dim=-1)[..., -self.d_conv:]
        return out, (new_conv, last)

    def _ssm_dtype(self) -> torch.dtype:
        # The SSM parameters are read in fp32 (mamba_ssm's choice, also under bf16), or fp64 for
        # a model cast to double (tests against float64 references).
        return torch.float64 if self.A_log.dtype == torch.float64 else torch.float32

    # ------------------------------------------------------------------ recurrent inference
    def allocate_inference_cache(self, batch_size, max_seqlen, dtype=None, **kwargs):
        """Zero (conv_state (batch, d_inner, d_conv), ssm_state (batch, d_inner, d_state))."""
        device = self.out_proj.weight.device
        conv_dtype = self.conv1d.weight.dtype if dtype is None else dtype
        ssm_dtype = self.dt_proj.weight.dtype if dtype is None else dtype
        conv_state = torch.zeros(batch_size, self.d_inner, self.d_conv, device=device, dtype=conv_dtype)
        ssm_state = torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=ssm_dtype)
        return conv_state, ssm_state

    def step(self, hidden_states, conv_state, ssm_state):
        """One token: hidden_states (batch, 1, d_model); both states are updated in place.
        Returns (out (batch, 1, d_model), conv_state, ssm_state). Cost independent of the past."""
        if hidden_states.dim() != 3 or hidden_states.shape[1] != 1:
            raise ValueError(f"step decodes one token at a time: hidden_states must be (batch, 1, d_model), "
                             f"got {tuple(hidden_states.shape)}")
        xz = self.in_proj(hidden_states.squeeze(1))  # (batch, 2 * d_inner)
        x, z = xz.chunk(2, dim=-1)  # (batch, d_inner)
        x = causal_conv1d_update(x, conv_state, self.conv1d.weight.squeeze(1), self.conv1d.bias,
                                 self.activation)  # (batch, d_inner)
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)  # (batch, d_inner); bias added by the update
        A = -torch.exp(self.A_log.to(self._ssm_dtype()))  # (d_inner, d_state)
        y = selective_state_update(ssm_state, x, dt, A, B, C, self.D, z=z, dt_bias=self.dt_proj.bias,
                                   dt_softplus=True)  # (batch, d_inner)
        return self.out_proj(y).unsqueeze(1), conv_state, ssm_state

    def _states_from_cache(self, inference_params, batch_size):
        if self.layer_idx is None:
            raise ValueError("Mamba(layer_idx=...) must be set to decode with inference_params")
        cache = inference_params.key_value_memory_dict
        if self.layer_idx not in cache:
            cache[self.layer_idx] = self.allocate_inference_cache(batch_size, inference_params.max_seqlen)
        return cache[self.layer_idx]
