"""Mixed precision: a model's forward passes under ``torch.autocast`` (``--amp bf16``).

Micikevicius et al., "Mixed Precision Training", ICLR 2018; bfloat16 (Kalamkar et
al., "A Study of BFLOAT16 for Deep Learning Training", 2019) keeps float32's exponent
range, so no loss scaling is needed.

Autocast wraps the *forward* passes only, through hooks on the backbone: backward ops
then run in the dtypes their forward ops chose, as PyTorch's AMP recipe prescribes.
Wrapping a whole step instead would differ by device, because on the CPU the
backward runs on the calling thread and autocast would recast its matmuls too. The
hooks hand float32 outputs back, so heads, losses, prototypes and distances stay
float32, and they live on the backbone object, which fresh heads share: every pass of
a task (support, query, MAML's ``functional_call``) and every path that builds the model
from its run config (training, ``fewnorm evaluate``, Lake's runs) gets the same
precision. Parameters, buffers and state-dict keys are untouched, so checkpoints load
either way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from fewnorm.errors import ConfigError

#: ``--amp`` name -> autocast dtype (None: float32 throughout).
AMP_DTYPES: dict[str, torch.dtype | None] = {"none": None, "bf16": torch.bfloat16}


def amp_dtype(name: str | None) -> torch.dtype | None:
    """The autocast dtype of ``--amp name`` (None: float32); an unknown name is one line."""
    if name is None:
        return None
    if name not in AMP_DTYPES:
        raise ConfigError(f"--amp must be one of {', '.join(AMP_DTYPES)}, got '{name}'")
    return AMP_DTYPES[name]


class ForwardAutocast:
    """Forward hooks: enter ``torch.autocast`` before a module's forward, leave it after.

    The device type is read from the first tensor argument at each call, so a model
    moved between devices (or scored on CPU after CUDA training) autocasts where it
    runs. Outputs in the autocast dtype come back as float32; a float64 model (which
    autocast leaves alone) is unchanged.
    """

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self._active: list[torch.autocast] = []  # nested calls (a module inside itself)

    def before(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        device = next((a.device.type for a in args if isinstance(a, Tensor)), "cpu")
        context = torch.autocast(device, dtype=self.dtype)
        context.__enter__()
        self._active.append(context)

    def after(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        # Registered with always_call: runs when the forward raised too (output None),
        # so a failed pass never leaves autocast switched on in this thread.
        self._active.pop().__exit__(None, None, None)
        if isinstance(output, Tensor) and output.dtype == self.dtype:
            return output.float()
        return output  # float32 already, or float64: autocast leaves float64 alone

    def __getstate__(self) -> dict[str, Any]:  # pickled or deep-copied between passes only
        return {"dtype": self.dtype, "_active": []}


def autocast_forward(model: nn.Module, amp: str | None) -> nn.Module:
    """``model`` with its forward passes autocast to ``amp``'s dtype (``none`` or None: unchanged)."""
    dtype = amp_dtype(amp)
    if dtype is None:
        return model
    hooks = ForwardAutocast(dtype)
    model.register_forward_pre_hook(hooks.before)
    model.register_forward_hook(hooks.after, always_call=True)
    return model


def slow_amp_reason(amp: str | None, device: torch.device) -> str | None:
    """Why ``amp`` will run slower than float32 on ``device`` (None: no known reason).

    bfloat16 on a CPU without AVX512-BF16 or AMX is emulated: a Conv-4 20-way ProtoNet
    step measured 9.7x slower than float32 (1175 against 121 ms, interleaved) on the
    2-core AVX2 development machine.
    """
    if amp_dtype(amp) != torch.bfloat16 or device.type != "cpu":
        return None
    if native_bf16_cpu():
        return None
    return (
        "--amp bf16 on a CPU without native bfloat16 (AVX512-BF16 or AMX) is emulated and runs "
        "much slower than float32; it pays on GPUs and CPUs with native bfloat16"
    )


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bfloat16 natively (oneDNN's own check: AVX512-BF16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
