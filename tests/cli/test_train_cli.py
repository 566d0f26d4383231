"""``fewnorm train`` / ``evaluate`` / ``norms`` end to end on a short omniglot-minimal run."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fewnorm.cli.main import app

pytestmark = pytest.mark.data
SHORT = [
    "--episodes",
    "6",
    "--val-every",
    "3",
    "--val-episodes",
    "4",
    "--test-episodes",
    "8",
    "--train-ways",
    "5",
    "--train-queries",
    "2",
    "--no-progress",
]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, omniglot_root: Path) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("run") / "r"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FEWNORM_DATA", str(omniglot_root))
        code, stdout, stderr = invoke(
            "train", "--norm", "gn", "--norm-opt", "groups=8", *SHORT, "--out", str(out), "--json"
        )
    assert code == 0, stderr
    return out, json.loads(stdout)


def test_train_writes_a_complete_run_directory(trained_run: tuple[Path, dict]) -> None:
    out, summary = trained_run
    assert summary["config"]["norm"] == "groupnorm"
    assert summary["config"]["norm_options"] == {"groups": 8}
    assert summary["test"]["episodes"] == 8
    assert 0.0 <= summary["test"]["accuracy"] <= 1.0
    for name in ("config.yaml", "versions.json", "metrics.jsonl", "best.pt", "summary.json"):
        assert (out / name).is_file(), name
    versions = json.loads((out / "versions.json").read_text())
    assert {"python", "torch", "fewnorm", "plugins"} <= set(versions)
    kinds = [json.loads(line)["kind"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert kinds.count("val") == 2 and "train" in kinds


def test_evaluate_reproduces_the_test_score(trained_run: tuple[Path, dict], data_env: Path) -> None:
    out, summary = trained_run
    code, stdout, stderr = invoke("evaluate", str(out), "--json", "--no-progress")
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["accuracy"] == pytest.approx(summary["test"]["accuracy"], abs=1e-12)
    code, stdout, _ = invoke(
        "evaluate",
        str(out / "best.pt"),
        "--ways",
        "10",
        "--episodes",
        "3",
        "--json",
        "--no-progress",
    )
    assert code == 0
    assert json.loads(stdout)["ways"] == 10


def test_same_seed_same_numbers(trained_run: tuple[Path, dict], data_env: Path, tmp_path: Path) -> None:
    _, summary = trained_run
    code, stdout, stderr = invoke(
        "train",
        "--norm",
        "groupnorm",
        "--norm-opt",
        "groups=8",
        *SHORT,
        "--out",
        str(tmp_path / "again"),
        "--json",
    )
    assert code == 0, stderr
    again = json.loads(stdout)
    assert again["test"] == summary["test"]
    assert again["best_val_accuracy"] == summary["best_val_accuracy"]


def test_human_summary_table(data_env: Path, tmp_path: Path) -> None:
    code, stdout, _ = invoke(
        "train",
        "--norm",
        "batchnorm",
        "--norm-opt",
        "mode=support",
        *SHORT,
        "--out",
        str(tmp_path / "t"),
    )
    assert code == 0
    for text in ("fewnorm run summary", "batchnorm (mode=support)", "test accuracy (95% CI)", "±"):
        assert text in stdout


def test_config_file_with_overrides(data_env: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("norm: layernorm\nways: 3\nqueries: 4\n")
    code, stdout, stderr = invoke(
        "train",
        "--config",
        str(config),
        "--ways",
        "4",
        *SHORT,
        "--out",
        str(tmp_path / "c"),
        "--json",
    )
    assert code == 0, stderr
    cfg = json.loads(stdout)["config"]
    assert (cfg["norm"], cfg["ways"], cfg["queries"]) == ("layernorm", 4, 4)


BAD_INPUTS = [
    (["--norm", "grupnorm"], "unknown normalizer 'grupnorm'. Did you mean 'groupnorm'?"),
    (["--norm-opt", "groups"], "--norm-opt expects key=value"),
    (["--norm", "groupnorm", "--norm-opt", "grups=2"], "has no option 'grups'"),
    (["--norm", "groupnorm", "--norm-opt", "groups=7"], "positive divisor"),
    (["--norm", "batchnorm", "--norm-opt", "mode=global"], "mode must be one of"),
    (["--ways", "30"], "need 30 classes but there are 27 in the val split"),
    (["--shots", "10", "--queries", "15"], "exceeds the 20 images"),
    (["--episodes", "0"], "key 'episodes': Input should be greater than 0"),
    (["--dataset", "omniglott"], "unknown dataset 'omniglott'. Did you mean 'omniglot'?"),
    (["--algo", "protonets"], "unknown algorithm 'protonets'"),
    (["--dropblock", "0.1"], "dropblock applies to the resnet12 backbone only, not conv4"),
    (["--backbone", "resnet12", "--dropblock", "1.5"], "key 'dropblock': Input should be less than 1"),
    (["--device", "cuda"], "CUDA is not available"),
    (["--device", "gpu"], "unknown device 'gpu'; use cpu, cuda or cuda:N"),
    (["--device", "cuda:x"], "unknown device 'cuda:x'; use cpu, cuda or cuda:N"),
    (["--device", "cpu:1"], "unknown device 'cpu:1'"),
    (["--head", "linear"], "--head linear applies to maml, fomaml, anil and reptile; protonet has no head ("),
    (["--inner-lr", "0.1", "--inner-steps-test", "2"], "--inner-lr, --inner-steps-test apply to maml"),
    (["--vectorize-chunks", "2"], "protonet does not use it: drop --vectorize-chunks"),
    (["--amp", "fp16"], "amp must be one of none, bf16, got 'fp16'"),
    (["--plugin", "no_such_plugin_module"], "plugin 'no_such_plugin_module' could not be imported"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS)
def test_bad_input_is_one_clear_line(args: list[str], message: str, data_env: Path, tmp_path: Path) -> None:
    if "--device" in args and __import__("torch").cuda.is_available():
        pytest.skip("CUDA present")
    code, stdout, stderr = invoke("train", *SHORT, *args, "--out", str(tmp_path / "bad"))
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert "Traceback" not in stderr + stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("wayz: 3\n", "unknown key 'wayz'"),
        ("ways: three\n", "key 'ways': Input should be a valid integer"),
        ("- a\n- b\n", "must hold a mapping"),
        ("ways: [\n", "not valid YAML"),
    ],
)
def test_bad_config_file(content: str, message: str, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    code, _, stderr = invoke("train", "--config", str(config))
    assert code == 2
    assert message in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_missing_config_and_checkpoint(tmp_path: Path) -> None:
    code, _, stderr = invoke("train", "--config", str(tmp_path / "nope.yaml"))
    assert code == 2 and "cannot read config file" in stderr
    code, _, stderr = invoke("evaluate", str(tmp_path))
    assert code == 2 and "no checkpoint at" in stderr
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    code, _, stderr = invoke("evaluate", str(junk))
    assert code == 2 and "not a readable fewnorm checkpoint" in stderr


def test_finished_run_directory_is_not_overwritten(trained_run: tuple[Path, dict], data_env: Path) -> None:
    out, _ = trained_run
    before = (out / "summary.json").read_bytes()
    code, _, stderr = invoke("train", *SHORT, "--out", str(out))
    assert code == 2 and "already holds a finished run" in stderr
    assert (out / "summary.json").read_bytes() == before


def test_norms_listing_and_show() -> None:
    code, stdout, _ = invoke("norms", "--json")
    assert code == 0
    names = {n["name"] for n in json.loads(stdout)}
    assert {"batchnorm", "groupnorm", "layernorm", "instancenorm", "none"} <= names
    code, stdout, _ = invoke("norms", "show", "BN", "--json")
    assert code == 0
    shown = json.loads(stdout)
    assert shown["options"]["mode"]["default"] == "transductive"
    code, _, stderr = invoke("norms", "show", "batchnrm")
    assert code == 2 and "Did you mean 'batchnorm'?" in stderr


def test_help_and_norms_do_not_import_torch() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from fewnorm.cli.main import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0; "
        "r = CliRunner().invoke(app, ['norms']); assert r.exit_code == 0, r.output; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_entry_point_plugin_trains(data_env: Path, tmp_path: Path) -> None:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("fewnorm-example-norm")
    except PackageNotFoundError:
        pytest.skip("example plugin not installed (make install installs it)")
    code, stdout, stderr = invoke(
        "train", "--norm", "example-norm", *SHORT, "--out", str(tmp_path / "p"), "--json"
    )
    assert code == 0, stderr
    assert json.loads(stdout)["config"]["norm"] == "examplenorm"
    versions = json.loads((tmp_path / "p" / "versions.json").read_text())
    assert versions["plugins"]["example"] == "fewnorm-example-norm==0.1.0"
    code, stdout, _ = invoke("norms", "--json")
    sources = {n["name"]: n["source"] for n in json.loads(stdout)}
    assert sources["examplenorm"] == "fewnorm-example-norm==0.1.0"


def test_plugin_file_trains_and_evaluates(data_env: Path, tmp_path: Path) -> None:
    plugin = tmp_path / "scalenorm_plugin.py"
    plugin.write_text(
        "import torch\n"
        "from torch import nn\n"
        "from fewnorm.norms import REGISTRY, register_norm\n"
        "class Scale(nn.Module):\n"
        "    def __init__(self, c: int) -> None:\n"
        "        super().__init__()\n"
        "        self.gain = nn.Parameter(torch.ones(c))\n"
        "    def forward(self, x):\n"
        "        return x * self.gain[None, :, None, None] / (x.abs().mean((1, 2, 3), keepdim=True) + 1e-5)\n"
        "if 'clinorm' not in REGISTRY:\n"
        "    @register_norm('clinorm', summary='s', paper='p', statistics=('layer',))\n"
        "    def clinorm(num_channels: int, /) -> nn.Module:\n"
        "        return Scale(num_channels)\n"
    )
    out = tmp_path / "f"
    code, stdout, stderr = invoke(
        "train", "--plugin", str(plugin), "--norm", "clinorm", *SHORT, "--out", str(out), "--json"
    )
    assert code == 0, stderr
    assert json.loads(stdout)["config"]["norm"] == "clinorm"
    code, _, stderr = invoke("evaluate", str(out), "--plugin", str(plugin), "--no-progress", "--json")
    assert code == 0, stderr


def test_default_threads_are_chosen_and_recorded(trained_run: tuple[Path, dict]) -> None:
    from fewnorm.config import default_threads

    out, summary = trained_run
    assert summary["config"]["threads"] == default_threads()
    assert json.loads((out / "versions.json").read_text())["torch_threads"] == default_threads()


def test_threads_flag_sets_and_records_torch_threads(tmp_path: Path, omniglot_root: Path) -> None:
    import torch

    before = torch.get_num_threads()
    out = tmp_path / "r"
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("FEWNORM_DATA", str(omniglot_root))
            code, stdout, stderr = invoke("train", *SHORT, "--threads", "1", "--out", str(out), "--json")
        assert code == 0, stderr
        assert json.loads(stdout)["config"]["threads"] == 1
        assert json.loads((out / "versions.json").read_text())["torch_threads"] == 1
        code, _, stderr = invoke("train", "--resume", str(out), "--threads", "2")
        assert code == 2 and "drop --threads" in stderr
    finally:
        torch.set_num_threads(before)


def test_bad_threads_value_is_one_line(tmp_path: Path) -> None:
    code, _, stderr = invoke("train", "--threads", "0", "--out", str(tmp_path / "r"))
    assert code != 0 and "threads" in stderr and "Traceback" not in stderr


def test_activation_layout_is_resolved_recorded_and_kept_by_evaluate(
    trained_run: tuple[Path, dict], data_env: Path, tmp_path: Path
) -> None:
    _, summary = trained_run
    assert summary["config"]["channels_last"] is True  # groupnorm: declared NHWC (measured 1.24-1.28x faster)
    flagged = tmp_path / "nchw"
    code, stdout, stderr = invoke(
        "train", "--norm", "gn", "--norm-opt", "groups=8", *SHORT, "--no-channels-last", "--out", str(flagged)
    )
    assert code == 0, stderr
    assert "NCHW (--no-channels-last" in " ".join(stdout.split())
    recorded = json.loads((flagged / "summary.json").read_text())
    assert recorded["config"]["channels_last"] is False
    code, stdout, stderr = invoke("evaluate", str(flagged), "--json", "--no-progress")
    assert code == 0, stderr
    # evaluate rebuilds the model from the recorded config, layout included
    assert json.loads(stdout)["accuracy"] == pytest.approx(recorded["test"]["accuracy"], abs=1e-12)


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    return lines[0]


def test_out_naming_a_file_is_one_line(data_env: Path, tmp_path: Path) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("precious")
    code, _, stderr = invoke("train", *SHORT, "--out", str(file))
    assert code == 2 and "is a file, not a directory" in _one_line(stderr)
    code, _, stderr = invoke("train", *SHORT, "--out", str(file / "run"))
    assert code == 2 and "cannot create run directory" in _one_line(stderr)
    assert file.read_text() == "precious"


def test_out_naming_a_directory_of_other_files_is_refused(data_env: Path, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("mine: true\n")
    code, _, stderr = invoke("train", *SHORT, "--out", str(tmp_path))
    assert code == 2 and "holds no fewnorm run but other files (config.yaml)" in _one_line(stderr)
    assert (tmp_path / "config.yaml").read_text() == "mine: true\n"


def test_a_huge_learning_rate_diverges_and_the_run_is_kept(data_env: Path, tmp_path: Path) -> None:
    out = tmp_path / "lr"
    code, _, stderr = invoke("train", *SHORT, "--norm", "batchnorm", "--lr", "1e6", "--out", str(out))
    assert code == 2
    assert "training diverged at episode" in _one_line(stderr) and "x the first step's" in stderr
    marker = (out / "diverged.json").read_bytes()
    config = (out / "config.yaml").read_bytes()
    code, _, stderr = invoke("train", *SHORT, "--out", str(out))
    assert code == 2 and "holds a diverged run (see diverged.json)" in _one_line(stderr)
    assert (out / "diverged.json").read_bytes() == marker and (out / "config.yaml").read_bytes() == config


def test_evaluate_refuses_maml_options_for_a_protonet_run(
    trained_run: tuple[Path, dict], data_env: Path
) -> None:
    out, _ = trained_run
    code, _, stderr = invoke("evaluate", str(out), "--inner-steps-test", "5", "--no-progress")
    assert code == 2 and "--inner-steps-test applies to MAML, FOMAML and ANIL runs" in _one_line(stderr)


@pytest.mark.parametrize("flag", ["--episodes", "--ways", "--shots", "--queries"])
def test_evaluate_refuses_a_count_of_zero(trained_run: tuple[Path, dict], data_env: Path, flag: str) -> None:
    out, _ = trained_run
    code, _, stderr = invoke("evaluate", str(out), flag, "0", "--no-progress")
    assert code == 2 and f"{flag} must be a positive number, got 0" in _one_line(stderr)


@pytest.fixture
def plugin_scope() -> Iterator[None]:
    """Normalizers and plugins a test registers are gone afterwards (they would leak into later tests)."""
    from fewnorm.norms import REGISTRY
    from fewnorm.norms.plugins import LOADED

    names, loaded = set(REGISTRY.names()), dict(LOADED)
    yield
    for name in set(REGISTRY.names()) - names:
        REGISTRY.unregister(name)
    LOADED.clear()
    LOADED.update(loaded)


SHAPE_PLUGIN = """
from torch import nn
from fewnorm.norms import REGISTRY, register_norm
class Half(nn.Module):
    def forward(self, x):
        return x[:, : x.shape[1] // 2]
if 'halfnorm' not in REGISTRY:
    @register_norm('halfnorm', summary='s', paper='p', statistics=('layer',))
    def halfnorm(num_channels: int, /) -> nn.Module:
        return Half()
"""
LAZY_PLUGIN = """
from fewnorm.norms import REGISTRY, NormSpec
if 'lazynorm' not in REGISTRY:
    factory = 'no_such_module_xyz.layer:lazynorm'
    REGISTRY.register(NormSpec(name='lazynorm', factory=factory, summary='s', paper='p'))
"""


@pytest.mark.usefixtures("plugin_scope")
def test_plugin_that_changes_the_shape_is_refused_before_training(data_env: Path, tmp_path: Path) -> None:
    plugin = tmp_path / "half_plugin.py"
    plugin.write_text(SHAPE_PLUGIN)
    code, _, stderr = invoke(
        "train", "--plugin", str(plugin), "--norm", "halfnorm", *SHORT, "--out", str(tmp_path / "r")
    )
    assert code == 2
    line = _one_line(stderr)
    assert (
        f"normalizer 'halfnorm' (from file:{plugin.resolve()}) returns (2, 32, 8, 8) for a (2, 64, 8, 8)"
        in line
    )
    assert not (tmp_path / "r").exists()


@pytest.mark.usefixtures("plugin_scope")
def test_plugin_that_fails_on_a_batch_is_refused_before_training(tmp_path: Path) -> None:
    plugin = tmp_path / "broken_plugin.py"
    plugin.write_text(SHAPE_PLUGIN.replace("halfnorm", "brokennorm").replace(
        "return x[:, : x.shape[1] // 2]", "raise RuntimeError('boom\\nsecond line')"
    ))  # fmt: skip
    code, _, stderr = invoke(
        "train", "--plugin", str(plugin), "--norm", "brokennorm", *SHORT, "--out", str(tmp_path / "r")
    )
    assert code == 2
    assert "fails in a conv block on a (2, 1, 8, 8) batch: RuntimeError: boom second line" in _one_line(
        stderr
    )


@pytest.mark.usefixtures("plugin_scope")
def test_plugin_whose_lazy_factory_module_is_missing_is_one_line(tmp_path: Path) -> None:
    plugin = tmp_path / "lazy_plugin.py"
    plugin.write_text(LAZY_PLUGIN)
    code, _, stderr = invoke(
        "train", "--plugin", str(plugin), "--norm", "lazynorm", "--out", str(tmp_path / "r")
    )
    assert code == 2
    line = _one_line(stderr)
    assert "normalizer 'lazynorm'" in line and "'no_such_module_xyz.layer:lazynorm' cannot be loaded" in line
    code, _, stderr = invoke("norms", "show", "lazynorm")
    assert code == 2 and "cannot be loaded" in _one_line(stderr)


@pytest.mark.usefixtures("plugin_scope")
def test_a_run_of_a_plugin_normalizer_names_the_plugin_to_pass(data_env: Path, tmp_path: Path) -> None:
    from fewnorm.norms import REGISTRY

    plugin = tmp_path / "pluginnorm_plugin.py"
    plugin.write_text(
        "from torch import nn\n"
        "from fewnorm.norms import REGISTRY, register_norm\n"
        "if 'pluginnorm' not in REGISTRY:\n"
        "    @register_norm('pluginnorm', summary='s', paper='p', statistics=('layer',))\n"
        "    def pluginnorm(num_channels: int, /) -> nn.Module:\n"
        "        return nn.GroupNorm(1, num_channels)\n"
    )
    out = tmp_path / "run"
    code, _, stderr = invoke(
        "train", "--plugin", str(plugin), "--norm", "pluginnorm", *SHORT, "--out", str(out), "--json"
    )
    assert code == 0, stderr
    versions = json.loads((out / "versions.json").read_text())
    assert versions["norm_source"] == f"file:{plugin.resolve()}"
    stopped = tmp_path / "stopped"  # the same run, killed before its first checkpoint
    stopped.mkdir()
    for name in ("config.yaml", "versions.json"):
        (stopped / name).write_bytes((out / name).read_bytes())
    REGISTRY.unregister("pluginnorm")  # a new process: the plugin is not loaded
    try:
        expected = (
            f"normalizer 'pluginnorm' from plugin '{plugin.resolve()}', which is not loaded; "
            f"pass --plugin {plugin.resolve()}"
        )
        code, _, stderr = invoke("evaluate", str(out), "--no-progress")
        assert code == 2 and f"error: run '{out}' was trained with {expected}" == _one_line(stderr)
        code, _, stderr = invoke("evaluate", str(out / "best.pt"), "--no-progress")
        assert code == 2 and expected in _one_line(stderr)
        code, _, stderr = invoke("train", "--resume", str(stopped))
        assert code == 2 and expected in _one_line(stderr)
        plugin.rename(tmp_path / "moved.py")
        code, _, stderr = invoke("evaluate", str(out), "--no-progress")
        assert code == 2 and "(that file is no longer there: pass its new location)" in _one_line(stderr)
        code, _, stderr = invoke(
            "evaluate", str(out), "--plugin", str(tmp_path / "moved.py"), "--no-progress"
        )
        assert code == 0, stderr
        code, _, stderr = invoke("train", "--resume", str(stopped), "--plugin", str(tmp_path / "moved.py"))
        assert code == 2 and "rerunning the same command starts it afresh" in _one_line(stderr)
    finally:
        if "pluginnorm" in REGISTRY:  # plugin_scope would not know it had been there
            REGISTRY.unregister("pluginnorm")
