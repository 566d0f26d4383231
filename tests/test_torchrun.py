"""The end of a torchrun worker: leave() closes the group it made, exit_now() skips finalization.

Gloo's worker threads outlive ``destroy_process_group``; one releasing the last
collective's tensors while Python finalizes aborts the process (about one run in
ten here). The race itself cannot be provoked on demand, so these tests pin the
mechanism that avoids it: leave() records a closed group, main() then ends by
exit_now(), and exit_now() keeps the exit code and everything written.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest

from fewnorm import torchrun
from fewnorm.cli import main as cli_main


def _python(code: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", textwrap.dedent(code)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


EXITS = [("None", 0, ""), ("3", 3, ""), ("'bad input'", 1, "bad input")]  # SystemExit's code -> rc, stderr


@pytest.mark.parametrize(("code", "rc", "stderr"), EXITS)
def test_exit_now_keeps_the_code_and_flushes_what_was_written(code: str, rc: int, stderr: str) -> None:
    result = _python(
        f"""
        import logging, sys
        from fewnorm import torchrun
        logging.basicConfig(stream=sys.stderr, format="%(message)s")
        sys.stdout.write("unflushed summary")  # no newline: still in the buffer
        logging.getLogger("x").warning("logged")
        torchrun.exit_now({code})
        """
    )
    assert result.returncode == rc
    assert result.stdout == "unflushed summary"
    assert "logged" in result.stderr and stderr in result.stderr


def test_leave_records_that_it_closed_a_gloo_group() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = _python(
        f"""
        import torch.distributed as dist
        from fewnorm import torchrun
        assert not torchrun.closed_a_group()
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{port}", rank=0, world_size=1)
        torchrun._made.append(True)  # as join() records a group it made
        parts = [None]
        dist.all_gather_object(parts, {{"accuracy": 0.5}})
        torchrun.leave()
        print(dist.is_initialized(), torchrun.closed_a_group(), parts)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(maxsplit=2)[:2] == ["False", "True"]


class _ExitNowCalledError(Exception):
    def __init__(self, code: object) -> None:
        self.code = code


def _fake_main(monkeypatch: pytest.MonkeyPatch, code: int, *, closed: bool) -> None:
    """main() around an app that exits with ``code``, in a process that did or did not run a group."""

    def app(**_: object) -> None:
        raise SystemExit(code)

    def exit_now(code: object) -> None:
        raise _ExitNowCalledError(code)

    monkeypatch.setattr(cli_main, "app", app)
    monkeypatch.setattr(torchrun, "exit_now", exit_now)
    monkeypatch.setattr(torchrun, "_closed", [True] if closed else [])
    cli_main.main()


@pytest.mark.parametrize("code", [0, 2, 130])
def test_main_ends_a_worker_that_ran_a_group_by_exit_now(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    with pytest.raises(_ExitNowCalledError) as exited:
        _fake_main(monkeypatch, code, closed=True)
    assert exited.value.code == code


def test_main_exits_normally_without_a_group(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit) as exited:
        _fake_main(monkeypatch, 2, closed=False)
    assert exited.value.code == 2
