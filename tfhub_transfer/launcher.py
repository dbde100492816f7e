"""`--parallel_trials=N`: one keras-tuner chief plus N workers on this host, one trial each.

The chief and the workers are the same `tfhub_transfer` command, told their role by
keras-tuner's own environment variables (KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP,
KERASTUNER_ORACLE_PORT). This process never starts TensorFlow (it would hold GPU memory for
the whole search): it counts the GPUs it was given without it (`devices.visible_gpu_ids`:
its own CUDA_VISIBLE_DEVICES, e.g. a SLURM allocation, else what nvidia-smi lists), and
gives each worker its own `--gpus_per_trial` slice of that list, in order. The chief serves
the oracle during the search and then refits the best trial on the first slice, so the
refit trains on as many replicas as each trial did. Every child grows its GPU memory as
needed (TF_FORCE_GPU_ALLOW_GROWTH, unless the user set it). Logs go to
`<workdir>/logs/` (with `<name>.pid`). A worker that fails is reported and restarted under the
same tuner id, resuming its trial, while the others go on; Ctrl-C stops them all. The cell's
result is read back from the workdir's results stores (`merged.read_workdir`), where the
chief put it.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Optional, Sequence

from absl import logging

from tfhub_transfer import devices
from tfhub_transfer import faults
from tfhub_transfer import oracle_auth
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.results import merged
from tfhub_transfer.results import workdir as workdir_lib

# How long workers may run on after the chief has exited before they are stopped.
WORKER_GRACE_S = 60.0
# Restarts of one failed worker before the launcher gives up.
MAX_RESTARTS = 2


def free_port() -> int:
  with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def worker_gpus(worker: int, gpus_per_worker: int, gpu_ids: Sequence[str]) -> Optional[str]:
  """CUDA_VISIBLE_DEVICES of worker `worker`: its slice of `gpu_ids` (the launcher's own
  visible GPUs, `devices.visible_gpu_ids`); None on a host without GPUs.

  Raises:
    ValueError: the workers need more GPUs than were given.
  """
  if not gpu_ids:
    return None
  first = worker * gpus_per_worker
  if first + gpus_per_worker > len(gpu_ids):
    raise ValueError(f"--parallel_trials={worker + 1} x --gpus_per_trial={gpus_per_worker} "
                     f"needs {first + gpus_per_worker} GPUs; this process was given "
                     f"{len(gpu_ids)} ({','.join(gpu_ids)}). Lower --parallel_trials.")
  return ",".join(gpu_ids[first:first + gpus_per_worker])


def child_environments(gpu_ids: Sequence[str], *, num_workers: int, gpus_per_worker: int,
                       port: int, environ: Optional[dict] = None) -> dict[str, dict]:
  """name -> environment of the chief and each worker: keras-tuner's role variables, GPU
  memory growth (unless set), and CUDA_VISIBLE_DEVICES pinned to its slice of `gpu_ids`
  (the chief: the first, where it refits; on a host without GPUs, left as it was)."""
  base = dict(os.environ if environ is None else environ, KERASTUNER_ORACLE_IP="127.0.0.1",
              KERASTUNER_ORACLE_PORT=str(port))
  devices.prepare_environment(base)
  pinning = [worker_gpus(i, gpus_per_worker, gpu_ids) for i in range(num_workers)]
  envs = {"chief": dict(base, KERASTUNER_TUNER_ID="chief")}
  envs.update({f"worker{i}": dict(base, KERASTUNER_TUNER_ID=f"worker{i}")
               for i in range(num_workers)})
  for name, gpus in zip(envs, [pinning[0] if pinning else None] + pinning):
    if gpus is not None:
      envs[name]["CUDA_VISIBLE_DEVICES"] = gpus
  return envs


def role_command(args: Sequence[str]) -> list[str]:
  """The command a chief or worker runs: this interpreter, the CLI, `args` (the parsed
  flags of this run, serialised, without the launcher's own)."""
  return [sys.executable, "-m", "tfhub_transfer.cli", *args]


def _start(name, command, env, log_dir):
  log = open(os.path.join(log_dir, f"{name}.log"), "ab")
  process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
  log.close()
  with open(os.path.join(log_dir, f"{name}.pid"), "w") as f:
    f.write(str(process.pid))  # For operators (and tests) that need to signal one process.
  logging.info("Started %s (pid %d, CUDA_VISIBLE_DEVICES=%s), log %s", name, process.pid,
               env.get("CUDA_VISIBLE_DEVICES", "unset"), os.path.join(log_dir, f"{name}.log"))
  return process


def _stop(processes, timeout=10.0):
  for process in processes.values():
    if process.poll() is None:
      os.killpg(process.pid, signal.SIGTERM)
  deadline = time.monotonic() + timeout
  for process in processes.values():
    try:
      process.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      os.killpg(process.pid, signal.SIGKILL)
      process.wait()


def launch_parallel_trials(args: Sequence[str], *, config: ExperimentConfig,
                           num_workers: int, gpus_per_worker: int = 1,
                           port: Optional[int] = None, max_restarts: int = MAX_RESTARTS,
                           poll_s: float = 1.0) -> int:
  """Runs the chief and `num_workers` workers to completion; returns the chief's exit code.

  A worker that fails is restarted under the same tuner id, so keras-tuner hands it back its
  unfinished trial, which resumes from the trial's last backup; after `max_restarts` failures
  of one worker everything is stopped (the search state stays in the workdir: a rerun
  resumes it).

  Raises:
    ValueError: more GPUs asked for than given, or a strategy the workers cannot run
      (`devices.resolve_strategy`: a GPU strategy without GPUs, XLA on several replicas),
      before anything starts.

  Args:
    args: the command-line arguments of the chief and the workers (`cli.child_args`).
    config: the cell they search (its workdir holds the tuner state, store and logs).
    num_workers: worker processes, each running one trial at a time.
    gpus_per_worker: GPUs pinned to each worker.
    port: the oracle's port (default: a free one).
    max_restarts: restarts allowed per worker.
    poll_s: how often processes are checked.
  """
  workdir = config.workdir
  gpu_ids = devices.visible_gpu_ids()
  envs = child_environments(gpu_ids, num_workers=num_workers, gpus_per_worker=gpus_per_worker,
                            port=port or free_port())
  token = oracle_auth.new_token()  # This search's secret (`oracle_auth`).
  for env in envs.values():
    env[oracle_auth.TOKEN_ENV] = token
  devices.resolve_strategy(config.strategy, num_gpus=gpus_per_worker if gpu_ids else 0,
                           jit_compile=config.jit_compile)
  log_dir = workdir_lib.Workdir(workdir).logs
  os.makedirs(log_dir, exist_ok=True)
  command = role_command(args)
  processes = {name: _start(name, command, env, log_dir) for name, env in envs.items()}
  restarts = dict.fromkeys(processes, 0)
  finished = set()
  failed = None
  try:
    while processes["chief"].poll() is None and failed is None:
      for name, process in processes.items():
        code = process.poll()
        if code is None or name in finished or name == "chief":
          continue
        log = os.path.join(log_dir, name + ".log")
        if code == 0:
          finished.add(name)
          print(f"{name} finished (log: {log})", flush=True)
        elif restarts[name] < max_restarts:
          restarts[name] += 1
          print(f"{name} FAILED with exit code {code} (log: {log}); restarting it "
                f"({restarts[name]}/{max_restarts}) to resume its trial.", flush=True)
          processes[name] = _start(name, command, envs[name], log_dir)
        else:
          failed = name
          print(f"{name} FAILED with exit code {code} (log: {log}) {max_restarts + 1} "
                f"times; stopping. The search state is kept in {workdir}: run the same "
                f"command again to resume.", file=sys.stderr, flush=True)
      time.sleep(poll_s)
    deadline = time.monotonic() + WORKER_GRACE_S
    while (failed is None and time.monotonic() < deadline
           and any(p.poll() is None for p in processes.values())):
      time.sleep(poll_s)
  except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (`faults.Terminated`).
    print("Interrupted: stopping the chief and the workers.", file=sys.stderr, flush=True)
    _stop(processes)
    return faults.TERMINATED_EXIT_CODE if isinstance(e, faults.Terminated) else 130
  _stop(processes)
  if failed is not None:
    return 1
  code = processes["chief"].returncode
  print(f"chief {'finished' if code == 0 else f'FAILED with exit code {code}'} "
        f"(log: {os.path.join(log_dir, 'chief.log')})", flush=True)
  record = merged.read_workdir(workdir).get(*config.cell)
  if record is not None:
    print(record.summary_line(), flush=True)
  return code if code > 0 else (1 if code else 0)
