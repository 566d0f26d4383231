"""The catalogue of built-in normalizers: metadata here, implementations imported on first use.

Keeping the factories as ``"module:attribute"`` strings lets ``fewnorm norms``
list everything without importing torch. ``vmap=True`` is declared after the
vectorized meta-gradients matched the per-task loop's; ``channels_last=True`` where
benchmarks/memory_format.py measured a Conv-4 step at least 1.1x faster on NHWC.
Every normalizer with batch statistics declares its few-shot ``modes`` (the factory's
default first: the paper's conventional behaviour, BatchNorm's transductive as before).
"""

from __future__ import annotations

from fewnorm.norms.registry import NormRegistry
from fewnorm.norms.spec import NormKind, NormSpec

_P = "fewnorm.norms."
BEYOND_BN = "Lubana, Dick and Tanaka, Beyond BatchNorm, NeurIPS 2021"

BUILTIN_SPECS: tuple[NormSpec, ...] = (
    NormSpec(
        name="none",
        factory=_P + "identity:identity",
        summary="No normalization (the unnormalized baseline).",
        paper="-",
        statistics=("none",),
        aliases=("identity",),
        conv_bias=True,
        vmap=True,
        channels_last=True,
    ),
    NormSpec(
        name="batchnorm",
        factory=_P + "batch:batchnorm",
        summary="BatchNorm with few-shot modes transductive | running | support.",
        paper="Ioffe and Szegedy, ICML 2015; modes: Bronskill et al., TaskNorm, ICML 2020",
        statistics=("batch", "running", "support"),
        has_buffers=True,
        aliases=("bn", "batchnorm2d"),
        phase_aware=True,
        vmap=True,
        channels_last=True,
        modes=("transductive", "running", "support"),
    ),
    NormSpec(
        name="groupnorm",
        factory=_P + "group:groupnorm",
        summary="Moments over (C/G, H, W) per sample and group.",
        paper="Wu and He, Group Normalization, ECCV 2018",
        statistics=("group",),
        aliases=("gn",),
        vmap=True,
        channels_last=True,
    ),
    NormSpec(
        name="layernorm",
        factory=_P + "group:layernorm",
        summary="Moments over (C, H, W) per sample.",
        paper="Ba, Kiros and Hinton, Layer Normalization, 2016",
        statistics=("layer",),
        aliases=("ln",),
        vmap=True,
        channels_last=True,
    ),
    NormSpec(
        name="instancenorm",
        factory=_P + "group:instancenorm",
        summary="Moments over (H, W) per sample and channel.",
        paper="Ulyanov, Vedaldi and Lempitsky, Instance Normalization, 2016",
        statistics=("instance",),
        aliases=("in",),
        vmap=True,
    ),
    # -- whitening (swbn, iternorm) --
    NormSpec(
        name="swbn",
        factory=_P + "swbn:swbn",
        summary="Standardization, then per-group whitening matrices learned online (KL or Fro).",
        paper="Zhang et al., Stochastic Whitening Batch Normalization, CVPR 2021",
        statistics=("batch", "running", "support"),
        has_buffers=True,
        aliases=("stochasticwhitening",),
        vmap=True,
        phase_aware=True,  # support mode
        modes=("running", "transductive", "support"),
        learned_buffers=("whitening_matrix",),
    ),
    NormSpec(
        name="iternorm",
        factory=_P + "iternorm:iternorm",
        summary="Per-group whitening by T Newton-Schulz iterations, differentiated through.",
        paper="Huang et al., Iterative Normalization, CVPR 2019",
        statistics=("batch", "running", "support"),
        has_buffers=True,
        aliases=("iterativenormalization",),
        vmap=True,
        phase_aware=True,  # support mode
        modes=("running", "transductive", "support"),
    ),
    # -- conv-owning (patchnorm, weightnorm, scaled-ws) --
    NormSpec(
        name="patchnorm",
        factory=_P + "patchnorm:patchnorm",
        summary="Owns its conv; divides each output by sqrt(||input patch||^2 + 1).",
        paper="Bird, The Affine Divergence: Aligning Activation Updates Beyond "
        "Normalisation, arXiv 2512.22247",
        kind=NormKind.CONV,
        statistics=("none",),
        vmap=True,
        channels_last=True,
    ),
    NormSpec(
        name="weightnorm",
        factory=_P + "weightnorm:weightnorm",
        summary="Owns its conv; each filter is g * v / ||v||.",
        paper="Salimans and Kingma, Weight Normalization, NeurIPS 2016; " + BEYOND_BN,
        kind=NormKind.CONV,
        statistics=("weight",),
        aliases=("wn",),
        vmap=True,
        channels_last=True,
    ),
    NormSpec(
        name="scaled-ws",
        factory=_P + "weightstd:scaled_ws",
        summary="Owns its conv; each filter standardized, scaled by gamma * gain / sqrt(fan_in).",
        paper="Brock, De and Smith, Characterizing signal propagation to close the performance "
        "gap in unnormalized ResNets, ICLR 2021; Qiao et al., Weight Standardization, 2019",
        kind=NormKind.CONV,
        statistics=("weight",),
        aliases=("sws", "weightstd"),
        vmap=True,
        channels_last=True,
    ),
    # -- per-sample and task (frn, evonorm, variancenorm, rmsnorm, tasknorm) --
    NormSpec(
        name="frn",
        factory=_P + "frn:frn",
        summary="Filter Response Normalization + TLU: x / sqrt(mean_HW(x^2) + |eps|), max(y, tau).",
        paper="Singh and Krishnan, Filter Response Normalization Layer, CVPR 2020",
        kind=NormKind.NORM_ACT,
        statistics=("instance",),
        aliases=("frntlu", "filterresponsenorm"),
        vmap=True,
    ),
    NormSpec(
        name="evonorm-s0",
        factory=_P + "evonorm:evonorm_s0",
        summary="EvoNorm-S0: x * sigmoid(v x) / group_std(x), per sample (norm and activation).",
        paper="Liu, Brock, Simonyan and Le, Evolving Normalization-Activation Layers, NeurIPS 2020",
        kind=NormKind.NORM_ACT,
        statistics=("group",),
        vmap=True,
    ),
    NormSpec(
        name="evonorm-b0",
        factory=_P + "evonorm:evonorm_b0",
        summary="EvoNorm-B0: x / max(batch std, v x + instance std); running variance at eval.",
        paper="Liu, Brock, Simonyan and Le, Evolving Normalization-Activation Layers, NeurIPS 2020",
        kind=NormKind.NORM_ACT,
        statistics=("batch", "running", "support", "instance"),
        has_buffers=True,
        vmap=True,
        phase_aware=True,  # support mode
        modes=("running", "transductive", "support"),
    ),
    NormSpec(
        name="variancenorm",
        factory=_P + "variance:variancenorm",
        summary="Divide by the batch std over (N, H, W), no centering; running variance at eval.",
        paper=BEYOND_BN + " (after Daneshmand et al., NeurIPS 2020)",
        statistics=("batch", "running", "support"),
        has_buffers=True,
        aliases=("vn",),
        vmap=True,
        channels_last=True,
        phase_aware=True,  # support mode
        modes=("running", "transductive", "support"),
    ),
    NormSpec(
        name="rmsnorm",
        factory=_P + "rms:rmsnorm",
        summary="Divide by the root mean square over channels at each position; per-channel gain.",
        paper="Zhang and Sennrich, Root Mean Square Layer Normalization, NeurIPS 2019",
        statistics=("layer",),
        aliases=("rms",),
        vmap=True,
        channels_last=True,
    ),
    NormSpec(
        name="tasknorm-i",
        factory=_P + "tasknorm:tasknorm_i",
        summary="Support-set batch moments blended with each example's instance moments.",
        paper="Bronskill, Gordon, Requeima, Nowozin and Turner, TaskNorm, ICML 2020",
        statistics=("support", "instance"),
        aliases=("tasknorm",),
        phase_aware=True,
        vmap=True,
        channels_last=True,
    ),
    NormSpec(
        name="tasknorm-l",
        factory=_P + "tasknorm:tasknorm_l",
        summary="Support-set batch moments blended with each example's layer moments.",
        paper="Bronskill, Gordon, Requeima, Nowozin and Turner, TaskNorm, ICML 2020",
        statistics=("support", "layer"),
        phase_aware=True,
        vmap=True,
        channels_last=True,
    ),
)


def register_builtins(registry: NormRegistry) -> None:
    for spec in BUILTIN_SPECS:
        registry.register(spec)
