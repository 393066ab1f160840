"""Start ``tools/train_net.py`` under torchrun, SLURM's ``srun`` or detectron2's own ``launch``.

detectron2's :func:`~detectron2.engine.launch` spawns one worker per GPU itself
(``--num-gpus/--num-machines/--machine-rank/--dist-url``). Cluster launchers start every
process themselves and describe it in environment variables; :func:`launch_from_args` reads
them and initialises ``torch.distributed`` the way detectron2's ``_distributed_worker`` does
(detectron2 0.7.2): process group, detectron2's local (per-machine) process group, CUDA device,
barrier, then ``main_fn(args)``.

==========  =======================================================================
launcher    detected from
==========  =======================================================================
torchrun    ``RANK`` or ``WORLD_SIZE`` set; also needs ``LOCAL_RANK``,
            ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` (torchrun sets all)
SLURM       ``SLURM_PROCID`` and ``SLURM_NTASKS`` set, ``SLURM_NTASKS > 1``; also
            ``SLURM_LOCALID`` and tasks per node (``SLURM_STEP_TASKS_PER_NODE``,
            ``SLURM_NTASKS_PER_NODE`` or ``SLURM_TASKS_PER_NODE``, first found); master
            ``MASTER_ADDR`` or the first host of ``SLURM_STEP_NODELIST`` /
            ``SLURM_JOB_NODELIST``; port ``MASTER_PORT`` or :func:`default_slurm_port`
detectron2  anything else, including a SLURM job with a single task (so that
            ``python tools/train_net.py --num-gpus 8`` in a one-task job spawns as before)
==========  =======================================================================

The machine index is ``rank // processes per machine``, the layout detectron2's local process
group assumes; the local rank is checked against it (``SLURM_NODEID`` is not needed).
torchrun wins when both are set (``srun`` starting one ``torchrun`` per node). The backend is
gloo when ``MODEL.DEVICE`` is a CPU or CUDA is unavailable, NCCL otherwise (detectron2's launch
looks at CUDA only, so a CPU config on a GPU machine would get NCCL and fail on CPU tensors).
"""

import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, List, Mapping, Optional

import torch
import torch.distributed as dist
from detectron2.engine import default_argument_parser, launch
from detectron2.engine.launch import DEFAULT_TIMEOUT
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..errors import StartupError

__all__ = [
    "DistributedEnv",
    "check_launch_args",
    "default_slurm_port",
    "detect_distributed_env",
    "expand_nodelist",
    "launch_from_args",
    "parse_tasks_per_node",
    "select_backend",
]

logger = logging.getLogger(__name__)

TORCHRUN_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
)
# Step values first: an ``srun`` inside a larger allocation may run fewer tasks per node than
# the job's ``--ntasks-per-node``.
SLURM_TASKS_PER_NODE_VARS = (
    "SLURM_STEP_TASKS_PER_NODE",
    "SLURM_NTASKS_PER_NODE",
    "SLURM_TASKS_PER_NODE",
)
SLURM_NODELIST_VARS = ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST")
# torchrun's default port, used under SLURM when there is no job id to derive one from.
DEFAULT_MASTER_PORT = 29500


@dataclass(frozen=True)
class DistributedEnv:
    """One process of a job started by a cluster launcher.

    Ranks are laid out in blocks per machine (``rank = node_rank * local_world_size +
    local_rank``), which detectron2's local process group assumes; :func:`detect_distributed_env`
    refuses other layouts.
    """

    launcher: str  # "torchrun" or "slurm"
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int

    @property
    def label(self) -> str:
        return "SLURM" if self.launcher == "slurm" else self.launcher

    @property
    def node_rank(self) -> int:
        return self.rank // self.local_world_size

    @property
    def num_machines(self) -> int:
        return self.world_size // self.local_world_size

    @property
    def init_method(self) -> str:
        # torchrun's agent already serves a TCPStore on MASTER_PORT; env:// makes the workers
        # join it as clients (TORCHELASTIC_USE_AGENT_STORE), whereas tcp:// would make rank 0
        # try to bind the same port.
        if self.launcher == "torchrun":
            return "env://"
        host = f"[{self.master_addr}]" if ":" in self.master_addr else self.master_addr
        return f"tcp://{host}:{self.master_port}"

    def describe(self) -> str:
        return (
            f"rank {self.rank} of world size {self.world_size} (local rank {self.local_rank} "
            f"of {self.local_world_size}, machine {self.node_rank} of {self.num_machines}), "
            f"master {self.master_addr}:{self.master_port}"
        )


def expand_nodelist(nodelist: str) -> List[str]:
    """Host names of a SLURM node list in its compressed form (what ``scontrol show hostnames``
    prints), e.g. ``"node[01-03,07],gpu5"`` -> ``node01 node02 node03 node07 gpu5``.

    Zero padding of a range is kept (``[08-10]`` -> ``08 09 10``); several bracket groups in one
    name expand to every combination (``r[1-2]n[1-2]`` -> ``r1n1 r1n2 r2n1 r2n2``).

    Raises:
        ValueError: unbalanced brackets, an empty name, or a range that is not ``a-b``, a <= b.
    """
    hosts: List[str] = []
    for name in _split_outside_brackets(nodelist.strip(), nodelist):
        hosts.extend(_expand_host(name, nodelist))
    return hosts


def _split_outside_brackets(text: str, nodelist: str) -> List[str]:
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        if depth not in (0, 1):
            raise ValueError(f"SLURM node list {nodelist!r}: unbalanced brackets.")
    if depth != 0:
        raise ValueError(f"SLURM node list {nodelist!r}: unbalanced brackets.")
    parts.append(text[start:])
    if any(not p for p in parts):
        raise ValueError(f"SLURM node list {nodelist!r}: empty host name.")
    return parts


def _expand_host(name: str, nodelist: str) -> List[str]:
    match = re.search(r"\[([^\]]*)\]", name)
    if match is None:
        if "]" in name:
            raise ValueError(f"SLURM node list {nodelist!r}: unbalanced brackets.")
        return [name]
    prefix, suffix = name[: match.start()], name[match.end() :]
    values = []
    for item in match.group(1).split(","):
        bounds = item.split("-")
        if len(bounds) == 1 and bounds[0].isdigit():
            values.append(bounds[0])
        elif (
            len(bounds) == 2
            and all(b.isdigit() for b in bounds)
            and int(bounds[0]) <= int(bounds[1])
        ):
            width = len(bounds[0])
            values.extend(f"{v:0{width}d}" for v in range(int(bounds[0]), int(bounds[1]) + 1))
        else:
            raise ValueError(
                f"SLURM node list {nodelist!r}: cannot read {item!r} in brackets "
                "(expected numbers and ranges like 01-03)."
            )
    return [host for v in values for host in _expand_host(prefix + v + suffix, nodelist)]


def parse_tasks_per_node(value: str) -> List[int]:
    """Tasks on each node from SLURM's ``"2(x3),1"`` form (-> ``[2, 2, 2, 1]``).

    Raises:
        ValueError: anything else.
    """
    counts: List[int] = []
    for item in value.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", item)
        if match is None:
            raise ValueError(
                f"Cannot read tasks per node {value!r} (expected e.g. '4' or '4(x2),2')."
            )
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts


def default_slurm_port(job_id: Optional[str]) -> int:
    """Master port under SLURM without ``MASTER_PORT``: ``15000 + SLURM_JOB_ID % 10000``
    (15000-24999), so that two jobs sharing a node pick different ports; 29500 without a job id.
    """
    if job_id is None or not job_id.isdigit():
        return DEFAULT_MASTER_PORT
    return 15000 + int(job_id) % 10000


def _int_var(environ: Mapping[str, str], name: str, launcher: str) -> int:
    value = environ[name]
    try:
        return int(value)
    except ValueError:
        raise StartupError(
            f"{launcher}: environment variable {name}={value!r} is not an integer."
        ) from None


def detect_distributed_env(environ: Mapping[str, str] = os.environ) -> Optional[DistributedEnv]:
    """The process described by torchrun's or SLURM's variables, or None (detectron2's launch).

    Args:
        environ: the environment to read (``os.environ`` by default).

    Raises:
        StartupError: an incomplete or inconsistent launcher environment (missing variable,
            rank out of range, world size not divisible by processes per machine, uneven tasks
            per node, ranks not in blocks per machine, no master address).
    """
    if "RANK" in environ or "WORLD_SIZE" in environ:
        return _torchrun_env(environ)
    if "SLURM_PROCID" in environ and "SLURM_NTASKS" in environ:
        if _int_var(environ, "SLURM_NTASKS", "SLURM") > 1:
            return _slurm_env(environ)
    return None


def _torchrun_env(environ: Mapping[str, str]) -> DistributedEnv:
    missing = [v for v in TORCHRUN_VARS if v not in environ]
    if missing:
        present = [v for v in TORCHRUN_VARS if v in environ]
        raise StartupError(
            f"torchrun-style environment is incomplete: {', '.join(present)} set but "
            f"{', '.join(missing)} missing. Start tools/train_net.py with torchrun (which sets "
            f"all of {', '.join(TORCHRUN_VARS)}), or unset {', '.join(present)} to use "
            "detectron2's launch (--num-gpus)."
        )
    ints = {v: _int_var(environ, v, "torchrun") for v in TORCHRUN_VARS if v != "MASTER_ADDR"}
    env = DistributedEnv(
        launcher="torchrun",
        rank=ints["RANK"],
        world_size=ints["WORLD_SIZE"],
        local_rank=ints["LOCAL_RANK"],
        local_world_size=ints["LOCAL_WORLD_SIZE"],
        master_addr=environ["MASTER_ADDR"],
        master_port=ints["MASTER_PORT"],
    )
    names = dict(
        rank="RANK", world="WORLD_SIZE", local_rank="LOCAL_RANK", local_world="LOCAL_WORLD_SIZE"
    )
    _check_layout(env, names, "processes per machine (torchrun --nproc_per_node)")
    return env


def _slurm_env(environ: Mapping[str, str]) -> DistributedEnv:
    if "SLURM_LOCALID" not in environ:
        raise StartupError("SLURM: SLURM_LOCALID is not set; start each task with srun.")
    per_node_var = next((v for v in SLURM_TASKS_PER_NODE_VARS if v in environ), None)
    if per_node_var is None:
        raise StartupError(
            f"SLURM: none of {', '.join(SLURM_TASKS_PER_NODE_VARS)} is set, so the number of "
            "tasks per node is unknown. Start the tasks with srun (or set "
            "SLURM_NTASKS_PER_NODE, e.g. with --ntasks-per-node)."
        )
    try:
        counts = parse_tasks_per_node(environ[per_node_var])
    except ValueError as e:
        raise StartupError(f"SLURM: {per_node_var}: {e}") from None
    if len(set(counts)) != 1:
        raise StartupError(
            f"SLURM: {per_node_var}={environ[per_node_var]!r} puts different numbers of tasks "
            "on the nodes; detectron2's per-machine process group needs the same number on "
            "every node. Use --ntasks-per-node (e.g. the GPUs per node) instead of --ntasks."
        )
    master_addr = environ.get("MASTER_ADDR")
    if not master_addr:
        nodelist_var = next((v for v in SLURM_NODELIST_VARS if environ.get(v)), None)
        if nodelist_var is None:
            raise StartupError(
                f"SLURM: no master address: MASTER_ADDR is not set and neither are "
                f"{' nor '.join(SLURM_NODELIST_VARS)}. Export MASTER_ADDR=<host of task 0> "
                "before srun."
            )
        try:
            master_addr = expand_nodelist(environ[nodelist_var])[0]
        except ValueError as e:
            raise StartupError(f"SLURM: {nodelist_var}: {e} Export MASTER_ADDR instead.") from None
    if "MASTER_PORT" in environ:
        master_port = _int_var(environ, "MASTER_PORT", "SLURM")
    else:
        master_port = default_slurm_port(environ.get("SLURM_JOB_ID"))
    env = DistributedEnv(
        launcher="slurm",
        rank=_int_var(environ, "SLURM_PROCID", "SLURM"),
        world_size=_int_var(environ, "SLURM_NTASKS", "SLURM"),
        local_rank=_int_var(environ, "SLURM_LOCALID", "SLURM"),
        local_world_size=counts[0],
        master_addr=master_addr,
        master_port=master_port,
    )
    names = dict(
        rank="SLURM_PROCID",
        world="SLURM_NTASKS",
        local_rank="SLURM_LOCALID",
        local_world=per_node_var,
    )
    _check_layout(env, names, "tasks per node (--ntasks-per-node)")
    if "SLURM_STEP_ID" not in environ and "SLURM_STEPID" not in environ:
        logger.warning(
            "SLURM_NTASKS=%d but SLURM_STEP_ID is not set: this process was probably not "
            "started by srun (e.g. run directly in the batch script), so the other tasks will "
            "not join and start-up waits for %s. Start it with `srun python tools/train_net.py "
            "...`, or with --ntasks 1 to let --num-gpus spawn the workers.",
            env.world_size,
            DEFAULT_TIMEOUT,
        )
    return env


def _check_layout(env: DistributedEnv, names: Mapping[str, str], per_machine: str) -> None:
    """Ranks in range and in blocks per machine, as detectron2's local process group assumes."""
    rank, world = names["rank"], names["world"]
    local_rank, local_world = names["local_rank"], names["local_world"]
    if env.world_size < 1 or env.local_world_size < 1:
        raise StartupError(
            f"{env.label}: {world}={env.world_size} and {local_world}="
            f"{env.local_world_size} must be positive."
        )
    if not 0 <= env.rank < env.world_size:
        raise StartupError(
            f"{env.label}: {rank}={env.rank} is outside 0..{world}-1 ({env.world_size})."
        )
    if not 0 <= env.local_rank < env.local_world_size:
        raise StartupError(
            f"{env.label}: {local_rank}={env.local_rank} is outside 0..{local_world}-1 "
            f"({env.local_world_size})."
        )
    if env.world_size % env.local_world_size:
        raise StartupError(
            f"{env.label}: {world}={env.world_size} is not divisible by {local_world}="
            f"{env.local_world_size}; detectron2 needs the same number of {per_machine} on "
            "every machine."
        )
    if env.rank % env.local_world_size != env.local_rank:
        raise StartupError(
            f"{env.label}: {rank}={env.rank} with {local_rank}={env.local_rank} and "
            f"{local_world}={env.local_world_size}: the ranks of a machine are not one block "
            f"(expected {local_rank}={env.rank % env.local_world_size}), which detectron2's "
            "per-machine process group assumes. Under SLURM use the default block "
            "distribution (srun --distribution=block)."
        )


def _spawn_flags(args) -> List[str]:
    """detectron2 launch flags given with non-default values."""
    default_url = default_argument_parser().get_default("dist_url")
    flags = []
    if getattr(args, "num_gpus", 1) != 1:
        flags.append(f"--num-gpus {args.num_gpus}")
    if getattr(args, "num_machines", 1) != 1:
        flags.append(f"--num-machines {args.num_machines}")
    if getattr(args, "machine_rank", 0) != 0:
        flags.append(f"--machine-rank {args.machine_rank}")
    if getattr(args, "dist_url", default_url) != default_url:
        flags.append(f"--dist-url {args.dist_url}")
    return flags


def check_launch_args(env: DistributedEnv, args) -> None:
    """Refuse detectron2's spawn flags in a process that a cluster launcher already started.

    Raises:
        StartupError: naming the launcher, its process count and the flags, and both ways out.
    """
    flags = _spawn_flags(args)
    if not flags:
        return
    given = " ".join(flags)
    if env.launcher == "torchrun":
        raise StartupError(
            f"tools/train_net.py was started by torchrun (WORLD_SIZE={env.world_size}, "
            f"LOCAL_WORLD_SIZE={env.local_world_size}), which starts every process itself, but "
            f"{given} asks detectron2's launch to start them too. Use one of the two: drop "
            f"{given} and set the processes with torchrun (--nproc_per_node, --nnodes), or run "
            f"`python tools/train_net.py {given} ...` without torchrun."
        )
    raise StartupError(
        f"tools/train_net.py runs as SLURM task {env.rank} of {env.world_size} "
        f"(SLURM_NTASKS={env.world_size}), and each task is one training process, but {given} "
        f"asks detectron2's launch to start more. Use one of the two: drop {given} and start "
        "one task per GPU (srun --ntasks-per-node=<GPUs per node> python tools/train_net.py "
        "...), or start a single task (srun --ntasks 1, or `env -u SLURM_NTASKS` in an "
        f"interactive allocation) that spawns the workers with {given}."
    )


def select_backend(device: str) -> str:
    """``"gloo"`` for a CPU device or without CUDA, else ``"nccl"``."""
    if device.startswith("cpu") or not torch.cuda.is_available():
        return "gloo"
    return "nccl"


def _config_device(args) -> str:
    config_file = getattr(args, "config_file", "")
    if not config_file:
        return "cuda"  # detectron2's default MODEL.DEVICE
    from resnest_dense.config import get_resnest_cfg  # the config path of every tool

    return get_resnest_cfg(config_file, getattr(args, "opts", [])).MODEL.DEVICE


def _announce(message: str, *fmt_args, rank: int = 0) -> None:
    # Logging is configured later, by default_setup inside main; until then, unless the caller
    # configured logging, give this logger detectron2's rank-0 stdout handler.
    if not logger.hasHandlers():
        setup_logger(name=__name__, distributed_rank=rank, abbrev_name="launch")
    logger.info(message, *fmt_args)


def launch_from_args(main_fn: Callable[[Any], Any], args) -> Any:
    """Run ``main_fn(args)`` in a process started by torchrun or srun, else detectron2's launch.

    Args:
        main_fn: the training entry point (``tools/train_net.py``'s ``main``).
        args: parsed ``default_argument_parser()`` arguments; ``--num-gpus``,
            ``--num-machines``, ``--machine-rank`` and ``--dist-url`` go to detectron2's launch
            and must stay at their defaults under a cluster launcher.

    Returns:
        ``main_fn``'s result in a cluster-launched process; None under detectron2's launch
        (which returns nothing).

    Raises:
        StartupError: an inconsistent launcher environment (:func:`detect_distributed_env`),
            detectron2 flags under a cluster launcher, or fewer visible GPUs than processes on
            this machine.
    """
    env = detect_distributed_env(os.environ)
    if env is None:
        _announce(
            "Launcher: detectron2 launch (no torchrun or multi-task SLURM environment), "
            "%d process(es) per machine x %d machine(s), machine rank %d",
            args.num_gpus,
            args.num_machines,
            args.machine_rank,
            rank=args.machine_rank,
        )
        launch(
            main_fn,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
        return None

    check_launch_args(env, args)
    backend = select_backend(_config_device(args))
    if backend == "nccl" and torch.cuda.device_count() < env.local_world_size:
        raise StartupError(
            f"{env.label}: {env.local_world_size} processes on this machine but "
            f"{torch.cuda.device_count()} visible GPU(s) (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}). detectron2 puts local rank r "
            "on cuda:r, so every process must see all GPUs of its machine: request GPUs per "
            "node (--gpus-per-node / --gres=gpu:N), not per task, or start fewer processes."
        )
    _announce("Launcher: %s, %s, backend %s", env.label, env.describe(), backend, rank=env.rank)
    try:
        dist.init_process_group(
            backend=backend,
            init_method=env.init_method,
            world_size=env.world_size,
            rank=env.rank,
            timeout=DEFAULT_TIMEOUT,
        )
    except Exception:
        logger.error("Process group init failed: %s, %s", env.label, env.describe())
        raise
    try:
        comm.create_local_process_group(env.local_world_size)
        if backend == "nccl":
            torch.cuda.set_device(env.local_rank)
        # As detectron2's _distributed_worker: a barrier right after init avoids a later
        # timeout (maskrcnn-benchmark issue 172).
        comm.synchronize()
        return main_fn(args)
    finally:
        # The process ends after main: detectron2's local group (a module global) is not reset.
        dist.destroy_process_group()
