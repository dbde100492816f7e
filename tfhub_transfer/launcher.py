"""`--parallel_trials=N`: one keras-tuner chief plus N workers on this host, one trial each.

`launch_parallel_trials(config, num_workers=N)` (the CLI's `--parallel_trials`, or Python)
writes the config to `<workdir>/logs/config.json`; the chief and the workers each run it
(`python -m tfhub_transfer.launcher CONFIG_JSON`: `run_child`), told their role by
keras-tuner's own environment variables (KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP,
KERASTUNER_ORACLE_PORT). This process never starts TensorFlow (it would hold GPU memory for
the whole search): it counts the GPUs it was given without it (`devices.visible_gpu_ids`:
its own CUDA_VISIBLE_DEVICES, e.g. a SLURM allocation, else what nvidia-smi lists), and
gives each worker its own `--gpus_per_trial` slice of that list, in order. The chief serves
the oracle during the search and then refits the best trial on the first slice, so the
refit trains on as many replicas as each trial did. Every child grows its GPU memory as
needed (TF_FORCE_GPU_ALLOW_GROWTH, unless the user set it). Each child's output
goes to `<workdir>/logs/<name>.log` (with `<name>.pid`); the launcher logs with absl. A worker
that fails is logged and restarted under the same tuner id, resuming its trial, while the
others go on; Ctrl-C stops them all. The cell's
result is read back from the workdir's results stores (`merged.read_workdir`), where the
chief put it.
"""

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Optional, Sequence

from absl import app
from absl import logging

from tfhub_transfer import devices
from tfhub_transfer import faults
from tfhub_transfer import oracle_auth
from tfhub_transfer import progress
from tfhub_transfer import sweep
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.data import threads
from tfhub_transfer.results import merged
from tfhub_transfer.results import workdir as workdir_lib
from tfhub_transfer.results.records import ResultRecord

# How long workers may run on after the chief has exited before they are stopped.
WORKER_GRACE_S = 60.0
# Restarts of one failed worker before the launcher gives up.
MAX_RESTARTS = 2
# The config the chief and the workers run, in the workdir's logs folder.
CONFIG_FILE = "config.json"


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


def check_parallel_trials(config: ExperimentConfig, *, num_workers: int,
                          gpus_per_worker: int, gpu_ids: Sequence[str]) -> None:
  """What `launch_parallel_trials` needs, checked before anything starts.

  Raises:
    ValueError: no workers, a regime without a search (logreg), more GPUs asked for than
      `gpu_ids` holds, or a strategy the workers cannot run (`devices.resolve_strategy`: a GPU
      strategy without GPUs, XLA on several replicas).
  """
  if num_workers < 1 or gpus_per_worker < 1:
    raise ValueError(f"--parallel_trials={num_workers} x --gpus_per_trial={gpus_per_worker}: "
                     f"both must be at least 1.")
  if not config.regime_spec.searches_with_tuner:
    raise ValueError(f"--parallel_trials spreads the trials of one finetune/scratch cell; "
                     f"--regime={config.regime} has no trials. Drop --parallel_trials.")
  for worker in range(num_workers):
    worker_gpus(worker, gpus_per_worker, gpu_ids)
  devices.resolve_strategy(config.strategy, num_gpus=gpus_per_worker if gpu_ids else 0,
                           jit_compile=config.jit_compile)


def one_cell(cells: Sequence[ExperimentConfig]) -> ExperimentConfig:
  """The cell of a grid that `--parallel_trials` runs: the grid must hold exactly one.

  Raises:
    ValueError: the grid holds several cells, or none (this shard's share is empty).
  """
  if len(cells) != 1:
    raise ValueError(f"--parallel_trials spreads the trials of one finetune/scratch cell; "
                     f"got {len(cells)} cells. Run one cell at a time, or use --shard to "
                     f"split a sweep between processes.")
  return cells[0]


def child_command(config_path: str) -> list[str]:
  """The command a chief or worker runs: this interpreter, `run_child` on the config file."""
  return [sys.executable, "-m", "tfhub_transfer.launcher", config_path]


class LaunchFailed(RuntimeError):
  """The chief, or a worker after its restarts, failed; the message names it and its log."""


def cpu_shares(num_workers: int) -> dict[str, Optional[tuple[int, ...]]]:
  """name -> the CPUs a child is pinned to: each worker its own share of this process's CPUs
  (`threads.cpu_share`), so that its TensorFlow and tf.data thread pools are sized to it; the
  chief (idle while it serves the search, then the refit) keeps them all (None)."""
  cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
  shares: dict[str, Optional[tuple[int, ...]]] = {"chief": None}
  for i in range(num_workers):
    shares[f"worker{i}"] = threads.cpu_share(i, num_workers, cpus) if cpus else None
  return shares


def _start(name, command, env, log_dir, cpus=None):
  log = open(os.path.join(log_dir, f"{name}.log"), "ab")
  process = subprocess.Popen(
      command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
      preexec_fn=functools.partial(threads.pin_to_cpus, cpus) if cpus else None)
  log.close()
  with open(os.path.join(log_dir, f"{name}.pid"), "w") as f:
    f.write(str(process.pid))  # For operators (and tests) that need to signal one process.
  logging.info("Started %s (pid %d, CUDA_VISIBLE_DEVICES=%s, CPUs %s), log %s", name,
               process.pid, env.get("CUDA_VISIBLE_DEVICES", "unset"),
               ",".join(map(str, cpus)) if cpus else "all", os.path.join(log_dir, f"{name}.log"))
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


def launch_parallel_trials(config: ExperimentConfig, *, num_workers: int,
                           gpus_per_worker: int = 1, port: Optional[int] = None,
                           max_restarts: int = MAX_RESTARTS,
                           poll_s: float = 1.0) -> Optional[ResultRecord]:
  """Searches `config`'s cell with a keras-tuner chief and `num_workers` workers on this host.

  The config goes to the children as a JSON file in the workdir's logs folder
  (`<workdir>/logs/config.json`); each runs it with `run_child`. A worker that fails is
  restarted under the same tuner id, so keras-tuner hands it back its unfinished trial, which
  resumes from the trial's last backup; after `max_restarts` failures of one worker
  everything is stopped (the search state stays in the workdir: a rerun resumes it).
  Ctrl-C or SIGTERM stops the children, then propagates.

  Args:
    config: the cell to search (its workdir holds the tuner state, store and logs).
    num_workers: worker processes, each running one trial at a time.
    gpus_per_worker: GPUs pinned to each worker.
    port: the oracle's port (default: a free one).
    max_restarts: restarts allowed per worker.
    poll_s: how often processes are checked.

  Returns:
    The cell's stored record, as the chief stored it (None if it stored none).

  Raises:
    ValueError: before anything starts: see `check_parallel_trials`.
    LaunchFailed: the chief failed, or a worker failed `max_restarts` + 1 times.
  """
  workdir = config.workdir
  gpu_ids = devices.visible_gpu_ids()
  check_parallel_trials(config, num_workers=num_workers, gpus_per_worker=gpus_per_worker,
                        gpu_ids=gpu_ids)
  envs = child_environments(gpu_ids, num_workers=num_workers, gpus_per_worker=gpus_per_worker,
                            port=port or free_port())
  token = oracle_auth.new_token()  # This search's secret (`oracle_auth`).
  for env in envs.values():
    env[oracle_auth.TOKEN_ENV] = token
  log_dir = workdir_lib.Workdir(workdir).logs
  os.makedirs(log_dir, exist_ok=True)
  config_path = os.path.join(log_dir, CONFIG_FILE)
  with open(config_path, "w") as f:
    json.dump(config.to_dict(), f, indent=1, sort_keys=True)
  command = child_command(config_path)
  shares = cpu_shares(num_workers)
  processes = {name: _start(name, command, env, log_dir, shares.get(name))
               for name, env in envs.items()}
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
          logging.info("%s finished (log: %s)", name, log)
        elif restarts[name] < max_restarts:
          restarts[name] += 1
          logging.warning("%s FAILED with exit code %d (log: %s); restarting it (%d/%d) to "
                          "resume its trial.", name, code, log, restarts[name], max_restarts)
          processes[name] = _start(name, command, envs[name], log_dir, shares.get(name))
        else:
          failed = (f"{name} FAILED with exit code {code} (log: {log}) {max_restarts + 1} "
                    f"times; the search state is kept in {workdir}: run the same command "
                    f"again to resume.")
      time.sleep(poll_s)
    deadline = time.monotonic() + WORKER_GRACE_S
    while (failed is None and time.monotonic() < deadline
           and any(p.poll() is None for p in processes.values())):
      time.sleep(poll_s)
  except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (`faults.Terminated`): stop, then propagate.
    logging.warning("Interrupted: stopping the chief and the workers.")
    _stop(processes)
    raise
  _stop(processes)
  if failed is not None:
    raise LaunchFailed(failed)
  code = processes["chief"].returncode
  chief_log = os.path.join(log_dir, "chief.log")
  if code != 0:
    raise LaunchFailed(f"chief FAILED with exit code {code} (log: {chief_log}).")
  logging.info("chief finished (log: %s)", chief_log)
  return merged.read_workdir(workdir).get(*config.cell)


def run_child(config_path: str) -> int:
  """A chief or worker (`child_command`): runs the config in `config_path` as a one-cell
  sweep; its role comes from keras-tuner's environment variables. Returns the exit code."""
  progress.show_own_info_only()
  devices.prepare_environment()
  signal.signal(signal.SIGTERM, faults.raise_terminated)
  oracle_auth.check_environment()  # Its secret is set, or one line before the cell.
  with open(config_path) as f:
    config = ExperimentConfig(**json.load(f))
  logging.info("%s: %s.", os.environ.get("KERASTUNER_TUNER_ID", "child"),
               devices.import_tensorflow_quietly())
  summary = sweep.run_grid(config, sweep.Grid.of_cell(config),
                           on_result=lambda result: print(result.summary_line(), flush=True))
  for failure in summary.failures:
    print(f"FAILED {failure}", file=sys.stderr)
  return 1 if summary.failures else 0


def _main(argv: Sequence[str]) -> int:
  if len(argv) != 2:
    raise app.UsageError(f"expected one argument, the config file; got {argv[1:]}")
  return run_child(argv[1])


if __name__ == "__main__":
  app.run(_main)
