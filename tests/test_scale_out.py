"""keras-tuner's distributed mode on 127.0.0.1, in one search: the launcher
(`launch_parallel_trials`, from Python) starts the chief and worker0, worker1 joins by hand
through the CLI with the search's secret exported, as on another host; worker0 is killed and
restarted. Each process starts TensorFlow (~7 CPU-seconds): one search shows both the by-hand
roles and the launcher's restart with four processes instead of six."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from unittest import mock

import keras_tuner as kt
import tensorflow as tf

from tests import fakes
from tfhub_transfer import launcher
from tfhub_transfer import oracle_auth
from tfhub_transfer import tuning
from tfhub_transfer.config import ExperimentConfig
from tfhub_transfer.results import merged as stores

_DEADLINE_S = 420
_TRAIN_STEPS = 2


def _cell_args(tmp, workdir):
  hub = os.path.join(tmp, "hub")
  if not os.path.exists(hub):
    fakes.make_tiny_savedmodel(hub, feature_dim=8, grid=2)
  return ["--model=hub:" + hub, "--dataset=digits", "--regime=finetune", "--image_size=16",
          "--max_examples=40", "--batch_size=8", f"--train_steps={_TRAIN_STEPS}",
          "--learning_rates=0.01,0.001", "--weight_decays=0,0.0001", "--workdir=" + workdir,
          "--data_dir=" + fakes.digits_data_dir()]


def _trials_trained(log_path):
  """The trial ids a worker's log says it started training, in order."""
  if not os.path.exists(log_path):
    return []
  with open(log_path) as f:
    return re.findall(r"Trial (\d+) .*: training \d+ steps\.", f.read())


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

  def test_parallel_trials_survive_a_killed_worker_and_take_a_worker_by_hand(self):
    """The launcher's chief and worker0 from Python, worker1 started by hand through the CLI
    with the search's secret exported (as on another host): the two workers race for the
    trials; worker0 is killed and restarted under its id."""
    tmp = self.get_temp_dir()
    workdir = os.path.join(tmp, "launched")
    args = _cell_args(tmp, workdir)
    config = ExperimentConfig(
        model="hub:" + os.path.join(tmp, "hub"), dataset="digits", regime="finetune",
        image_size=16, max_examples=40, batch_size=8, train_steps=_TRAIN_STEPS,
        learning_rates=(0.01, 0.001), weight_decays=(0.0, 0.0001), workdir=workdir,
        data_dir=fakes.digits_data_dir())
    port = launcher.free_port()
    token = oracle_auth.new_token()  # As a user exports it on every host.
    launched = {}
    thread = threading.Thread(target=lambda: launched.update(record=(
        launcher.launch_parallel_trials(config, num_workers=1, port=port, poll_s=0.2))))
    by_hand = None
    # The children inherit this environment: this checkout, on CPU.
    with mock.patch.dict(os.environ, fakes.subprocess_env()), \
        mock.patch.object(oracle_auth, "new_token", return_value=token), \
        self.assertLogs(logger="absl", level="INFO") as logs, \
        open(os.path.join(tmp, "by_hand.log"), "w") as by_hand_log:
      try:
        thread.start()
        by_hand = subprocess.Popen(
            [sys.executable, "-m", "tfhub_transfer.cli", *args], cwd=fakes.REPO_ROOT,
            env=fakes.subprocess_env(KERASTUNER_TUNER_ID="worker1",
                                     KERASTUNER_ORACLE_IP="127.0.0.1",
                                     KERASTUNER_ORACLE_PORT=str(port),
                                     TFHUB_TRANSFER_ORACLE_TOKEN=token),
            stdout=by_hand_log, stderr=subprocess.STDOUT, start_new_session=True)
        # Kill worker0 (SIGKILL, as a crash or an OOM kill) once it trains a trial.
        worker0_log = os.path.join(workdir, "logs", "worker0.log")
        deadline = time.monotonic() + _DEADLINE_S
        while time.monotonic() < deadline and thread.is_alive():
          held = _trials_trained(worker0_log)
          if held:
            break
          time.sleep(0.2)
        with open(os.path.join(workdir, "logs", "worker0.pid")) as f:
          os.killpg(int(f.read()), signal.SIGKILL)
        held = _trials_trained(worker0_log)[-1]  # The trial it held when killed.
        thread.join(timeout=_DEADLINE_S)
        by_hand.wait(timeout=max(1.0, deadline - time.monotonic()))
      finally:
        _stop_all([by_hand] if by_hand else [])
    output = "\n".join(logs.output)
    with open(os.path.join(tmp, "by_hand.log")) as f:
      by_hand_output = f.read()
    self.assertFalse(thread.is_alive())
    self.assertEqual(launched["record"]["status"], "ok", output[-3000:])
    self.assertIn("worker0 FAILED with exit code -9", output)
    self.assertIn("restarting it (1/2) to resume its trial", output)
    self.assertIn("chief finished", output)
    self.assertEqual(by_hand.returncode, 0, by_hand_output[-3000:])
    self.assertRegex(by_hand_output, r"Trial \d+ .*: validation val_metric = ")  # It raced.
    # Restarted under its id, worker0 was handed back the trial it held and trained it.
    self.assertEqual(_trials_trained(worker0_log).count(held), 2, held)
    with open(os.path.join(workdir, "logs", "config.json")) as f:  # What the children ran.
      self.assertEqual(ExperimentConfig(**json.load(f)), config)
    self.assertContainsSubset(["chief.log", "worker0.log"],
                              os.listdir(os.path.join(workdir, "logs")))
    with open(os.path.join(workdir, "logs", "chief.log")) as f:
      self.assertIn("test top1 =", f.read())
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


class IdleWorkerTest(tf.test.TestCase):

  def test_a_worker_without_a_trial_to_run_waits_before_asking_again(self):
    statuses = [kt.engine.trial.TrialStatus.IDLE, kt.engine.trial.TrialStatus.IDLE,
                kt.engine.trial.TrialStatus.RUNNING, kt.engine.trial.TrialStatus.STOPPED]
    answers = iter(kt.engine.trial.Trial(kt.HyperParameters(), status=s) for s in statuses)
    asked, slept = [], []

    def create_trial(tuner_id):
      asked.append(tuner_id)
      return next(answers)
    create = tuning.paced_create_trial(create_trial, sleep=slept.append)
    self.assertEqual([create("worker0").status for _ in statuses], statuses)
    self.assertEqual(asked, ["worker0"] * 4)
    # Only after an IDLE answer (keras-tuner's loop asks again at once).
    self.assertEqual(slept, [tuning.IDLE_POLL_SECONDS] * 2)
    self.assertGreaterEqual(tuning.IDLE_POLL_SECONDS, 0.1)


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
