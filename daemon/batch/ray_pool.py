"""The Ray pool (`--ray`, `--ray ADDRESS`): the same work as the local pool, done by Ray actors that each hold
one warm model (`FileWorker`) and ask for `threads` CPUs, so Ray places them across the cluster's nodes.

Ray is optional (`pip install 'qasr[batch]'`): it is imported here only, when a run asks for it. Each actor
gets one file at a time from the longest-first queue, so the run ends evenly. Paths cross as absolute paths:
on a cluster the archive and the model bundle must be at the same path on every node (a shared filesystem),
and the outputs come back to this process, which writes them. An actor that dies fails its file and is
replaced.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from typing import Iterator

from qasr.daemon.batch.work import EngineSpec, FileWorker, Job, JobResult
from qasr.errors import QasrError

INSTALL_HINT = "`--ray` needs Ray: pip install 'qasr[batch]' (or scripts/install.sh --batch)"
START_TIMEOUT_S = 600.0  # an actor the cluster cannot place (too few CPUs) would wait for ever


class RayFileWorker:
    """The actor (wrapped with ray.remote at run time, so that this module imports without Ray)."""

    def __init__(self, spec: EngineSpec):
        self.worker = FileWorker(spec)

    def name(self) -> str:
        return self.worker.name

    def run(self, job: Job) -> JobResult:
        return self.worker.run(job)


def import_ray():
    try:
        import ray
    except ImportError:
        raise QasrError(INSTALL_HINT) from None
    return ray


def cluster_cpus(address: str | None) -> int:
    """Connect (starting a local Ray when `address` is None and none runs) and count the cluster's CPUs."""
    ray = import_ray()
    logging.getLogger("ray").setLevel(logging.ERROR)  # its start-up notes would break the progress lines
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                     configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = address or "a local Ray instance"
            raise QasrError(f"cannot reach Ray at {where}: {exc}") from None
    return int(ray.cluster_resources().get("CPU", 1))


class RayPool:
    def __init__(self, spec: EngineSpec, workers: int):
        self.ray = import_ray()
        self.spec = spec
        self.size = workers
        self._actor_class = self.ray.remote(num_cpus=spec.threads, max_restarts=0)(RayFileWorker)
        self._actors: list = []

    def _start_one(self, starting: dict) -> None:
        actor = self._actor_class.remote(self.spec)
        self._actors.append(actor)
        starting[actor.name.remote()] = actor

    def run(self, jobs: list[Job], tick: float = 1.0) -> Iterator[JobResult | None]:
        ray = self.ray
        queue = deque(jobs)
        starting: dict = {}  # name() ref → actor being created
        running: dict = {}  # run() ref → (actor, job)
        idle: list = []
        waited = 0.0
        for _ in range(min(self.size, max(len(jobs), 1))):
            self._start_one(starting)
        while queue or running:
            while idle and queue:
                actor, job = idle.pop(), queue.popleft()
                running[actor.run.remote(job)] = (actor, job)
            if not running and not starting:
                raise QasrError("no Ray worker is left; see the errors above")
            done, _ = ray.wait([*starting, *running], num_returns=1, timeout=tick)
            if not done:
                waited = waited + tick if not running else 0.0
                if waited > START_TIMEOUT_S:
                    raise QasrError(f"Ray placed no worker in {START_TIMEOUT_S:.0f} s: the cluster has fewer free "
                                    f"CPUs than --threads {self.spec.threads}")
                yield None
                continue
            ref = done[0]
            if ref in starting:
                actor = starting.pop(ref)
                try:
                    ray.get(ref)
                except ray.exceptions.RayError as exc:
                    raise QasrError(f"a Ray worker could not load the model: {_reason(exc)}") from None
                idle.append(actor)
                continue
            actor, job = running.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as exc:
                yield JobResult(job.key, ok=False, error=f"the Ray worker died on this file: {_reason(exc)}")
                self._actors.remove(actor)
                self._start_one(starting)
                continue
            idle.append(actor)
            yield result

    def close(self) -> None:
        for actor in self._actors:
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._actors.clear()
        self.ray.shutdown()


def _reason(exc: BaseException) -> str:
    """The last non-empty line of a Ray error (its cause's message), not Ray's whole traceback."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return re.sub(r"^[\w.]+(Error|Exception): ", "", lines[-1]) if lines else type(exc).__name__
