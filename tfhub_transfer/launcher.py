"""`--parallel_trials=N`: one keras-tuner chief plus N workers on this host, one trial each.

The chief and the workers are the same `tfhub_transfer` command, told their role by
keras-tuner's own environment variables (KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP,
KERASTUNER_ORACLE_PORT). Each worker sees only its GPUs (CUDA_VISIBLE_DEVICES); the chief
serves the oracle during the search and then refits the best trial on every GPU. Logs go to
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


def count_gpus() -> int:
  """GPUs visible to this process, asked of nvidia-smi (so the launcher needs no TF)."""
  visible = os.environ.get("CUDA_VISIBLE_DEVICES")
  if visible is not None:
    return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
  if not shutil.which("nvidia-smi"):
    return 0
  out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
  return len([line for line in out.stdout.splitlines() if line.startswith("GPU ")])


def worker_gpus(worker: int, gpus_per_worker: int, num_gpus: int) -> Optional[str]:
  """CUDA_VISIBLE_DEVICES of worker `worker` (None on a host without GPUs)."""
  if num_gpus == 0:
    return None
  first = worker * gpus_per_worker
  if first + gpus_per_worker > num_gpus:
    raise ValueError(f"--parallel_trials={worker + 1} x --gpus_per_trial={gpus_per_worker} "
                     f"needs {first + gpus_per_worker} GPUs; this host has {num_gpus}.")
  return ",".join(str(g) for g in range(first, first + gpus_per_worker))


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
  logging.info("Started %s (pid %d), log %s", name, process.pid,
               os.path.join(log_dir, f"{name}.log"))
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
  num_gpus = count_gpus()
  pinning = [worker_gpus(i, gpus_per_worker, num_gpus) for i in range(num_workers)]
  log_dir = workdir_lib.Workdir(workdir).logs
  os.makedirs(log_dir, exist_ok=True)
  base_env = dict(os.environ, KERASTUNER_ORACLE_IP="127.0.0.1",
                  KERASTUNER_ORACLE_PORT=str(port or free_port()),
                  TF_FORCE_GPU_ALLOW_GROWTH="true")
  base_env[oracle_auth.TOKEN_ENV] = oracle_auth.new_token()  # This search's secret.
  command = role_command(args)
  envs = {"chief": dict(base_env, KERASTUNER_TUNER_ID="chief")}
  for i, gpus in enumerate(pinning):
    envs[f"worker{i}"] = dict(base_env, KERASTUNER_TUNER_ID=f"worker{i}")
    if gpus is not None:
      envs[f"worker{i}"]["CUDA_VISIBLE_DEVICES"] = gpus
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
