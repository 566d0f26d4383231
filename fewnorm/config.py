"""Typed, validated run configuration: YAML presets, then command-line overrides."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fewnorm.algorithms import DEFAULT_ALGORITHM, AlgorithmSpec, get_algorithm_spec
from fewnorm.errors import ConfigError, FewnormError

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

#: Validation context: check keys and values, not rules that need other keys or files.
_KEYS_ONLY = "keys-only"
#: MAML buffers: ``by_role`` (statistics per task, learned state such as SWBN's whitening
#: matrix accumulated in the meta-model), ``per_task`` (every buffer cloned per task and
#: discarded) and ``global`` (every buffer written back): the last two are ablations.
BUFFER_POLICIES = ("by_role", "per_task", "global")
#: Optimizers of Reptile's inner loop and of the fine-tuning baselines' test-time head
#: (fewnorm.episodes.finetune): plain SGD, Adam with beta1 = 0 (Nichol et al.), SGD with
#: momentum 0.9, dampening 0.9, weight decay 1e-3 (Chen et al.'s fine-tuning).
INNER_OPTIMIZERS = ("sgd", "adam", "sgd-momentum")
#: Vectorized meta-batches run as this many vmap calls unless told otherwise, each chunk's
#: graph freed after its backward. vmap keeps about twice a task's activations per task
#: (each per-task convolution runs grouped, on a copy of its input), so one call at meta-batch
#: 32 holds 1.6x the loop's memory plus the meta-batch's activations, two calls 1.3x, four
#: 0.68x (benchmarks/maml_memory.py, CPU): four keeps the step within that bound.
DEFAULT_VECTORIZE_CHUNKS = 4
#: ``--val-protocol`` settings: val-split episodes, or the lake-style runs of one fold.
VAL_PROTOCOLS = ("episodes", "lake-style")
#: ``--amp`` settings (fewnorm.precision maps them to autocast dtypes).
AMP_MODES = ("none", "bf16")

#: Algorithm-specific defaults, normalizer modes and families come from the algorithm registry
#: (:mod:`fewnorm.algorithms`): the MAML family, for one, takes 8000 tasks and evaluates
#: batch-statistics normalizers transductive, since in eval() after adapting on five images
#: running averages collected under per-task buffers score at chance (TaskNorm, Bronskill et al.).


class RunConfig(BaseModel):
    """Everything that decides a run's result; saved resolved in every run directory."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    algo: str = DEFAULT_ALGORITHM
    dataset: str = "omniglot-minimal"
    backbone: str = "conv4"
    hidden: int = Field(64, gt=0, description="filters per Conv-4 block")
    dropblock: float = Field(0.0, ge=0, lt=1, description="ResNet-12 DropBlock drop probability (0: off)")
    norm: str = "batchnorm"
    norm_options: dict[str, Any] = Field(default_factory=dict)

    ways: int = Field(5, gt=0, description="ways of validation and test episodes")
    shots: int = Field(1, gt=0)
    queries: int = Field(15, gt=0, description="queries per class in validation and test")
    train_ways: int | None = Field(
        None, gt=0, description="ways in training (None: max(ways, 20) for protonet, ways otherwise)"
    )
    train_shots: int | None = Field(None, gt=0, description="None: --shots")
    train_queries: int = Field(5, gt=0)

    head: str | None = Field(None, description="classifier/projection head (None: the algorithm's)")
    augment: bool = Field(False, description="augment training episodes (crop, colour jitter, flip)")
    affine: bool | None = Field(
        None,
        description="small random affine distortions of training images (fewnorm.data.affine; None: off)",
    )
    train_rotations: bool | None = Field(
        None,
        description="Omniglot: each training character rotated by 90, 180, 270 degrees as three more "
        "classes (None: on; False: off)",
    )

    episodes: int = Field(
        1200, gt=0, description="training episodes (outer steps); an algorithm's own: AlgorithmSpec.defaults"
    )
    meta_batch: int = Field(1, gt=0, description="episodes per outer step")
    world_size: int | None = Field(
        None, gt=0, description="processes sharing each step (torchrun); None: one, the ordinary seeding"
    )
    lr: float = Field(1e-3, gt=0)
    lr_halve_every: int = Field(0, ge=0, description="halve lr every N episodes (0: never)")
    val_every: int = Field(200, gt=0)
    val_episodes: int = Field(100, gt=0, description="fixed validation episodes (lake-style: runs)")
    val_protocol: str | None = Field(
        None,
        description="what validation selects the checkpoint by: episodes (None: val-split episodes) | "
        "lake-style (20-way 1-shot within-alphabet runs of fold val_fold, fewnorm.data.lakestyle)",
    )
    val_fold: int | None = Field(
        None, ge=0, description="lake-style: the fold whose alphabet is held out of training and validates"
    )
    test_episodes: int = Field(600, gt=0)

    inner_lr: float = Field(0.4, gt=0, description="MAML inner-loop learning rate")
    inner_steps: int = Field(1, gt=0, description="MAML inner steps in training")
    inner_steps_test: int = Field(3, gt=0, description="MAML inner steps at validation/test")
    buffer_policy: str | None = Field(
        None, description="MAML buffers: by_role | per_task | global (None: by_role, BUFFER_POLICIES)"
    )
    query_one_at_a_time: bool = Field(False, description="score each query image alone")
    inner_optimizer: str | None = Field(
        None,
        description="Reptile and fine-tuning steps: sgd | adam | sgd-momentum (None: sgd; INNER_OPTIMIZERS)",
    )
    inner_batch: int | None = Field(None, gt=0, description="Reptile: images per inner step (None: the task)")
    inner_batch_test: int | None = Field(
        None, gt=0, description="Reptile, Baseline: support images per test-time step (None: all)"
    )
    batch_size: int | None = Field(None, gt=0, description="Baseline: images per pre-training minibatch")
    pretrain_classes: int | None = Field(
        None,
        gt=0,
        description="Baseline: outputs of the pre-training head (recorded from the training split)",
    )
    finetune_backbone: bool | None = Field(
        None, description="Baseline: fine-tune the backbone with the fresh head at test time (None: frozen)"
    )

    seed: int = 0
    val_seed: int = Field(10_000_000, ge=0, description="val episode i is drawn from val_seed + i")
    test_seed: int = Field(20_000_000, ge=0, description="test episode i from test_seed + i")
    device: str = "cpu"
    vectorize: bool | None = Field(
        None,
        description="MAML family: adapt a meta-batch's tasks together with torch.func.vmap "
        "(None: on CUDA devices only; on these CPUs the grouped convolutions measured slower)",
    )
    vectorize_chunks: int | None = Field(
        None,
        gt=0,
        description="MAML family, vectorized: vmap calls per meta-batch, each chunk's graph freed "
        "after its backward (None: DEFAULT_VECTORIZE_CHUNKS)",
    )
    channels_last: bool | None = Field(
        None,
        description="run the backbone on NHWC activations (None: where the normalizer declares "
        "it faster, NormSpec.channels_last)",
    )
    amp: str | None = Field(
        None,
        description="mixed precision of the backbone's forward passes: bf16 (torch.autocast); "
        "None (or 'none'): float32",
    )
    threads: int | None = Field(
        None,
        gt=0,
        description="torch intra-op threads (None: torch's own; fewnorm train sets default_threads())",
    )
    data_root: str | None = None
    split_file: str | None = Field(
        None, description="omniglot-vinyals: folder of train.txt, val.txt, test.txt (or one of them)"
    )
    split_classes: str | None = Field(
        None, description="SHA256 of the split files' classes, recorded from split_file when not given"
    )

    @model_validator(mode="before")
    @classmethod
    def _record_split_classes(cls, data: Any, info: ValidationInfo) -> Any:
        # The classes, not just the path, decide the run: resume, evaluate and lake20 check
        # them against the files they read. Skipped while a config file is checked alone.
        if info.context == _KEYS_ONLY or not isinstance(data, Mapping):
            return data
        path = data.get("split_file")
        vinyals = _supports(data.get("dataset"), "split-file")  # otherwise the after-validator says why not
        if vinyals and isinstance(path, str) and path and not data.get("split_classes"):
            from fewnorm.data.splitfile import read_split_files

            return {**data, "split_classes": read_split_files(path).digest()}
        return data

    @model_validator(mode="before")
    @classmethod
    def _algorithm_defaults(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            data = _canonical_algo(data)
            spec = _algorithm_spec(data.get("algo", DEFAULT_ALGORITHM))
            return {**(spec.defaults if spec else {}), **data}
        return data

    @model_validator(mode="before")
    @classmethod
    def _record_norm_mode(cls, data: Any, info: ValidationInfo) -> Any:
        # The few-shot mode decides what a batch-statistics normalizer computes at test time,
        # so every run records it, chosen where the user named none. An unknown normalizer
        # is left for the normalizer check to report.
        if info.context == _KEYS_ONLY or not isinstance(data, Mapping):
            return data
        options = data.get("norm_options", {})
        data = _canonical_algo(data)
        norm, algo = data.get("norm", "batchnorm"), data.get("algo", DEFAULT_ALGORITHM)
        if not isinstance(options, Mapping) or "mode" in options or not isinstance(norm, str):
            return data
        from fewnorm.norms import get_norm

        try:
            spec = get_norm(norm)
        except FewnormError:
            return data
        algorithm = _algorithm_spec(algo)
        mode = spec.default_mode(algorithm.norm_mode if algorithm else None)
        return data if mode is None else {**data, "norm_options": {**options, "mode": mode}}

    @model_validator(mode="after")
    def _known_algorithm(self) -> RunConfig:
        get_algorithm_spec(self.algo)  # an unknown name lists the known ones and the closest
        return self

    @model_validator(mode="after")
    def _known_dataset_and_backbone(self) -> RunConfig:
        from fewnorm.backbones.registry import get_backbone_spec
        from fewnorm.data.registry import get_dataset_spec

        get_dataset_spec(self.dataset)  # unknown names list the known ones and the closest
        get_backbone_spec(self.backbone)
        return self

    @model_validator(mode="after")
    def _known_buffer_policy(self) -> RunConfig:
        if self.buffer_policy is not None and self.buffer_policy not in BUFFER_POLICIES:
            raise ValueError(f"buffer_policy must be one of {', '.join(BUFFER_POLICIES)}")
        return self

    @field_validator("inner_optimizer")
    @classmethod
    def _known_inner_optimizer(cls, value: str | None) -> str | None:
        if value is not None and value not in INNER_OPTIMIZERS:
            raise ValueError(f"inner_optimizer must be one of {', '.join(INNER_OPTIMIZERS)}, got '{value}'")
        return value

    @field_validator("amp")
    @classmethod
    def _known_amp(cls, value: str | None) -> str | None:
        # float32 is always None, so that runs and sweeps that never name amp keep their keys.
        if value is not None and value not in AMP_MODES:
            raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got '{value}'")
        return None if value == "none" else value

    @field_validator("val_protocol")
    @classmethod
    def _known_val_protocol(cls, value: str | None) -> str | None:
        # The default is always None, so that runs and sweeps that never name it keep their keys.
        if value is not None and value not in VAL_PROTOCOLS:
            raise ValueError(f"val_protocol must be one of {', '.join(VAL_PROTOCOLS)}, got '{value}'")
        return None if value == VAL_PROTOCOLS[0] else value

    @model_validator(mode="after")
    def _rotations_need_fixed_omniglot(self) -> RunConfig:
        if self.train_rotations is False and not _supports(self.dataset, "lake-style"):
            raise ValueError(f"train_rotations applies to {_supporting('lake-style')}, not {self.dataset}")
        return self

    @model_validator(mode="after")
    def _lake_style_fold(self) -> RunConfig:
        if self.val_protocol is None:
            if self.val_fold is not None:
                raise ValueError("val_fold (--val-fold) applies to val_protocol lake-style only")
            return self
        if self.val_fold is None:
            raise ValueError("val_protocol lake-style needs val_fold (--val-fold K): the alphabet held out")
        if not _supports(self.dataset, "lake-style"):
            raise ValueError(
                f"val_protocol lake-style applies to {_supporting('lake-style')}, not {self.dataset}"
            )
        if self.world_size:
            raise ValueError("val_protocol lake-style runs in one process; drop --nproc")
        return self

    @model_validator(mode="after")
    def _equal_shares(self) -> RunConfig:
        if self.world_size and self.meta_batch % self.world_size:
            raise ValueError(
                f"meta_batch {self.meta_batch} (--meta-batch / --episodes-per-step) must be a multiple of "
                f"world_size {self.world_size}: every process takes an equal share of each step's episodes"
            )
        return self

    @model_validator(mode="after")
    def _dropblock_needs_resnet12(self) -> RunConfig:
        from fewnorm.backbones.registry import backbones_taking, get_backbone_spec

        if self.dropblock and "dropblock" not in get_backbone_spec(self.backbone).options:
            names = " and ".join(backbones_taking("dropblock"))
            raise ValueError(f"dropblock applies to the {names} backbone only, not {self.backbone}")
        return self

    @field_validator("split_file")
    @classmethod
    def _absolute_split_file(cls, value: str | None) -> str | None:
        # Saved absolute, so that --resume and evaluate find it from any working directory.
        return str(Path(value).expanduser().resolve()) if value else value

    @model_validator(mode="after")
    def _split_file_needs_vinyals(self) -> RunConfig:
        vinyals = _supports(self.dataset, "split-file")
        if vinyals and not self.split_file:
            raise ValueError(
                f"dataset {_canonical_dataset(self.dataset)} needs split_file (--split-file): a folder with "
                "train.txt, val.txt and test.txt, as in Snell et al.'s data/omniglot/splits/vinyals/"
            )
        if self.split_file and not vinyals:
            raise ValueError(
                f"split_file applies to dataset {_supporting('split-file')} only, not {self.dataset}"
            )
        return self

    @property
    def data_options(self) -> dict[str, Any]:
        """Keyword options of :func:`fewnorm.data.load_split` that this run's dataset needs."""
        options: dict[str, Any] = {} if self.train_rotations is not False else {"rotations": False}
        if self.val_protocol is not None:  # lake-style: the fold's alphabet is not trained on
            options["lake_fold"] = self.val_fold
        if not self.split_file:
            return options
        return options | {"split_file": self.split_file, "split_classes": self.split_classes}

    @property
    def effective_train_ways(self) -> int:
        if self.train_ways is not None:
            return self.train_ways
        # ProtoNets train with more ways than they test (Snell et al.); MAML's head fixes the ways.
        metric = get_algorithm_spec(self.algo).family == "metric"
        return max(self.ways, 20) if metric else self.ways

    @property
    def effective_train_shots(self) -> int:
        return self.train_shots or self.shots

    @property
    def effective_buffer_policy(self) -> str:
        """The MAML buffer policy: the setting, else ``by_role`` (a key unset in older sweeps' hashes)."""
        return self.buffer_policy or BUFFER_POLICIES[0]

    @property
    def effective_vectorize_chunks(self) -> int:
        """vmap calls per vectorized meta-batch: the setting, else :data:`DEFAULT_VECTORIZE_CHUNKS`."""
        return self.vectorize_chunks or DEFAULT_VECTORIZE_CHUNKS


#: Above this many threads a Conv-4 episode (5 to 100 small images) gets no faster.
MAX_DEFAULT_THREADS = 8


def default_threads(processes: int = 1) -> int:
    """Intra-op threads for a run: the CPUs this process may use, shared by ``processes``, at most 8.

    Recorded in the run config because CPU results are bit-identical only at equal thread
    counts (sums run in another order).
    """
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_THREADS, cpus // max(1, processes)))


def _one_line(exc: ValidationError, where: str) -> ConfigError:
    return _error_line(exc.errors()[0], where)


def _error_line(first: ErrorDetails, where: str) -> ConfigError:
    key = ".".join(str(p) for p in first["loc"])
    msg = first["msg"]
    if not key:  # a rule across keys (a model validator): its message names the keys
        return ConfigError(f"{where}: {msg.removeprefix('Value error, ')}")
    if first["type"] == "extra_forbidden":
        known = ", ".join(RunConfig.model_fields)
        return ConfigError(f"{where}: unknown key '{key}'; known keys: {known}")
    return ConfigError(f"{where}: key '{key}': {msg} (got {first.get('input')!r})")


def validate_config(values: Mapping[str, Any], where: str) -> RunConfig:
    """``RunConfig`` from ``values``; a :class:`ConfigError` names ``where`` and the key if invalid."""
    try:
        return RunConfig.model_validate(values)
    except ValidationError as exc:
        raise _one_line(exc, where) from None


def check_keys(values: Mapping[str, Any], where: str) -> None:
    """Check the keys and values of a partial configuration (a file that options complete).

    Rules across keys (``omniglot-vinyals`` needs ``split_file``) wait for the complete
    configuration: a config file may leave ``split_file`` to ``--split-file``.
    """
    try:
        RunConfig.model_validate(values, context=_KEYS_ONLY)
    except ValidationError as exc:
        keyed = [e for e in exc.errors() if e["loc"]]
        if keyed:
            raise _error_line(keyed[0], where) from None


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML config file into a mapping (validated later, with overrides applied)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file '{path}': {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "parse error"
        raise ConfigError(f"config file '{path}' is not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys to values")
    return data


def resolve_config(file: Path | None = None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Defaults, then the YAML ``file``, then ``overrides`` (command-line options that were set)."""
    values: dict[str, Any] = {}
    where = "options"
    if file is not None:
        values.update(load_config_file(file))
        where = f"config '{file}'"
    check_keys(values, where)  # name the file when the file itself is wrong
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if "split_file" in given or ("dataset" in given and not _supports(given["dataset"], "split-file")):
        # Other split files, or another dataset: what the file recorded of its split files goes.
        values = {k: v for k, v in values.items() if k not in ("split_file", "split_classes")}
    return validate_config(values | given, "options")


def _algorithm_spec(algo: Any) -> AlgorithmSpec | None:
    """The registered algorithm ``algo`` names, or ``None`` (the after-validator says why)."""
    if not isinstance(algo, str):
        return None
    try:
        return get_algorithm_spec(algo)
    except FewnormError:
        return None


def _canonical_algo(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """``data`` with ``algo`` as its canonical name (case, ``-``, ``_`` and aliases as for every name)."""
    spec = _algorithm_spec(data.get("algo"))
    return data if spec is None else {**data, "algo": spec.name}


def _supports(dataset: Any, capability: str) -> bool:
    """Whether ``dataset`` names a registered dataset that supports ``capability``."""
    from fewnorm.data.registry import supports

    return isinstance(dataset, str) and supports(dataset, capability)


def _canonical_dataset(dataset: str) -> str:
    from fewnorm.data.registry import canonical_dataset

    return canonical_dataset(dataset)


def _supporting(capability: str) -> str:
    """The datasets that support ``capability``, for an error message: ``"a and b"``."""
    from fewnorm.data.registry import datasets_supporting

    return " and ".join(datasets_supporting(capability))
