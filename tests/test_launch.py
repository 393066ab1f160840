"""Starting tools/train_net.py under torchrun, SLURM's srun, or detectron2's launch.

* The environment parsing of :mod:`resnest_dense.engine.launch`: torchrun's and SLURM's
  variables, SLURM node lists and tasks-per-node strings, no variables -> detectron2's launch
  with the command-line flags unchanged, and each refusal with its message.
* In-process: a one-process torchrun environment initialises gloo and detectron2's local group,
  runs ``main`` and tears both down (twice in one process).
* End to end (slow): ``torchrun --standalone --nproc_per_node 2 tools/train_net.py`` and two
  srun-style processes (SLURM variables set by hand) train the tiny ResNeSt-14 Faster R-CNN for
  3 iterations on CPU with gloo.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser
from detectron2.engine.launch import _find_free_port

from detection_helpers import REPO, RESNEST_CONFIGS, TINY, TOY_PREFIX, register_test_toy_set
from resnest_dense.engine import launch as launch_module
from resnest_dense.engine.launch import (
    DistributedEnv,
    default_slurm_port,
    detect_distributed_env,
    expand_nodelist,
    launch_from_args,
    parse_tasks_per_node,
    select_backend,
)
from resnest_dense.errors import StartupError

# The torchrun script of this environment; `python -m torch.distributed.run` is the same CLI.
TORCHRUN = [os.path.join(os.path.dirname(sys.executable), "torchrun")]
if not os.path.isfile(TORCHRUN[0]):
    TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
LAUNCHER_PREFIXES = ("SLURM_", "TORCHELASTIC_")
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK")
LAUNCHER_VARS += ("MASTER_ADDR", "MASTER_PORT")

TORCHRUN_ENV = dict(
    RANK="3", WORLD_SIZE="4", LOCAL_RANK="1", LOCAL_WORLD_SIZE="2",
    MASTER_ADDR="10.1.2.3", MASTER_PORT="29400",
)  # fmt: skip
SLURM_ENV = dict(
    SLURM_PROCID="1", SLURM_NTASKS="2", SLURM_LOCALID="1", SLURM_NTASKS_PER_NODE="2",
    MASTER_ADDR="127.0.0.1", MASTER_PORT="12345", SLURM_STEP_ID="0",
)  # fmt: skip


def _clean_environ():
    """os.environ without any launcher variable (the tests set their own)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(LAUNCHER_PREFIXES) and k not in LAUNCHER_VARS
    }


@pytest.fixture
def clean_env(monkeypatch):
    """Remove launcher variables from os.environ for this test."""
    for key in set(os.environ) - set(_clean_environ()):
        monkeypatch.delenv(key)
    return monkeypatch


def _args(*argv):
    return default_argument_parser().parse_args(list(argv))


# ---------------------------------------------------------------- node lists, tasks per node


@pytest.mark.parametrize(
    "nodelist, hosts",
    [
        ("node07", ["node07"]),
        ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
        ("gpu[08-10]", ["gpu08", "gpu09", "gpu10"]),
        ("a,b[8-10],c", ["a", "b8", "b9", "b10", "c"]),
        ("cn-[1,3],login", ["cn-1", "cn-3", "login"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
    ],
)
def test_expand_nodelist(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize(
    "nodelist, message",
    [
        ("node[01-03", "unbalanced brackets"),
        ("node01]", "unbalanced brackets"),
        ("node[[1]]", "unbalanced brackets"),
        ("node[3-1]", "cannot read '3-1' in brackets"),
        ("node[a-b]", "cannot read 'a-b' in brackets"),
        ("a,,b", "empty host name"),
    ],
)
def test_expand_nodelist_rejects(nodelist, message):
    with pytest.raises(ValueError, match=message):
        expand_nodelist(nodelist)


@pytest.mark.parametrize(
    "value, counts", [("4", [4]), ("2(x3),1", [2, 2, 2, 1]), ("8(x2)", [8, 8])]
)
def test_parse_tasks_per_node(value, counts):
    assert parse_tasks_per_node(value) == counts


def test_parse_tasks_per_node_rejects():
    with pytest.raises(ValueError, match=r"Cannot read tasks per node '2\(3\)'"):
        parse_tasks_per_node("2(3)")


@pytest.mark.parametrize("job_id, port", [("123456", 18456), ("7", 15007), (None, 29500)])
def test_default_slurm_port(job_id, port):
    assert default_slurm_port(job_id) == port


# ---------------------------------------------------------------- detection


def test_torchrun_env():
    env = detect_distributed_env(TORCHRUN_ENV)
    assert env == DistributedEnv("torchrun", 3, 4, 1, 2, "10.1.2.3", 29400)
    assert (env.node_rank, env.num_machines) == (1, 2)
    # Workers join the store that torchrun's agent already serves.
    assert env.init_method == "env://"


@pytest.mark.parametrize(
    "extra, expected",
    [
        ({}, ("127.0.0.1", 12345, 2)),
        # No MASTER_*: first host of the step's node list, port from the job id.
        (
            dict(
                MASTER_ADDR=None,
                MASTER_PORT=None,
                SLURM_JOB_ID="4242",
                SLURM_STEP_NODELIST="gpu[07-08]",
                SLURM_JOB_NODELIST="gpu[01-08]",
            ),
            ("gpu07", 19242, 2),
        ),
        (
            dict(MASTER_ADDR=None, SLURM_JOB_NODELIST="node[01-03,07]"),
            ("node01", 12345, 2),
        ),
        # SLURM_TASKS_PER_NODE's compressed form; the step's value wins over the job's.
        (dict(SLURM_NTASKS_PER_NODE=None, SLURM_TASKS_PER_NODE="2(x1)"), ("127.0.0.1", 12345, 2)),
        (
            dict(SLURM_STEP_TASKS_PER_NODE="1", SLURM_NTASKS_PER_NODE="4", SLURM_LOCALID="0"),
            ("127.0.0.1", 12345, 1),
        ),
    ],
)
def test_slurm_env(extra, expected):
    environ = {k: v for k, v in {**SLURM_ENV, **extra}.items() if v is not None}
    env = detect_distributed_env(environ)
    assert env.launcher == "slurm"
    assert (env.rank, env.world_size) == (1, 2)
    assert (env.master_addr, env.master_port, env.local_world_size) == expected
    assert env.init_method == f"tcp://{expected[0]}:{expected[1]}"


def test_slurm_ipv6_master():
    env = detect_distributed_env({**SLURM_ENV, "MASTER_ADDR": "fd00::1"})
    assert env.init_method == "tcp://[fd00::1]:12345"


def test_torchrun_wins_over_slurm():
    # srun starting one torchrun per node: the workers carry both sets of variables.
    env = detect_distributed_env({**SLURM_ENV, **TORCHRUN_ENV})
    assert env.launcher == "torchrun" and env.world_size == 4


@pytest.mark.parametrize(
    "environ",
    [
        {},
        # A one-task job (sbatch/salloc shell or srun -n 1): detectron2's launch may spawn.
        dict(SLURM_PROCID="0", SLURM_NTASKS="1", SLURM_JOB_ID="7"),
        # sbatch without --ntasks sets no SLURM_NTASKS.
        dict(SLURM_PROCID="0", SLURM_JOB_ID="7", SLURM_JOB_NODELIST="node1"),
    ],
    ids=["empty", "slurm_one_task", "slurm_no_ntasks"],
)
def test_no_launcher_env(environ):
    assert detect_distributed_env(environ) is None


def test_missing_step_id_warns(caplog):
    environ = {k: v for k, v in SLURM_ENV.items() if k != "SLURM_STEP_ID"}
    assert detect_distributed_env(environ).rank == 1
    assert "SLURM_STEP_ID is not set: this process was probably not started by srun" in (
        caplog.text
    )


def _without(env, *keys):
    return {k: v for k, v in env.items() if k not in keys}


@pytest.mark.parametrize(
    "environ, message",
    [
        (
            dict(WORLD_SIZE="2"),
            "torchrun-style environment is incomplete: WORLD_SIZE set but RANK, LOCAL_RANK, "
            "LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT missing. Start tools/train_net.py "
            "with torchrun",
        ),
        ({**TORCHRUN_ENV, "RANK": "x"}, "torchrun: environment variable RANK='x' is not an"),
        ({**TORCHRUN_ENV, "RANK": "4"}, "torchrun: RANK=4 is outside 0..WORLD_SIZE-1 (4)"),
        (
            {**TORCHRUN_ENV, "WORLD_SIZE": "3", "RANK": "1"},
            "torchrun: WORLD_SIZE=3 is not divisible by LOCAL_WORLD_SIZE=2",
        ),
        (
            {**TORCHRUN_ENV, "LOCAL_RANK": "0"},
            "torchrun: RANK=3 with LOCAL_RANK=0 and LOCAL_WORLD_SIZE=2: the ranks of a machine "
            "are not one block (expected LOCAL_RANK=1)",
        ),
        (
            {**SLURM_ENV, "SLURM_NTASKS": "3"},
            "SLURM: SLURM_NTASKS=3 is not divisible by SLURM_NTASKS_PER_NODE=2; detectron2 "
            "needs the same number of tasks per node (--ntasks-per-node) on every machine.",
        ),
        (
            {**_without(SLURM_ENV, "SLURM_NTASKS_PER_NODE"), "SLURM_TASKS_PER_NODE": "2,1"},
            "SLURM: SLURM_TASKS_PER_NODE='2,1' puts different numbers of tasks on the nodes",
        ),
        (
            _without(SLURM_ENV, "MASTER_ADDR"),
            "SLURM: no master address: MASTER_ADDR is not set and neither are "
            "SLURM_STEP_NODELIST nor SLURM_JOB_NODELIST. Export MASTER_ADDR=<host of task 0>",
        ),
        (
            {**_without(SLURM_ENV, "MASTER_ADDR"), "SLURM_JOB_NODELIST": "node[1-"},
            "SLURM: SLURM_JOB_NODELIST: SLURM node list 'node[1-': unbalanced brackets. "
            "Export MASTER_ADDR instead.",
        ),
        (
            _without(SLURM_ENV, "SLURM_LOCALID"),
            "SLURM: SLURM_LOCALID is not set; start each task with srun.",
        ),
        (
            _without(SLURM_ENV, "SLURM_NTASKS_PER_NODE"),
            "SLURM: none of SLURM_STEP_TASKS_PER_NODE, SLURM_NTASKS_PER_NODE, "
            "SLURM_TASKS_PER_NODE is set",
        ),
        (
            # --distribution=cyclic on 2 nodes: task 2 is the second task of node 0.
            {**SLURM_ENV, "SLURM_NTASKS": "4", "SLURM_PROCID": "2", "SLURM_LOCALID": "1"},
            "SLURM: SLURM_PROCID=2 with SLURM_LOCALID=1 and SLURM_NTASKS_PER_NODE=2: the ranks "
            "of a machine are not one block (expected SLURM_LOCALID=0), which detectron2's "
            "per-machine process group assumes. Under SLURM use the default block "
            "distribution (srun --distribution=block).",
        ),
    ],
    ids=[
        "torchrun_incomplete",
        "torchrun_not_int",
        "torchrun_rank_range",
        "torchrun_not_divisible",
        "torchrun_not_block",
        "slurm_not_divisible",
        "slurm_uneven",
        "slurm_no_master",
        "slurm_bad_nodelist",
        "slurm_no_localid",
        "slurm_no_per_node",
        "slurm_cyclic",
    ],
)
def test_refused_environments(environ, message):
    with pytest.raises(StartupError) as info:
        detect_distributed_env(environ)
    assert message in str(info.value)


# ---------------------------------------------------------------- launch_from_args


def _never_called(args):
    raise AssertionError("main must not run")


@pytest.mark.parametrize(
    "environ, argv, message",
    [
        (
            TORCHRUN_ENV,
            ["--num-gpus", "2"],
            "tools/train_net.py was started by torchrun (WORLD_SIZE=4, LOCAL_WORLD_SIZE=2), "
            "which starts every process itself, but --num-gpus 2 asks detectron2's launch to "
            "start them too. Use one of the two: drop --num-gpus 2 and set the processes with "
            "torchrun (--nproc_per_node, --nnodes), or run `python tools/train_net.py "
            "--num-gpus 2 ...` without torchrun.",
        ),
        (
            TORCHRUN_ENV,
            ["--num-machines", "2", "--machine-rank", "1", "--dist-url", "tcp://h:1"],
            "but --num-machines 2 --machine-rank 1 --dist-url tcp://h:1 asks detectron2's",
        ),
        (
            SLURM_ENV,
            ["--num-gpus", "8"],
            "tools/train_net.py runs as SLURM task 1 of 2 (SLURM_NTASKS=2), and each task is "
            "one training process, but --num-gpus 8 asks detectron2's launch to start more. "
            "Use one of the two: drop --num-gpus 8 and start one task per GPU",
        ),
    ],
    ids=["torchrun_num_gpus", "torchrun_machines", "slurm_num_gpus"],
)
def test_spawn_flags_refused(clean_env, environ, argv, message):
    for key, value in environ.items():
        clean_env.setenv(key, value)
    with pytest.raises(StartupError) as info:
        launch_from_args(_never_called, _args(*argv))
    assert message in str(info.value)
    assert not dist.is_initialized()


@pytest.mark.parametrize(
    "environ", [{}, dict(SLURM_PROCID="0", SLURM_NTASKS="1")], ids=["empty", "slurm_one_task"]
)
def test_no_env_calls_detectron2_launch(clean_env, environ):
    for key, value in environ.items():
        clean_env.setenv(key, value)
    calls = []
    clean_env.setattr(launch_module, "launch", lambda *a, **kw: calls.append((a, kw)))
    argv = ["--num-gpus", "3", "--num-machines", "2", "--machine-rank", "1"]
    args = _args(*argv, "--dist-url", "tcp://10.0.0.1:1234")
    assert launch_from_args(_never_called, args) is None
    assert calls == [
        (
            (_never_called, 3),
            dict(num_machines=2, machine_rank=1, dist_url="tcp://10.0.0.1:1234", args=(args,)),
        )
    ]


@pytest.mark.parametrize(
    "device, cuda, backend",
    [
        ("cpu", False, "gloo"),
        ("cpu", True, "gloo"),
        ("cuda", False, "gloo"),
        ("cuda", True, "nccl"),
        ("cuda:0", True, "nccl"),
    ],
)
def test_select_backend(monkeypatch, device, cuda, backend):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert select_backend(device) == backend


def test_backend_from_config(clean_env):
    """MODEL.DEVICE cpu in the config file gives gloo even where CUDA is available."""
    clean_env.setattr(torch.cuda, "is_available", lambda: True)
    args = _args(
        "--config-file", os.path.join(REPO, "configs/quick_schedules/toy_mask_rcnn_S14_FPN.yaml")
    )
    assert select_backend(launch_module._config_device(args)) == "gloo"
    assert launch_module._config_device(_args()) == "cuda"


def test_fewer_gpus_than_processes_refused(clean_env):
    for key, value in {**TORCHRUN_ENV, "CUDA_VISIBLE_DEVICES": "3"}.items():
        clean_env.setenv(key, value)
    clean_env.setattr(torch.cuda, "is_available", lambda: True)
    clean_env.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(StartupError) as info:
        launch_from_args(_never_called, _args())
    assert str(info.value).startswith(
        "torchrun: 2 processes on this machine but 1 visible GPU(s) (CUDA_VISIBLE_DEVICES=3)."
    )
    assert not dist.is_initialized()


@pytest.mark.slow
def test_single_process_torchrun(tmp_path):
    """A one-process torchrun environment: gloo group, local group, main, teardown (in a fresh
    process: detectron2 keeps the local group in a module global for the process's life)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD"))}
    env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_find_free_port()), PYTHONPATH=REPO)
    config = os.path.join(REPO, "configs", RESNEST_CONFIGS["faster"])
    code = (
        "import logging, sys, argparse; logging.basicConfig(level=logging.INFO)\n"
        "import torch.distributed as dist\n"
        "from detectron2.utils import comm\n"
        "from resnest_dense.engine import argument_parser\n"
        "from resnest_dense.engine.launch import launch_from_args\n"
        "def main(args):\n"
        "    print('SEEN', dist.get_backend(), comm.get_world_size(), comm.get_local_size(),"
        " comm.get_rank())\n"
        "    return 'result'\n"
        f"args = argument_parser().parse_args(['--config-file', {config!r}, 'MODEL.DEVICE', 'cpu'])\n"
        "print('RETURNED', launch_from_args(main, args), dist.is_initialized())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "SEEN gloo 1 1 0" in proc.stdout and "RETURNED result False" in proc.stdout
    assert "Launcher: torchrun, rank 0 of world size 1 (local rank 0 of 1, machine 0 of 1)" in (
        proc.stderr + proc.stdout
    )


# ---------------------------------------------------------------- end to end (2 CPU processes)


@pytest.fixture(scope="module")
def toy_json(tmp_path_factory):
    """The toy training set as ``DATASETS.COCO_FORMAT`` options: each launched process
    registers it from the command line."""
    register_test_toy_set(str(tmp_path_factory.mktemp("data") / "toy"))
    DatasetCatalog.get(f"{TOY_PREFIX}_train")  # writes the images and the json once
    meta = MetadataCatalog.get(f"{TOY_PREFIX}_train")
    return ["DATASETS.COCO_FORMAT", [["launch_train", meta.json_file, meta.image_root]]]


def _train_argv(toy_json, out_dir):
    opts = [
        *TINY, *toy_json, "DATASETS.TRAIN", ("launch_train",), "DATASETS.TEST", (),
        "SOLVER.MAX_ITER", 3, "SOLVER.CHECKPOINT_PERIOD", 2, "OUTPUT_DIR", out_dir,
    ]  # fmt: skip
    config = os.path.join(REPO, "configs", RESNEST_CONFIGS["faster"])
    return [os.path.join(REPO, "tools", "train_net.py"), "--config-file", config] + [
        str(o) for o in opts
    ]


def _subprocess_env(**extra):
    # PYTHONPATH: the launched scripts import this checkout's resnest_dense (tools/ is their
    # sys.path[0]); one thread each, two processes on two cores.
    env = dict(_clean_environ(), OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    env.update(extra)
    return env


def _communicate(procs, timeout=150):
    try:
        return [p.communicate(timeout=timeout)[0].decode() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _assert_trained_by_two_ranks(out):
    log0, log1 = (out / "log.txt").read_text(), (out / "log.txt.rank1").read_text()
    assert "Rank of current process: 0. World size: 2" in log0
    assert "Rank of current process: 1. World size: 2" in log1
    # Only rank 0 saves (detectron2's checkpointer logs each save).
    assert log0.count("Saving checkpoint to") == 2 and "Saving checkpoint to" not in log1
    assert sorted(f for f in os.listdir(out) if f.endswith(".pth")) == [
        "model_0000001.pth",
        "model_final.pth",
    ]
    with open(out / "losses.jsonl") as f:
        assert [json.loads(line)["iteration"] for line in f] == [0, 1, 2]


@pytest.mark.slow
def test_torchrun_two_processes(toy_json, tmp_path):
    """``torchrun --standalone --nproc_per_node 2 tools/train_net.py ...`` on CPU."""
    out = tmp_path / "out"
    cmd = TORCHRUN + ["--standalone", "--nproc_per_node", "2"] + _train_argv(toy_json, out)
    proc = subprocess.Popen(
        cmd, env=_subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    (output,) = _communicate([proc])
    assert proc.returncode == 0, output[-3000:]
    assert "Launcher: torchrun, rank 0 of world size 2 (local rank 0 of 2" in output
    assert "backend gloo" in output
    _assert_trained_by_two_ranks(out)


@pytest.mark.slow
def test_srun_style_two_processes(toy_json, tmp_path):
    """Two plain processes with the variables srun sets for 2 tasks on one node."""
    out = tmp_path / "out"
    port = str(_find_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable] + _train_argv(toy_json, out),
            env=_subprocess_env(
                SLURM_PROCID=str(rank),
                SLURM_LOCALID=str(rank),
                SLURM_NTASKS="2",
                SLURM_NTASKS_PER_NODE="2",
                SLURM_NODEID="0",
                SLURM_STEP_ID="0",
                SLURM_JOB_ID="1",
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=port,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for rank in range(2)
    ]
    outputs = _communicate(procs)
    for p, output in zip(procs, outputs):
        assert p.returncode == 0, output[-3000:]
    launcher = (
        "Launcher: SLURM, rank 0 of world size 2 (local rank 0 of 2, machine 0 of 1), "
        f"master 127.0.0.1:{port}, backend gloo"
    )
    assert launcher in outputs[0]
    _assert_trained_by_two_ranks(out)
