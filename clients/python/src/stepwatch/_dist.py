"""Distributed runs: every rank of a ``torchrun`` / ``srun`` / ``mpirun`` job joins one run.

:func:`detect` reads the launcher's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``GROUP_RANK``; Slurm's ``SLURM_PROCID`` …; Open
MPI's ``OMPI_COMM_WORLD_*``) and :func:`run_id` names the run the same on every rank
without the user passing one: from ``TORCHELASTIC_RUN_ID`` (``torchrun --rdzv-id`` or
``--standalone``), else the Slurm job and step, else the launcher process on this host
(one node), else ``MASTER_ADDR:MASTER_PORT``. ``STEPWATCH_RUN`` still wins.

What each rank sends (:class:`RankFilter`): rank 0 everything, as a single process does;
every other rank its system samples (with its step and step time, and only its own GPU),
log records, errors, command answers and its ``rank`` events, each tagged with its rank,
and its metrics only when asked (``connect(rank_metrics=True)`` or
``STEPWATCH_RANK_METRICS=1``: sent as ``rank<N>/<name>`` metrics). Its end (a
``training_end`` its script emits, a signal, an error) becomes ``rank`` ``state: ended``.

:class:`Agreement` makes every rank act on a command at the same step: at each
``batch_end`` the ranks take the minimum, over ranks, of the newest command id each has
received (one ``all_reduce`` of one integer on a gloo group of the process group the
trainer already has); every rank then carries out the commands up to that id, so a pause
finds no rank inside a collective the others have left. While paused no collective is in
flight: each rank waits for the resume on its own command stream.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_log = logging.getLogger("stepwatch")

#: What a rank other than 0 sends without being asked (besides its ``rank`` events).
RANK_EVENTS = frozenset(("system", "heartbeat", "log", "error_occurred", "command_ack", "rank"))
#: Seconds one agreement may wait for the other ranks before it is given up.
DEFAULT_TIMEOUT = 60.0
#: Seconds rank 0 waits, once, at its first ``batch_end``, for every rank to say it is
#: connected (see :meth:`Agreement._handshake`).
HANDSHAKE_S = 5.0


@dataclass(frozen=True)
class World:
    """Where this process sits in a distributed job."""

    rank: int
    size: int
    local_rank: int
    local_size: int
    node_rank: int
    host: str
    launcher: str
    #: What names the job the same on every rank (see :func:`run_id`); None: unknown.
    key: str | None


def _int(env: Mapping[str, str], *names: str) -> int | None:
    for n in names:
        v = env.get(n, "").strip()
        if v:
            try:
                return int(v)
            except ValueError:
                return None
    return None


def detect(env: Mapping[str, str] | None = None) -> World | None:
    """This process's place in a distributed job, or None for a single process (no
    launcher variables, or a world of one)."""
    env = os.environ if env is None else env
    if _int(env, "RANK") is not None and _int(env, "WORLD_SIZE") is not None:
        launcher = "torchrun" if "TORCHELASTIC_RUN_ID" in env else "torch"
        rank, size = _int(env, "RANK") or 0, _int(env, "WORLD_SIZE") or 1
        local = _int(env, "LOCAL_RANK")
        local_size = _int(env, "LOCAL_WORLD_SIZE")
        node = _int(env, "GROUP_RANK", "NODE_RANK", "SLURM_NODEID")
    elif _int(env, "SLURM_PROCID") is not None and _int(env, "SLURM_NTASKS") is not None:
        launcher = "slurm"
        rank, size = _int(env, "SLURM_PROCID") or 0, _int(env, "SLURM_NTASKS") or 1
        local = _int(env, "SLURM_LOCALID")
        local_size = _int(env, "SLURM_NTASKS_PER_NODE")
        node = _int(env, "SLURM_NODEID")
    elif _int(env, "OMPI_COMM_WORLD_RANK") is not None:
        launcher = "mpi"
        rank, size = _int(env, "OMPI_COMM_WORLD_RANK") or 0, _int(env, "OMPI_COMM_WORLD_SIZE") or 1
        local = _int(env, "OMPI_COMM_WORLD_LOCAL_RANK")
        local_size = _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE")
        node = _int(env, "OMPI_COMM_WORLD_NODE_RANK")
    else:
        return None
    if size <= 1 or not 0 <= rank < size:
        return None
    local = rank if local is None else local
    local_size = size if local_size is None else local_size
    if node is None:
        node = rank // local_size if local_size > 0 else 0
    host = socket.gethostname()
    return World(rank, size, local, local_size, node, host, launcher, _key(env, size, local_size))


def _key(env: Mapping[str, str], size: int, local_size: int) -> str | None:
    elastic = env.get("TORCHELASTIC_RUN_ID", "").strip()
    if elastic and elastic != "none":
        return f"elastic:{elastic}"
    job = env.get("SLURM_JOB_ID", "").strip()
    if job:
        return f"slurm:{job}.{env.get('SLURM_STEP_ID', '0').strip()}"
    master = f"{env.get('MASTER_ADDR', '')}:{env.get('MASTER_PORT', '')}"
    if local_size >= size:
        # One node: the ranks share their launcher (torchrun's agent, mp.spawn's parent).
        return f"local:{socket.gethostname()}:{os.getppid()}:{master}"
    if master != ":":
        return f"master:{master}"
    return None


def run_id(world: World) -> str | None:
    """The run id every rank of the job computes alike: ``ddp-<hash>``; None when the
    environment names nothing shared (then pass ``run=`` or ``STEPWATCH_RUN``)."""
    if world.key is None:
        return None
    digest = hashlib.sha256(world.key.encode()).hexdigest()[:12]
    return f"ddp-{digest}"


def rank_metrics_from_env(value: bool | None) -> bool:
    if value is not None:
        return bool(value)
    return os.environ.get("STEPWATCH_RANK_METRICS", "").strip().lower() in ("1", "true", "yes")


class RankFilter:
    """The emitter listener in front of a rank's sender: passes what this rank reports
    (see the module docstring), times its steps and adds them to its system samples."""

    def __init__(self, sender: Any, world: World, rank_metrics: bool = False) -> None:
        self.sender = sender
        self.world = world
        self.rank_metrics = rank_metrics
        self._last_step_at: float | None = None
        self._step_sum = 0.0
        self._step_n = 0
        self._step_ms: float | None = None
        self._step: Any = None
        self._batches = 0
        self._ended = False
        self._start: dict[str, Any] | None = None  # the `rank` started event, until sent

    def __call__(self, record: dict[str, Any]) -> None:
        if self._start is not None and record.get("event") != "rank":
            # Sent with the rank's first event: a connection replaced before it sends
            # anything (an integration naming the run) leaves no empty run behind.
            start, self._start = self._start, None
            self(start)
        event = record.get("event")
        if event == "batch_end":
            self._tick(record)
        elif event == "system":
            record = self._system(record)
        elif event == "training_end":
            if self.world.rank == 0:
                self.sender(record)
            if not self._ended:
                self.send_end(str(record.get("status") or "completed"))
            return
        if event in RANK_EVENTS:
            self.sender({**record, "rank": self.world.rank})
        elif self.world.rank == 0:
            self.sender(record)
        elif self.rank_metrics and event in ("batch_end", "metric_update", "epoch_end"):
            self._own_metrics(record)

    def _tick(self, record: dict[str, Any]) -> None:
        now = time.perf_counter()
        if self._last_step_at is not None:
            self._step_sum += now - self._last_step_at
            self._step_n += 1
        self._last_step_at = now
        self._batches += 1
        step = record.get("step")
        self._step = step if isinstance(step, int) else self._batches

    def _system(self, record: dict[str, Any]) -> dict[str, Any]:
        out = dict(record)
        if self._step is not None:
            out["step"] = self._step
        if self._step_n:
            self._step_ms = 1000.0 * self._step_sum / self._step_n
            self._step_sum, self._step_n = 0.0, 0
        if self._step_ms is not None:
            out["step_ms"] = round(self._step_ms, 3)
        gpus = out.get("gpus")
        w = self.world
        if isinstance(gpus, list) and len(gpus) >= w.local_size > 1:
            own = [g for g in gpus if isinstance(g, dict) and g.get("index") == w.local_rank]
            out["gpus"] = own or gpus[w.local_rank : w.local_rank + 1]
        return out

    def _own_metrics(self, record: dict[str, Any]) -> None:
        prefix = f"rank{self.world.rank}/"
        metrics: dict[str, Any] = {}
        for k, v in record.items():
            if k in ("event", "time", "step", "epoch", "batch_idx"):
                continue
            if k == "metrics" and isinstance(v, dict):
                metrics.update({prefix + str(mk): mv for mk, mv in v.items()})
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                metrics[prefix + k] = v
            elif k == "value" and record.get("name"):
                metrics[prefix + str(record["name"])] = v
        if record.get("event") == "batch_end" and self._step_ms is not None:
            metrics.setdefault(prefix + "step_ms", round(self._step_ms, 3))
        if metrics:
            out: dict[str, Any] = {"event": "metric_update", "time": record.get("time")}
            out["metrics"] = metrics
            if self._step is not None:
                out["step"] = self._step
            self.sender(out)

    def start_event(self, interval: float | None) -> dict[str, Any]:
        w = self.world
        e: dict[str, Any] = {
            "event": "rank",
            "time": time.time(),
            "state": "started",
            "world_size": w.size,
            "local_rank": w.local_rank,
            "local_world_size": w.local_size,
            "node_rank": w.node_rank,
            "host": w.host,
            "pid": os.getpid(),
            "launcher": w.launcher,
        }
        if interval:
            e["interval"] = interval
        return e

    def send_start(self, interval: float | None) -> None:
        """This rank joined: where it runs (sent once, before its first event)."""
        self._start = self.start_event(interval)

    def send_end(self, status: str) -> None:
        """This rank's process ends (``completed``, ``failed``, ``stopped``); once."""
        if self._ended:
            return
        self._ended = True
        e: dict[str, Any] = {"event": "rank", "time": time.time(), "state": "ended"}
        e["status"] = status
        if self._step is not None:
            e["step"] = self._step
        self(e)

    @property
    def ended(self) -> bool:
        return self._ended


class Agreement:
    """The step every rank acts on a command at: one ``all_reduce(MIN)`` of the newest
    command id each rank has seen, at each ``batch_end``, on a gloo group made once from
    the trainer's process group. Unavailable (no ``torch.distributed`` process group, or
    one collective failed): :meth:`agree` returns None and the ranks act as commands
    reach each of them."""

    def __init__(self, world: World, run: str = "", timeout: float | None = None) -> None:
        self.world = world
        self.run = run
        self.timeout = timeout if timeout is not None else _timeout_from_env()
        self._group: Any = None
        self._dist: Any = None
        self._tensor: Any = None
        self.failed: str | None = None
        #: Collectives run (for the figures).
        self.rounds = 0

    def available(self) -> bool:
        """A process group is up (so the ranks can agree) and nothing has failed."""
        if self.failed is not None:
            return False
        dist = sys.modules.get("torch.distributed")
        try:
            return bool(dist is not None and dist.is_available() and dist.is_initialized())
        except Exception:
            return False

    def _setup(self) -> None:
        import datetime

        import torch
        import torch.distributed as dist

        self._dist = dist
        if dist.get_world_size() != self.world.size:
            raise RuntimeError(
                f"the process group has {dist.get_world_size()} ranks, WORLD_SIZE says "
                f"{self.world.size}"
            )
        if dist.get_backend() == "gloo":
            self._group = None  # the default group: already gloo, CPU tensors
        else:
            self._group = dist.new_group(
                backend="gloo", timeout=datetime.timedelta(seconds=self.timeout)
            )
        self._tensor = torch.zeros(1, dtype=torch.int64)

    def _handshake(self) -> bool:
        """Whether every rank takes part: each says so in the process group's store (no
        collective); rank 0 waits up to :data:`HANDSHAKE_S` for all of them, and every
        rank follows its decision. A script that connects rank 0 only is not held up
        again, and its ranks never meet in a collective only some of them call."""
        import datetime

        from torch.distributed import distributed_c10d as c10d

        store = c10d._get_default_store()
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        prefix = f"stepwatch/{self.run}/{restart}/"
        store.set(f"{prefix}rank{self.world.rank}", "1")
        wait = datetime.timedelta(seconds=HANDSHAKE_S)
        if self.world.rank == 0:
            keys = [f"{prefix}rank{i}" for i in range(self.world.size)]
            try:
                store.wait(keys, wait)
                ok = True
            except Exception:
                missing = [i for i in range(self.world.size) if not store.check([keys[i]])]
                _log.warning(
                    "stepwatch: ranks %s are not connected to Stepwatch: commands act on "
                    "rank 0 alone (connect on every rank so they act at one step)",
                    missing,
                )
                ok = False
            store.set(prefix + "agree", "1" if ok else "0")
            return ok
        store.wait([prefix + "agree"], wait * 2)
        return bool(store.get(prefix + "agree") == b"1")

    def agree(self, newest: int) -> int | None:
        """The newest command id every rank has seen (all ranks call this at the same
        step), or None when the ranks cannot agree."""
        if not self.available():
            return None
        try:
            if self._tensor is None:
                if not self._handshake():
                    self.failed = "not every rank is connected"
                    return None
                self._setup()
            t = self._tensor
            t[0] = newest
            self._dist.all_reduce(t, op=self._dist.ReduceOp.MIN, group=self._group)
            self.rounds += 1
            return int(t[0])
        except Exception as e:  # never break training over control
            self.failed = f"{type(e).__name__}: {e}"
            _log.warning(
                "stepwatch: ranks cannot agree on command steps (%s); each rank acts "
                "on commands as they reach it",
                self.failed,
            )
            return None


def _timeout_from_env() -> float:
    try:
        return float(os.environ.get("STEPWATCH_DIST_TIMEOUT", DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT
