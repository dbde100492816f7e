"""keras-tuner's distributed mode on 127.0.0.1: a chief and a worker by hand through the CLI,
and a chief and two workers (one killed and restarted) by the launcher
(`launch_parallel_trials`) from Python. Each process starts TensorFlow (~7 CPU-seconds): two
workers race for trials in the launcher's test only."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from unittest import mock

import tensorflow as tf

from tests import fakes
from tfhub_transfer import launcher
from tfhub_transfer import oracle_auth
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.results import merged as stores

_DEADLINE_S = 420


def _cell_args(tmp, workdir):
  hub = os.path.join(tmp, "hub")
  if not os.path.exists(hub):
    fakes.make_tiny_savedmodel(hub, feature_dim=8, grid=2)
  return ["--model=hub:" + hub, "--dataset=digits", "--regime=finetune", "--image_size=16",
          "--max_examples=40", "--batch_size=8", "--train_steps=2",
          "--learning_rates=0.01,0.001", "--weight_decays=0,0.0001", "--workdir=" + workdir,
          "--data_dir=" + fakes.digits_data_dir()]


def _stop_all(processes):
  for p in processes:
    if p.poll() is None:
      os.killpg(p.pid, signal.SIGKILL)
      p.wait()


class DistributedTuningTest(tf.test.TestCase):

  def _check_store(self, workdir):
    store = stores.read_workdir(workdir)
    (record,) = store.records()
    self.assertEqual(record["status"], "ok", record.get("error"))
    self.assertIn(record["hparams"]["learning_rate"], (0.01, 0.001))
    trials = store.trials()
    self.assertLen(trials, 4)  # Every grid point once, none twice.
    self.assertLen({(t["hparams"]["learning_rate"], t["hparams"]["weight_decay"])
                    for t in trials}, 4)
    self.assertEqual({t["status"] for t in trials}, {"ok"})
    best = max(t["val_metric"] for t in trials)
    self.assertNear(record["val_metric"], best, 1e-9)

  def test_chief_and_a_worker_by_hand_on_loopback(self):
    tmp = self.get_temp_dir()
    workdir = os.path.join(tmp, "shared_workdir")
    args = _cell_args(tmp, workdir)
    port = str(launcher.free_port())
    token = oracle_auth.new_token()  # As a user exports it on every host.
    processes, logs = [], []
    try:
      for role in ("chief", "worker0"):
        log = open(os.path.join(tmp, role + ".log"), "w")
        logs.append(log)
        env = fakes.subprocess_env(KERASTUNER_TUNER_ID=role,
                                   KERASTUNER_ORACLE_IP="127.0.0.1",
                                   KERASTUNER_ORACLE_PORT=port,
                                   TFHUB_TRANSFER_ORACLE_TOKEN=token)
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "tfhub_transfer.cli", *args], cwd=fakes.REPO_ROOT, env=env,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
      deadline = time.monotonic() + _DEADLINE_S
      for p in processes:
        p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
      _stop_all(processes)
      for log in logs:
        log.close()
    codes = [p.returncode for p in processes]
    with open(os.path.join(tmp, "chief.log")) as f:
      chief_log = f.read()
    self.assertEqual(codes, [0, 0], chief_log[-3000:])
    self.assertIn("test top1 =", chief_log)
    self._check_store(workdir)

  def test_parallel_trials_from_python_survive_a_killed_worker(self):
    tmp = self.get_temp_dir()
    workdir = os.path.join(tmp, "launched")
    hub = os.path.join(tmp, "hub")
    fakes.make_tiny_savedmodel(hub, feature_dim=8, grid=2)
    config = ExperimentConfig(
        model="hub:" + hub, dataset="digits", regime="finetune", image_size=16,
        max_examples=40, batch_size=8, train_steps=40, learning_rates=(0.01, 0.001),
        weight_decays=(0.0, 0.0001), workdir=workdir, data_dir=fakes.digits_data_dir())
    launched = {}
    thread = threading.Thread(target=lambda: launched.update(record=(
        launcher.launch_parallel_trials(config, num_workers=2, poll_s=0.2))))
    # The children inherit this environment: this checkout, on CPU.
    with mock.patch.dict(os.environ, fakes.subprocess_env()), \
        self.assertLogs(logger="absl", level="INFO") as logs:
      thread.start()
      # Kill worker0 (SIGKILL, as a crash or an OOM kill) once the search is under way.
      deadline = time.monotonic() + _DEADLINE_S
      while time.monotonic() < deadline and thread.is_alive():
        if os.path.isdir(workdir) and stores.read_workdir(workdir).trials():
          break
        time.sleep(0.2)
      with open(os.path.join(workdir, "logs", "worker0.pid")) as f:
        os.killpg(int(f.read()), signal.SIGKILL)
      thread.join(timeout=_DEADLINE_S)
    output = "\n".join(logs.output)
    self.assertFalse(thread.is_alive())
    self.assertEqual(launched["record"]["status"], "ok", output[-3000:])
    self.assertIn("worker0 FAILED with exit code -9", output)
    self.assertIn("restarting it (1/2) to resume its trial", output)
    self.assertIn("chief finished", output)
    with open(os.path.join(workdir, "logs", "config.json")) as f:  # What the children ran.
      self.assertEqual(ExperimentConfig(**json.load(f)), config)
    self.assertContainsSubset(["chief.log", "worker0.log", "worker1.log"],
                              os.listdir(os.path.join(workdir, "logs")))
    self._check_store(workdir)  # Every trial once, the killed worker's included.

  def test_parallel_trials_are_checked_before_anything_starts(self):
    config = ExperimentConfig(model="mobilenet_v2", dataset="digits", regime="logreg")
    with self.assertRaisesRegex(ValueError, "--regime=logreg has no trials"):
      launcher.check_parallel_trials(config, num_workers=2, gpus_per_worker=1, gpu_ids=[])
    finetune = dataclasses.replace(config, regime="finetune")
    with self.assertRaisesRegex(ValueError, r"needs 3 GPUs; this process was given 2"):
      launcher.check_parallel_trials(finetune, num_workers=3, gpus_per_worker=1,
                                     gpu_ids=["0", "1"])
    with self.assertRaisesRegex(ValueError, "got 2 cells. Run one cell at a time"):
      launcher.one_cell([finetune, dataclasses.replace(finetune, seed=1)])
    self.assertEqual(launcher.one_cell([finetune]), finetune)

  def test_gpu_pinning(self):
    ids = ["0", "1", "2", "3"]
    self.assertEqual([launcher.worker_gpus(i, 2, ids) for i in range(2)], ["0,1", "2,3"])
    self.assertIsNone(launcher.worker_gpus(0, 1, []))
    with self.assertRaisesRegex(ValueError, r"needs 3 GPUs; this process was given 2 \(4,5\)"):
      launcher.worker_gpus(2, 1, ["4", "5"])


class CpuShareTest(tf.test.TestCase):

  def test_each_worker_runs_on_its_own_share_of_the_cpus(self):
    cpus = sorted(os.sched_getaffinity(0))
    shares = launcher.cpu_shares(2)
    self.assertIsNone(shares["chief"])  # It serves the search, then refits on everything.
    workers = [shares["worker0"], shares["worker1"]]
    if len(cpus) >= 2:  # Two disjoint slices that together cover the CPUs.
      self.assertFalse(set(workers[0]) & set(workers[1]))
      self.assertEqual(sorted(workers[0] + workers[1]), cpus)
    else:
      self.assertEqual(workers, [tuple(cpus), tuple(cpus)])
    # A child started with a share sees only it (TensorFlow sizes its pools from this).
    log_dir = self.create_tempdir().full_path
    command = [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"]
    process = launcher._start("worker0", command, dict(os.environ), log_dir, workers[0])
    self.assertEqual(process.wait(timeout=60), 0)
    with open(os.path.join(log_dir, "worker0.log")) as f:
      self.assertEqual(f.read().strip(), str(sorted(workers[0])))


if __name__ == "__main__":
  tf.test.main()
