"""Argument checks shared by every backend, so each error names the argument."""

from __future__ import annotations

import torch


def check_rank(name: str, t: torch.Tensor | None, ranks: tuple[int, ...], shape_doc: str) -> None:
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() not in ranks:
        raise ValueError(f"{name} must have shape {shape_doc}, got {tuple(t.shape)}")


def check_shape(name: str, t: torch.Tensor | None, expected: tuple[int, ...], shape_doc: str) -> None:
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {shape_doc} = {tuple(expected)}, got {tuple(t.shape)}")


def check_float(name: str, t: torch.Tensor | None) -> None:
    if t is not None and not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if t is not None and t.is_complex():
        raise TypeError(f"{name}: complex tensors are not supported")


def check_same_device(**tensors: torch.Tensor | None) -> None:
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"all tensors must be on one device: {listing}")


def scan_shapes(u, delta, A, B, C, D, z, delta_bias, initial_state):
    """Validate selective-scan arguments; return (batch, dim, seqlen, dstate, B_mode, C_mode).

    A mode is "invariant" for (dim, dstate) or the number of groups for the
    (batch, ngroups, dstate, seqlen) form; (batch, dstate, seqlen) counts as one group.
    """
    check_rank("u", u, (3,), "(batch, dim, seqlen)")
    batch, dim, seqlen = u.shape
    check_shape("delta", delta, (batch, dim, seqlen), "(batch, dim, seqlen)")
    check_rank("A", A, (2,), "(dim, dstate)")
    if A.shape[0] != dim:
        raise ValueError(f"A must have shape (dim, dstate) with dim={dim}, got {tuple(A.shape)}")
    dstate = A.shape[1]
    modes = []
    for name, t in (("B", B), ("C", C)):
        check_rank(name, t, (2, 3, 4), "(dim, dstate), (batch, dstate, seqlen) or (batch, ngroups, dstate, seqlen)")
        if t.dim() == 2:
            check_shape(name, t, (dim, dstate), "(dim, dstate)")
            modes.append("invariant")
        elif t.dim() == 3:
            check_shape(name, t, (batch, dstate, seqlen), "(batch, dstate, seqlen)")
            modes.append(1)
        else:
            groups = t.shape[1]
            if groups < 1 or dim % groups:
                raise ValueError(f"{name}: dim={dim} is not divisible by ngroups={groups}")
            check_shape(name, t, (batch, groups, dstate, seqlen), "(batch, ngroups, dstate, seqlen)")
            modes.append(groups)
    check_shape("D", D, (dim,), "(dim,)")
    check_shape("z", z, (batch, dim, seqlen), "(batch, dim, seqlen)")
    check_shape("delta_bias", delta_bias, (dim,), "(dim,)")
    check_shape("initial_state", initial_state, (batch, dim, dstate), "(batch, dim, dstate)")
    for name, t in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C), ("D", D), ("z", z),
                    ("delta_bias", delta_bias), ("initial_state", initial_state)):
        check_float(name, t)
    check_same_device(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias,
                      initial_state=initial_state)
    return batch, dim, seqlen, dstate, modes[0], modes[1]
