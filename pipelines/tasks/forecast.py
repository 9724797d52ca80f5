"""Multi-horizon forecasting: MSE or MAE on scaled data (as the literature reports), MAE in the
original units (through the data module's scaler), and the pinball loss for quantile heads."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError

from .base import STAGES, SeqTask, _key
from .network_spec import network_config


def pinball_loss(quantiles: torch.Tensor, target: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Mean quantile (pinball) loss. quantiles (B, H, C, Q), target (B, H, C), levels (Q,) in (0, 1)."""
    diff = target.unsqueeze(-1) - quantiles  # (B, H, C, Q): positive where the quantile is too low
    return torch.maximum(levels * diff, (levels - 1.0) * diff).mean()


def _point_and_quantiles(output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Accept ``ForecastOutput(point, quantiles)`` (the contract) or a bare tensor."""
    if isinstance(output, torch.Tensor):
        return output, None
    return output.point, getattr(output, "quantiles", None)


class ForecastTask(SeqTask):
    """Train/evaluate a network mapping ``x (B, L, C)`` to ``ForecastOutput(point (B, H, C), quantiles (B, H, C, Q))``.

    Batches ``{"x", "y" (B, H, C)}`` in scaled units. ``loss`` chooses the point loss;
    ``quantile_weight`` scales the pinball loss added when the network has quantiles.
    Logged: ``{stage}/mse``, ``{stage}/mae`` (scaled), ``{stage}/mae_orig`` (original units, when
    the data module exposes its scaler), ``{stage}/pinball`` and, at test, the repeat-last-value
    baseline ``test/naive_mse``.
    """

    def __init__(
        self,
        network: nn.Module,
        loss: str = "mse",
        quantile_weight: float = 1.0,
        quantiles: list[float] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_ratio: float = 0.05,
        min_lr_ratio: float = 0.01,
    ) -> None:
        super().__init__(network, lr, weight_decay, betas, warmup_ratio, min_lr_ratio)
        if loss not in ("mse", "mae"):
            raise ValueError(f"loss must be 'mse' or 'mae', got {loss!r}")
        if quantile_weight < 0:
            raise ValueError(f"quantile_weight must be >= 0, got {quantile_weight}")
        levels = quantiles if quantiles is not None else network_config(network).get("quantiles") or []
        if any(not 0.0 < q < 1.0 for q in levels):
            raise ValueError(f"quantile levels must lie in (0, 1), got {list(levels)}")
        self.register_buffer("levels", torch.tensor(list(levels), dtype=torch.float32), persistent=False)
        self.register_buffer("scale", None, persistent=False)  # (C,) original-unit scale, set in setup
        self.stage_metrics = nn.ModuleDict(
            {
                _key(stage): nn.ModuleDict(
                    {
                        "mse": MeanSquaredError(),
                        "mae": MeanAbsoluteError(),
                        "mae_orig": MeanAbsoluteError(),
                        "pinball": MeanMetric(),
                        "naive_mse": MeanSquaredError(),
                    }
                )
                for stage in STAGES
            }
        )

    def setup(self, stage: str) -> None:
        super().setup(stage)
        net = network_config(self.network)
        for key in ("input_len", "horizon"):
            data_value, net_value = self.preprocessing.get(key), net.get(key)
            if data_value is not None and net_value is not None and int(data_value) != int(net_value):
                raise ValueError(
                    f"{key} differs between the data ({data_value}) and the network ({net_value}); set both "
                    f"(--data.init_args.{key} and --model.init_args.network.init_args.{key}, or --{key})"
                )
        scale = self.preprocessing.get("scaler_scale")
        if scale is not None:
            self.scale = torch.tensor(scale, dtype=torch.float32, device=self.device)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        scale = self.preprocessing.get("scaler_scale")
        if scale is not None:
            self.scale = torch.tensor(scale, dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> Any:
        return self.network(x)

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch["x"], batch["y"]  # (B, L, C), (B, H, C)
        point, quantiles = _point_and_quantiles(self(x))
        point = point.float()  # (B, H, C)
        if point.shape != y.shape:
            raise ValueError(f"forecast {tuple(point.shape)} does not match target {tuple(y.shape)}")
        loss = F.mse_loss(point, y) if self.hparams.loss == "mse" else F.l1_loss(point, y)
        m = self.stage_metrics[_key(stage)]
        has_quantiles = quantiles is not None and self.levels.numel() > 0
        if has_quantiles:
            pin = pinball_loss(quantiles.float(), y, self.levels.to(point.device))
            loss = loss + self.hparams.quantile_weight * pin
            m["pinball"].update(pin, weight=y.numel())
        batch_size = y.shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=stage != "test", batch_size=batch_size, sync_dist=stage != "train")

        detached = point.detach().contiguous()  # torchmetrics flattens with view()
        m["mse"].update(detached, y)
        m["mae"].update(detached, y)
        names = ["mse", "mae"] + (["pinball"] if has_quantiles else [])
        if self.scale is not None and self.scale.numel() == y.shape[-1]:
            scale = self.scale.to(y.device)
            m["mae_orig"].update(detached * scale, y * scale)  # the mean shift cancels in a difference
            names.append("mae_orig")
        if stage == "test":
            m["naive_mse"].update(x[:, -1:, :].float().repeat(1, y.shape[1], 1), y)  # repeat the last observed value
            names.append("naive_mse")
        for name in names:
            self.log(f"{stage}/{name}", m[name], on_step=False, on_epoch=True, batch_size=batch_size)
        return loss

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        point, quantiles = _point_and_quantiles(self(batch["x"]))
        return {"point": point.float(), "quantiles": None if quantiles is None else quantiles.float()}
