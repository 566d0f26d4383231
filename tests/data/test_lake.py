"""Lake's one-shot runs: reading the exact format, preprocessing, scoring, refusals, download."""

from __future__ import annotations

import io
import random
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from fewnorm.config import RunConfig
from fewnorm.data import registry
from fewnorm.data.download import download
from fewnorm.data.lake import NUM_RUNS, default_runs_path, load_runs
from fewnorm.data.scans import decode_pngs, preprocess
from fewnorm.episodes.algorithms import get_algorithm
from fewnorm.episodes.lake import check_lake_safe, run_error, score_run, score_run_adapted
from fewnorm.episodes.reinit import scoring_algorithm
from fewnorm.errors import ConfigError, DataError
from tests.data.synthetic_release import write_split_files

#: Swapped answers per run in the scored fixture (run number -> wrong labels).
SWAPS = {1: 1, 2: 3, 5: 2, 20: 20}


def _png(grid: torch.Tensor) -> bytes:
    """A 105x105 scan: black (0) strokes on white (255), from a 7x7 boolean grid."""
    pixels = torch.where(grid, 0, 255).to(torch.uint8).repeat_interleave(15, 0).repeat_interleave(15, 1)
    buf = io.BytesIO()
    Image.fromarray(pixels.numpy(), mode="L").convert("1").save(buf, format="PNG")
    return buf.getvalue()


def lake_files(swaps: dict[int, int] | None = None, seed: int = 0) -> dict[str, bytes]:
    """The files of a synthetic ``all_runs`` (relative paths), in Lake's exact format.

    Test item ``i`` is a copy of a training image chosen by a random permutation, and the
    label lines are shuffled, so neither file order nor line order tells the answer. In
    run ``r``, ``swaps[r]`` items get a wrong answer in ``class_labels.txt``.
    """
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    files: dict[str, bytes] = {}
    for r in range(1, NUM_RUNS + 1):
        run = f"run{r:02d}"
        grids = torch.rand(20, 7, 7, generator=gen) < 0.3  # 20 distinct characters
        perm = list(range(20))
        rng.shuffle(perm)
        wrong = set(rng.sample(range(20), (swaps or {}).get(r, 0)))
        lines = []
        for c in range(20):
            files[f"{run}/training/class{c + 1:02d}.png"] = _png(grids[c])
        for i, c in enumerate(perm):
            files[f"{run}/test/item{i + 1:02d}.png"] = _png(grids[c])
            answer = (c + 1) % 20 if i in wrong else c
            lines.append(f"{run}/test/item{i + 1:02d}.png {run}/training/class{answer + 1:02d}.png")
        rng.shuffle(lines)
        files[f"{run}/class_labels.txt"] = ("\n".join(lines) + "\n").encode()
    return files


def write_runs_zip(path: Path, files: dict[str, bytes], prefix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(prefix + name, data)
    return path


def write_runs_folder(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def expected_errors(swaps: dict[int, int]) -> list[float]:
    return [run_error(20 - swaps.get(r, 0), 20) for r in range(1, NUM_RUNS + 1)]


@pytest.fixture(scope="module")
def swapped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_runs_zip(tmp_path_factory.mktemp("lake") / "all_runs.zip", lake_files(SWAPS))


def _score(model: nn.Module, path: Path) -> list[float]:
    return [run_error(score_run(model, run, torch.device("cpu")), 20) for run in load_runs(path)]


def test_copies_score_zero_error_zip_and_folder(tmp_path: Path) -> None:
    files = lake_files()
    write_runs_folder(tmp_path / "folder" / "all_runs", files)
    for path in (
        write_runs_zip(tmp_path / "all_runs.zip", files),  # runs at the top of the zip
        tmp_path / "folder",  # a folder holding the extracted all_runs/
    ):
        assert _score(nn.Flatten(), path) == [0.0] * NUM_RUNS, path


def _score_adapted(config: RunConfig, head_init: str, path: Path, runs: int = NUM_RUNS) -> list[float]:
    """Errors of a freshly initialized MAML-family model of ``config`` with a fresh head per run."""
    torch.manual_seed(0)
    model = get_algorithm(config).build(config, 1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    scorer = scoring_algorithm(config, head_init)
    cpu = torch.device("cpu")
    errors = [run_error(score_run_adapted(scorer, model, run, cpu), 20) for run in load_runs(path)[:runs]]
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # scoring changed nothing
    return errors


@pytest.mark.parametrize(
    "settings",
    [{"algo": "anil", "inner_steps_test": 10}, {"algo": "fomaml", "hidden": 32, "inner_steps_test": 3}],
    ids=["anil", "fomaml"],
)
def test_maml_family_copies_score_exactly_the_swapped_error(settings: dict, swapped: Path) -> None:
    """A prototype-initialised 20-way head, adapted on the training images: copies are right.

    Untrained models: the 20 prototypes alone decide, so this holds only if the head starts as
    the nearest-prototype classifier and the inner loop (lr 0.4) keeps the training images right.
    """
    config = RunConfig.model_validate({"dataset": "omniglot", "norm": "groupnorm", "hidden": 8, **settings})
    assert _score_adapted(config, "proto", swapped) == expected_errors(SWAPS)


def test_maml_family_scores_depend_on_the_head_init_and_the_inner_loop(swapped: Path) -> None:
    """Neither is a no-op: a zero head or an absurd inner lr loses the copies."""
    config = RunConfig(algo="anil", dataset="omniglot", norm="groupnorm", hidden=8, inner_steps_test=10)
    exact = expected_errors(SWAPS)[:4]
    zero = _score_adapted(config, "zero", swapped, runs=4)
    assert all(z > e for z, e in zip(zero, exact, strict=True)), zero
    wild = _score_adapted(config.model_copy(update={"inner_lr": 1e3}), "proto", swapped, runs=4)
    assert all(w > e for w, e in zip(wild, exact, strict=True)), wild


def test_swapped_answers_score_exactly_their_error(swapped: Path) -> None:
    errors = _score(nn.Flatten(), swapped)
    assert errors == expected_errors(SWAPS)
    assert errors[:5] == [5.0, 15.0, 0.0, 0.0, 10.0] and errors[19] == 100.0
    assert sum(errors) / len(errors) == pytest.approx(100 * 26 / 400)


def test_runs_are_preprocessed_like_training(swapped: Path) -> None:
    runs = load_runs(swapped)
    run = runs[1]
    assert run.name == "run02"
    assert run.training_files == [f"run02/training/class{c:02d}.png" for c in range(1, 21)]
    assert run.test_files == [f"run02/test/item{c:02d}.png" for c in range(1, 21)]
    assert run.training.shape == run.test.shape == (20, 1, 28, 28) and run.training.dtype == torch.uint8
    with zipfile.ZipFile(swapped) as zf:
        raw = decode_pngs([zf.read(run.training_files[3])], ["x"])  # (1, 105, 105)
    assert torch.equal(run.training[3:4], preprocess(raw, 28))  # inverted, 105 -> 28 antialiased
    assert int(run.training.max()) == 255 and int(raw.min()) == 0


def test_answers_come_from_the_label_file(swapped: Path) -> None:
    with zipfile.ZipFile(swapped) as zf:
        lines = zf.read("run03/class_labels.txt").decode().split("\n")
    pairs = dict(line.split() for line in lines if line)
    run = load_runs(swapped)[2]
    for item, answer in zip(run.test_files, run.answers, strict=True):
        assert run.training_files[answer] == pairs[item]


def test_damaged_runs_are_clear_errors(tmp_path: Path) -> None:
    files = lake_files()
    with pytest.raises(DataError, match="lacks run07"):
        load_runs(write_runs_zip(tmp_path / "a.zip", {k: v for k, v in files.items() if "run07" not in k}))
    bad = dict(files, **{"run04/class_labels.txt": b"run04/test/item01.png\n"})
    with pytest.raises(DataError, match=r"run04/class_labels.txt\) line 1"):
        load_runs(write_runs_zip(tmp_path / "b.zip", bad))
    gone = {k: v for k, v in files.items() if k != "run09/test/item05.png"}
    with pytest.raises(DataError, match="names missing files"):
        load_runs(write_runs_zip(tmp_path / "c.zip", gone))
    with pytest.raises(DataError, match=r"not found at .*fewnorm data download omniglot"):
        load_runs(tmp_path / "nowhere.zip")
    (tmp_path / "junk.zip").write_bytes(b"PK not really")
    with pytest.raises(DataError, match="not a readable zip"):
        load_runs(tmp_path / "junk.zip")


def test_default_path_prefers_the_zip(tmp_path: Path) -> None:
    assert default_runs_path(tmp_path) == tmp_path / "omniglot" / "all_runs.zip"
    (tmp_path / "omniglot" / "all_runs").mkdir(parents=True)
    assert default_runs_path(tmp_path) == tmp_path / "omniglot" / "all_runs"


@pytest.mark.parametrize("dataset", ["omniglot", "Omniglot_Minimal"])
@pytest.mark.parametrize("algo", ["protonet", "maml", "fomaml", "anil", "reptile", "baseline", "baseline-pp"])
def test_alphabet_disjoint_models_may_be_scored(dataset: str, algo: str) -> None:
    check_lake_safe(RunConfig(dataset=dataset, algo=algo))


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (RunConfig(dataset="mini-imagenet"), "not an Omniglot split known to be alphabet-disjoint"),
        (
            RunConfig(dataset="mini-imagenet", algo="anil"),
            "not an Omniglot split known to be alphabet-disjoint",
        ),
        (
            RunConfig.model_construct(dataset="omniglot", algo="matching-networks"),
            "reptile, baseline, baseline-pp models; this run is 'matching-networks'",
        ),
    ],
)
def test_other_models_are_refused(config: RunConfig, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        check_lake_safe(config)


def test_split_files_are_refused_when_training_saw_evaluation_alphabets(tmp_path: Path) -> None:
    test = ["Kannada/character01/rot000"]
    train, val = ["Angelic/character01/rot090"], ["Greek/character02"]
    vinyals = write_split_files(tmp_path / "vinyals", train=train, val=val, test=test)
    with pytest.raises(ConfigError, match=r"include evaluation alphabets, .* \(Angelic; the Vinyals split"):
        check_lake_safe(RunConfig(dataset="omniglot-vinyals", split_file=str(vinyals)))
    in_val = write_split_files(
        tmp_path / "val", train=["Greek/character01"], val=["ULOG/character03"], test=test
    )
    with pytest.raises(ConfigError, match=r"\(ULOG;"):
        check_lake_safe(RunConfig(dataset="omniglot-vinyals", split_file=str(in_val)))
    background = write_split_files(
        tmp_path / "bg", train=["Greek/character01"], val=["Latin/character01"], test=test
    )
    safe = RunConfig(dataset="omniglot-vinyals", split_file=str(background))
    check_lake_safe(safe)
    # Edited after training: the recorded classes no longer match, so nothing proves the model safe.
    leaky = RunConfig(dataset="omniglot-vinyals", split_file=str(vinyals))
    write_split_files(vinyals, train=["Greek/character01"], val=val, test=test)
    with pytest.raises(
        ConfigError, match=r"cannot be checked .* name other classes than the run was trained on"
    ):
        check_lake_safe(leaky)
    for path in (background / "train.txt", background / "val.txt"):
        path.unlink()  # moved or deleted since training
    with pytest.raises(ConfigError, match=r"split files cannot be checked .* lacks train.txt, val.txt"):
        check_lake_safe(safe)


def test_download_fetches_all_runs_without_a_checksum(
    tmp_path: Path, swapped: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / registry.RUNS).write_bytes(swapped.read_bytes())
    monkeypatch.setenv("FEWNORM_MIRROR", mirror.as_uri())
    assert registry.RUNS in registry.SUBSETS["full"] and registry.RUNS in registry.SUBSETS["all"]
    with pytest.raises(DataError, match=r"images_background.zip.*In place: all_runs.zip"):
        download("omniglot", "full", tmp_path / "root")  # the mirror lacks the image zips
    target = tmp_path / "root" / "omniglot"
    assert [p.name for p in target.iterdir()] == [registry.RUNS]
    monkeypatch.setitem(registry.SUBSETS, "full", (registry.RUNS,))
    (result,) = download("omniglot", root=tmp_path / "root")
    assert (result.status, result.verified, result.size) == ("present", False, swapped.stat().st_size)
    (mirror / registry.RUNS).write_bytes(b"<html>not found</html>")
    (target / registry.RUNS).unlink()
    with pytest.raises(DataError, match=r"all_runs\.zip .* is not a zip archive"):
        download("omniglot", root=tmp_path / "root")
    assert list(target.iterdir()) == []
