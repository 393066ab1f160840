"""Mixed-precision training on any device (``SOLVER.AMP.ENABLED``).

detectron2's ``AMPTrainer`` runs the forward under ``torch.cuda.amp.autocast`` and asserts that
CUDA is available. :class:`AutocastTrainer` keeps its interface and checkpoint state (the
gradient scaler) but autocasts on the model's device type: bfloat16 on the CPU by default,
float16 on CUDA (``SOLVER.AMP.PRECISION`` chooses). A gradient scaler is used only for float16;
bfloat16 has float32's exponent range, so its gradients do not underflow.

Speed depends on the hardware: CPUs without native bfloat16 (no AVX512-BF16 / AMX; e.g. the
AVX2 machines this project is developed on) run bfloat16 convolutions several times slower
than float32, so there autocast only saves activation memory (benchmarks/README.md).
"""

import logging
import time

import torch
from detectron2.config import CfgNode
from detectron2.engine import AMPTrainer
from detectron2.utils.events import get_event_storage

__all__ = ["AutocastTrainer", "amp_dtype", "build_amp_trainer", "cpu_has_native_bf16"]

logger = logging.getLogger(__name__)

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def _device_type(device: str) -> str:
    return torch.device(device).type


def amp_dtype(cfg: CfgNode) -> torch.dtype:
    """The autocast dtype of ``cfg``: ``SOLVER.AMP.PRECISION``, or if empty bfloat16 on the CPU
    and float16 elsewhere.

    Raises:
        ValueError: ``SOLVER.AMP.PRECISION`` is not "", "float16" or "bfloat16".
    """
    name = cfg.SOLVER.AMP.get("PRECISION", "")
    if not name:
        name = "bfloat16" if _device_type(cfg.MODEL.DEVICE) == "cpu" else "float16"
    if name not in _DTYPES:
        raise ValueError(
            f"SOLVER.AMP.PRECISION={name!r}: expected one of {sorted(_DTYPES)} or '' (bfloat16 "
            "on the CPU, float16 on CUDA)."
        )
    return _DTYPES[name]


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN reports native bfloat16 support on this CPU (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class AutocastTrainer(AMPTrainer):
    """detectron2's ``AMPTrainer`` with the forward autocast on ``device_type`` in ``precision``.

    Args:
        model, data_loader, optimizer: as for ``SimpleTrainer``.
        device_type: "cpu" or "cuda" (the model's device type).
        precision: ``torch.bfloat16`` or ``torch.float16``; float16 enables a gradient scaler.
        **kwargs: further ``AMPTrainer`` arguments (``gather_metric_period``, ...).
    """

    def __init__(
        self,
        model,
        data_loader,
        optimizer,
        device_type: str = "cpu",
        precision: torch.dtype = torch.bfloat16,
        **kwargs,
    ):
        if precision not in _DTYPES.values():
            raise ValueError(f"AutocastTrainer: precision {precision} is not float16 / bfloat16")
        kwargs.setdefault(
            "grad_scaler",
            torch.amp.GradScaler(device_type, enabled=precision == torch.float16),
        )
        super().__init__(model, data_loader, optimizer, precision=precision, **kwargs)
        self.device_type = device_type
        if device_type == "cpu" and precision == torch.bfloat16 and not cpu_has_native_bf16():
            logger.warning(
                "SOLVER.AMP: this CPU has no native bfloat16 (AVX512-BF16 / AMX): autocast saves "
                "activation memory but its convolutions run several times slower than float32."
            )
        logger.info(
            "Mixed precision: %s autocast on %s, gradient scaler %s",
            str(precision).replace("torch.", ""),
            device_type,
            "on" if self.grad_scaler.is_enabled() else "off",
        )

    def run_step(self) -> None:
        assert self.model.training, "[AutocastTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        with torch.autocast(self.device_type, dtype=self.precision):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                losses = loss_dict
                loss_dict = {"total_loss": loss_dict}
            else:
                losses = sum(loss_dict.values())
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()

        # Outside autocast: the backward runs each op in its forward's dtype.
        self.grad_scaler.scale(losses).backward()
        if self.log_grad_scaler and self.grad_scaler.is_enabled():
            get_event_storage().put_scalar("[metric]grad_scaler", self.grad_scaler.get_scale())
        self.after_backward()
        if self.async_write_metrics:
            self.concurrent_executor.submit(
                self._write_metrics, loss_dict, data_time, iter=self.iter
            )
        else:
            self._write_metrics(loss_dict, data_time)
        # Unscales before the optimizer's step (so gradient clipping sees true gradients) and
        # skips the step on inf/nan gradients when the scaler is on.
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()


def build_amp_trainer(cfg: CfgNode):
    """A factory with ``AMPTrainer``'s call signature ``(model, data_loader, optimizer)`` that
    builds an :class:`AutocastTrainer` for ``cfg``'s device and precision."""
    device_type = _device_type(cfg.MODEL.DEVICE)
    precision = amp_dtype(cfg)

    def factory(model, data_loader, optimizer, **kwargs):
        return AutocastTrainer(
            model, data_loader, optimizer, device_type=device_type, precision=precision, **kwargs
        )

    return factory
