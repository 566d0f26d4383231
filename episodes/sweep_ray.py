"""The Ray engine of ``fewnorm compare`` (``--engine ray``): each (normalizer, seed) run is one Ray task.

A task asks for ``--threads`` CPUs (and one GPU with ``--device cuda``) and
runs :func:`fewnorm.episodes.sweep.run_task`, as a local worker does. Its
progress events go to a small :class:`Hub` actor that the driver drains into
the same rich display; the hub also holds the stop flag that Ctrl-C sets.

Resumption is decided inside the task from the run directory's files, not at
submission: when Ray retries a task whose worker died (killed, out of memory,
node lost; up to :data:`MAX_RETRIES` times), the new attempt resumes from the
``last.pt`` the lost one left, and a run that had already finished is never
trained again. Errors of the run itself (bad settings, divergence, a crash in
training) are results, not retries. The sweep directory must be visible at the
same path on every node (a shared filesystem on multi-node clusters).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

from fewnorm.episodes.sweep import Event, SweepInterrupted, Task
from fewnorm.errors import ConfigError

log = logging.getLogger(__name__)

#: Retries of a run whose worker process died (Ray's ``max_retries``); each resumes from ``last.pt``.
MAX_RETRIES = 3
#: A run forwards its episode ticks at most this often (its last one always): each report is one
#: round trip to the hub (about 2 ms), and the display redraws at 10 Hz anyway.
REPORT_EVERY_S = 0.1
#: Seconds Ctrl-C waits for the running runs to checkpoint at their next episode.
STOP_TIMEOUT_S = 120.0
#: Environment the runs see as the driver does (data root, store cache, plugin discovery, mirror).
FORWARDED_ENV = ("FEWNORM_DATA", "FEWNORM_CACHE", "FEWNORM_DISABLE_PLUGIN_AUTOLOAD", "FEWNORM_MIRROR")


def require_ray() -> ModuleType:
    """The ``ray`` module, or one clear line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("the ray engine needs Ray: pip install 'fewnorm[ray]'") from None
    return ray


def gpus_per_run(device: str) -> int:
    """GPUs a run's task asks for: one for CUDA (Ray picks it and hides the others), else none."""
    kind, _, index = device.partition(":")
    if kind != "cuda":
        return 0
    if index:
        raise ConfigError(
            f"--engine ray gives each run the GPU Ray assigns it: pass --device cuda, not '{device}'"
        )
    return 1


class Hub:
    """Actor between the runs and the driver: queues progress events and holds the stop flag."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.stopping = False

    def report(self, event: Event) -> bool:
        """Queue ``event``; returns whether the sweep is stopping."""
        self.events.append(event)
        return self.stopping

    def drain(self) -> list[Event]:
        """The events queued since the last drain, oldest first."""
        events, self.events = self.events, []
        return events

    def stop(self) -> None:
        self.stopping = True


class _Link:
    """A run's end of the hub: forwards its events (episode ticks throttled) and remembers the stop flag.

    Reports wait for the hub's answer, so events arrive in order and the stop flag is at most
    :data:`REPORT_EVERY_S` old; ``is_set`` makes the link usable as ``run_task``'s stop flag.
    """

    def __init__(self, ray: ModuleType, hub: Any) -> None:
        self._ray, self._hub = ray, hub
        self._stopping, self._last, self._total = False, 0.0, 0

    def report(self, event: Event) -> None:
        kind = event[0]
        if kind == "start":
            self._total = event[2]
        final = (kind == "episode" and event[2] == self._total) or (kind == "stage" and event[3] == event[4])
        if kind in ("episode", "stage"):
            now = time.monotonic()
            if not final and now - self._last < REPORT_EVERY_S:
                return
            self._last = now
        self._stopping = self._ray.get(self._hub.report.remote(event))

    def is_set(self) -> bool:
        return self._stopping


@contextmanager
def _as_driver(cwd: str, env: dict[str, str]) -> Iterator[None]:
    """Run in the driver's working directory (where relative paths point) with its ``FORWARDED_ENV``.

    Set per task and undone after it, because Ray reuses a worker process for later tasks.
    """
    before, saved = os.getcwd(), {k: os.environ.get(k) for k in FORWARDED_ENV}
    os.chdir(cwd)
    for key in FORWARDED_ENV:
        if key in env:
            os.environ[key] = env[key]
        else:
            os.environ.pop(key, None)
    try:
        yield
    finally:
        os.chdir(before)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def train_on_worker(
    task: Task, hub: Any, threads: int, plugins: list[str], cwd: str, env: dict[str, str]
) -> tuple[str, str, str]:
    """One run inside a Ray worker; returns ``(name, status, message)`` as :func:`run_task` does.

    Whether to skip, resume or start the run is read from its directory now, so a retry after a
    lost worker resumes from the checkpoint that worker left.
    """
    import ray
    import torch

    from fewnorm.episodes.sweep import resume_decision, run_task
    from fewnorm.norms.plugins import LOADED, load_plugins
    from fewnorm.runs import run_status

    link, host = _Link(ray, hub), socket.gethostname()
    link.report(("worker", task.name, os.getpid(), host))
    sweep_dir = Path(cwd, task.run_dir).parent
    if not Path(cwd).is_dir() or not (sweep_dir / "sweep.json").is_file():
        message = f"the sweep directory {sweep_dir} is not visible on {host}: put it on a shared filesystem"
        link.report(("done", task.name, "failed", message))
        return task.name, "failed", message
    with _as_driver(cwd, env):
        resume = resume_decision(Path(task.run_dir))
        if resume is None:  # an earlier attempt finished (or diverged) and was lost only afterwards
            status = "ok" if run_status(Path(task.run_dir)) == "finished" else "diverged"
            link.report(("done", task.name, status, ""))
            return task.name, status, ""
        torch.set_num_threads(threads)
        load_plugins([p for p in plugins if p not in LOADED])  # a reused worker has them already
        return run_task(replace(task, resume=resume), report=link.report, stop=link)


def _line(exc: BaseException) -> str:
    """The first line of an exception's message (Ray's are long), or its type."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _connect(ray: ModuleType, address: str | None) -> bool:
    """Join the cluster at ``address``, or start a private local instance when there is none.

    ``auto`` is Ray's: ``$RAY_ADDRESS``, else the cluster ``ray start`` runs on this machine.
    Without an address ``RAY_ADDRESS`` is ignored, so the default never joins a cluster by
    surprise. Returns whether this call connected (and so disconnects at the end).
    """
    if ray.is_initialized():  # the caller's own Ray session (a notebook, the tests)
        return False
    try:
        if address:
            ray.init(address=address)
        else:
            ray.init(address="local", include_dashboard=False)
    except ConnectionError as exc:
        raise ConfigError(f"cannot connect to the Ray cluster at --address {address}: {_line(exc)}") from None
    return True


def _warn_if_unschedulable(ray: ModuleType, threads: int, gpus: int) -> None:
    """Ray keeps a task no node can hold pending (an autoscaler may add one): say so once."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if not any(r.get("CPU", 0) >= threads and r.get("GPU", 0) >= gpus for r in nodes):
        gpu = f" and {gpus} GPU" if gpus else ""
        log.warning(
            "no node of the Ray cluster has %d CPUs%s free to give one run; the runs wait until one joins "
            "(lower --threads?)",
            threads,
            gpu,
        )


def execute_ray(
    tasks: list[Task], threads: int, plugins: list[str], show: Callable[[Event], None], address: str | None
) -> dict[str, str]:
    """Run ``tasks`` as Ray tasks, their events to ``show``; returns ``name -> message`` of failures."""
    ray = require_ray()
    if not tasks:
        return {}
    gpus = gpus_per_run(tasks[0].config.get("device", "cpu"))
    connected = _connect(ray, address)
    try:
        _warn_if_unschedulable(ray, threads, gpus)
        hub = ray.remote(num_cpus=0)(Hub).remote()
        remote = ray.remote(train_on_worker).options(num_cpus=threads, num_gpus=gpus, max_retries=MAX_RETRIES)
        try:
            return _drive(ray, hub, remote, tasks, threads, plugins, show)
        finally:
            ray.kill(hub)
    finally:
        if connected:
            ray.shutdown()


def _drive(
    ray: ModuleType,
    hub: Any,
    remote: Any,
    tasks: list[Task],
    threads: int,
    plugins: list[str],
    show: Callable[[Event], None],
) -> dict[str, str]:
    """Submit every run, feed the hub's events to ``show``, collect the outcomes; Ctrl-C stops them."""
    cwd, env = os.getcwd(), {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    refs = {remote.remote(task, hub, threads, plugins, cwd, env): task for task in tasks}
    started: set[str] = set()

    def drain() -> None:
        for event in ray.get(hub.drain.remote()):
            if event[0] == "worker":
                started.add(event[1])
            show(event)

    failures: dict[str, str] = {}
    pending = list(refs)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=0.2)
            drain()
            for ref in done:
                try:
                    name, status, message = ray.get(ref)
                except ray.exceptions.RayError as exc:  # retries spent, or the task's own code failed
                    cause = getattr(exc, "cause", None) or exc
                    name, status, message = (
                        refs[ref].name,
                        "failed",
                        f"{type(cause).__name__}: {_line(cause)}",
                    )
                    show(("done", name, status, message))
                if status == "failed":
                    failures[name] = message
    except KeyboardInterrupt:
        ray.get(hub.stop.remote())
        drain()
        for ref in pending:
            if refs[ref].name not in started:  # queued: drop it (one starting now sees the stop flag)
                ray.cancel(ref)
        ray.wait(pending, num_returns=len(pending), timeout=STOP_TIMEOUT_S)
        drain()
        raise SweepInterrupted("Ctrl-C") from None
    return failures
