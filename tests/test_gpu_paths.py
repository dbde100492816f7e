"""The GPU paths, on CPU: a fake `nvidia-smi` and environment stand in for a GPU host, and a
fake `tensorflow` package records what a process had set when it started TensorFlow. Two
logical CPU devices standing in for two GPUs: tests/test_distributed.py (one process).
"""

import contextlib
import io
import json
import math
import os
import subprocess
import sys
import textwrap
from unittest import mock

from absl import flags
from absl.testing import flagsaver
import numpy as np
import tensorflow as tf

from bench import harness
from bench import profiles
from bench import report as bench_report
from bench import run as bench_run
from tests import fakes
from tests import gpu_paths_check
from tfhub_transfer import cli
from tfhub_transfer import devices
from tfhub_transfer import features
from tfhub_transfer import launcher
from tfhub_transfer import lbfgs
from tfhub_transfer import logreg
from tfhub_transfer import training

# TF 2.21's wheel: machine code for these, PTX for compute_90 (tf.sysconfig.get_build_info).
_TF_221_ARCHS = ["sm_60", "sm_70", "sm_80", "sm_89", "compute_90"]


def write_fake_nvidia_smi(directory: str, gpus) -> str:
  """An `nvidia-smi` answering -L and --query-gpu=index,name,compute_cap for `gpus`
  [(name, compute capability)]; returns the directory to put first on PATH."""
  os.makedirs(directory, exist_ok=True)
  listing = "\n".join(f"GPU {i}: {name} (UUID: GPU-{i:08d})" for i, (name, _) in
                      enumerate(gpus))
  query = "\n".join(f"{i}, {name}, {cap}" for i, (name, cap) in enumerate(gpus))
  path = os.path.join(directory, "nvidia-smi")
  with open(path, "w") as f:
    f.write(f'#!/bin/sh\ncase "$1" in\n  -L) cat <<EOF\n{listing}\nEOF\n;;\n'
            f'  --query-gpu=*) cat <<EOF\n{query}\nEOF\n;;\n  *) echo fake nvidia-smi;;\n'
            f'esac\n')
  os.chmod(path, 0o755)
  return directory


def fake_tensorflow_env(tmp: str, record: str, **extra) -> dict:
  """A subprocess environment whose `import tensorflow` appends the importing process's
  pid, role, CUDA_VISIBLE_DEVICES and TF_FORCE_GPU_ALLOW_GROWTH to `record` as a JSON line,
  then fails: no real TensorFlow starts anywhere."""
  package = os.path.join(tmp, "fake_tf", "tensorflow")
  os.makedirs(package, exist_ok=True)
  with open(os.path.join(package, "__init__.py"), "w") as f:
    f.write(textwrap.dedent(f"""\
        import json, os
        with open({record!r}, "a") as f:
          f.write(json.dumps({{"pid": os.getpid(), **{{k: os.environ.get(k) for k in (
              "KERASTUNER_TUNER_ID", "CUDA_VISIBLE_DEVICES", "TF_FORCE_GPU_ALLOW_GROWTH")}}
          }}) + "\\n")
        raise ImportError("fake tensorflow: the test stops here")
        """))
  env = fakes.subprocess_env()
  env.pop("CUDA_VISIBLE_DEVICES")
  env.pop("TF_FORCE_GPU_ALLOW_GROWTH", None)
  env.update(extra)
  env["PYTHONPATH"] = os.path.join(tmp, "fake_tf") + os.pathsep + env["PYTHONPATH"]
  return env


def read_records(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f]


class MemoryGrowthTest(tf.test.TestCase):

  def test_set_unless_the_user_set_it(self):
    env = {}
    devices.prepare_environment(env)
    self.assertEqual(env["TF_FORCE_GPU_ALLOW_GROWTH"], "true")
    env = {"TF_FORCE_GPU_ALLOW_GROWTH": "false"}
    devices.prepare_environment(env)
    self.assertEqual(env["TF_FORCE_GPU_ALLOW_GROWTH"], "false")

  def test_cli_sets_it_before_tensorflow_starts(self):
    tmp = self.get_temp_dir()
    record = os.path.join(tmp, "imports.jsonl")
    args = [sys.executable, "-m", "tfhub_transfer.cli", "--model=mobilenet_v2",
            "--dataset=digits", "--regime=logreg", "--workdir=" + os.path.join(tmp, "w")]
    subprocess.run(args, cwd=fakes.REPO_ROOT, env=fake_tensorflow_env(tmp, record),
                   capture_output=True, check=False, timeout=120)
    subprocess.run(args, cwd=fakes.REPO_ROOT, capture_output=True, check=False, timeout=120,
                   env=fake_tensorflow_env(tmp, record, TF_FORCE_GPU_ALLOW_GROWTH="false"))
    self.assertEqual([r["TF_FORCE_GPU_ALLOW_GROWTH"] for r in read_records(record)],
                     ["true", "false"])  # The user's own setting wins.

  def test_bench_and_its_children_set_it(self):
    tmp = self.get_temp_dir()
    record = os.path.join(tmp, "imports.jsonl")
    subprocess.run([sys.executable, "-m", "bench", "--figures=2", "--nowrite"],
                   cwd=fakes.REPO_ROOT, env=fake_tensorflow_env(tmp, record),
                   capture_output=True, check=False, timeout=120)
    self.assertEqual([r["TF_FORCE_GPU_ALLOW_GROWTH"] for r in read_records(record)], ["true"])
    done = subprocess.CompletedProcess([], 0, stdout='{"peak_rss_mib": 1}\n', stderr="")
    with mock.patch.dict(os.environ), mock.patch.object(
        harness.subprocess, "run", return_value=done) as run:
      os.environ.pop("TF_FORCE_GPU_ALLOW_GROWTH", None)
      self.assertEqual(harness.run_child("bench.memory_child", {}), {"peak_rss_mib": 1})
    self.assertEqual(run.call_args.kwargs["env"]["TF_FORCE_GPU_ALLOW_GROWTH"], "true")

  def test_a_failed_figure_is_reported_and_the_others_still_run(self):
    # Figure 2 fails, figure 3 after it still runs; both stand-ins (the figures themselves
    # are test_bench's).
    error = RuntimeError("child failed:\nResourceExhaustedError: OOM when allocating")
    second_run = harness.Figure(key="3", title="second run",
                                measured=harness.Measurement("m", "s", [1.0]),
                                baseline=harness.Measurement("b", "s", [2.0]),
                                ratio_of=harness.BASELINE_OVER_MEASURED, goal="")
    with mock.patch.object(bench_run.logreg_path, "figure_logreg", side_effect=error), \
        mock.patch.object(bench_run.cells, "figure_second_run",
                          return_value=second_run) as figure_3:
      result = bench_run.run_benchmarks(profiles.get_profile("tiny"),
                                        workdir=self.get_temp_dir(), figures=["2", "3"],
                                        progress=lambda line: None)
    figure_3.assert_called_once()
    self.assertEqual(result.failures,
                     {"2": "RuntimeError: ResourceExhaustedError: OOM when allocating"})
    self.assertEqual([f.key for f in result.figures], ["3"])  # Figure 3 still ran.
    self.assertIn("Figure 2 FAILED: RuntimeError: ResourceExhaustedError",
                  bench_report.format_text(result))
    path = os.path.join(self.get_temp_dir(), "device.json")
    bench_report.save_json(result, path)
    stored = bench_report.load_json(path)
    self.assertEqual(stored.failures, result.failures)
    self.assertIn("Figure 2 FAILED", bench_report.render_markdown({"device": stored}))

  def test_parts_cover_every_figure_once_and_merge_in_order(self):
    keys = [key for part in profiles.PARTS.values() for key in part]
    self.assertCountEqual(keys, profiles.FIGURES)

    def part(command, figure_keys, wall_s, failures=None):
      figures = [harness.Figure(key=k, title=k, measured=harness.Measurement("m", "s", [1.0]),
                                baseline=harness.Measurement("b", "s", [2.0]),
                                ratio_of=harness.BASELINE_OVER_MEASURED, goal="")
                 for k in figure_keys]
      return bench_report.Report(mode="device", command=command, started_at="t", wall_s=wall_s,
                                 machine={}, versions={}, figures=figures,
                                 failures=failures or {})
    merged = bench_report.merge([part("a", ["6", "1a", "1b"], 100.0),
                                 part("b", ["2a"], 50.0, {"8": "E: x"})])
    self.assertEqual([f.key for f in merged.figures], ["1a", "1b", "2a", "6"])
    self.assertEqual((merged.command, merged.wall_s, merged.failures),
                     ("a; b", 150.0, {"8": "E: x"}))


  def test_parts_are_stored_one_by_one_then_merged_into_the_full_run(self):
    tmp = self.get_temp_dir()
    script = textwrap.dedent(f"""\
        import os
        from unittest import mock
        import bench.__main__ as main
        from bench import harness, profiles, report
        with mock.patch.object(main, "RESULTS_DIR", {tmp!r}), \\
            mock.patch.object(main, "MARKDOWN", os.path.join({tmp!r}, "BENCHMARKS.md")):
          for name, keys in profiles.PARTS.items():
            figures = [harness.Figure(key=k, title=k, measured=harness.Measurement(
                "m", "s", [1.0]), baseline=harness.Measurement("b", "s", [2.0]),
                ratio_of=harness.BASELINE_OVER_MEASURED, goal="") for k in keys]
            main.store_part(report.Report(
                mode="device", command=name, started_at="t", wall_s=1.0, machine={{
                    "cpu": "c", "usable_cores": 1, "logical_cores": 1, "memory_gib": 1}},
                versions={{}}, figures=figures), "device", name)
        """)
    done = subprocess.run([sys.executable, "-c", script], cwd=fakes.REPO_ROOT,
                          env=fakes.subprocess_env(), capture_output=True, text=True,
                          timeout=120, check=False)
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    names = list(profiles.PARTS)
    self.assertIn(f"Parts still to run before device.json is written: {', '.join(names[1:])}",
                  done.stdout)
    self.assertCountEqual(os.listdir(os.path.join(tmp, "device.parts")),
                          [f"{name}.json" for name in names])
    merged = bench_report.load_json(os.path.join(tmp, "device.json"))
    self.assertEqual([f.key for f in merged.figures], list(profiles.FIGURES))
    self.assertEqual(merged.command, "; ".join(names))
    with open(os.path.join(tmp, "BENCHMARKS.md")) as f:
      self.assertIn("## GPU run", f.read())


class LauncherTest(tf.test.TestCase):

  def test_visible_gpus_follow_cuda_visible_devices_then_nvidia_smi(self):
    smi = write_fake_nvidia_smi(os.path.join(self.get_temp_dir(), "bin"),
                                [("NVIDIA A100", "8.0")] * 3)
    self.assertEqual(devices.visible_gpu_ids({"CUDA_VISIBLE_DEVICES": "4,5,6,7"}),
                     ["4", "5", "6", "7"])
    # CUDA stops at the first invalid entry.
    self.assertEqual(devices.visible_gpu_ids({"CUDA_VISIBLE_DEVICES": "GPU-ab,-1,3"}),
                     ["GPU-ab"])
    self.assertEqual(devices.visible_gpu_ids({"CUDA_VISIBLE_DEVICES": ""}), [])
    with mock.patch.dict(os.environ, PATH=smi + os.pathsep + os.environ["PATH"]):
      self.assertEqual(devices.visible_gpu_ids({}), ["0", "1", "2"])
    with mock.patch.dict(os.environ, PATH=self.get_temp_dir()):
      self.assertEqual(devices.visible_gpu_ids({}), [])

  def test_workers_get_their_slice_of_the_given_gpus_and_the_chief_the_first(self):
    envs = launcher.child_environments(["4", "5", "6", "7"], num_workers=2,
                                       gpus_per_worker=2, port=1234, environ={})
    self.assertEqual({name: env["CUDA_VISIBLE_DEVICES"] for name, env in envs.items()},
                     {"chief": "4,5", "worker0": "4,5", "worker1": "6,7"})
    self.assertEqual({env["KERASTUNER_TUNER_ID"] for env in envs.values()},
                     {"chief", "worker0", "worker1"})
    self.assertTrue(all(env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" for env in envs.values()))
    cpu_only = launcher.child_environments([], num_workers=2, gpus_per_worker=1, port=1,
                                           environ={"CUDA_VISIBLE_DEVICES": ""})
    self.assertEqual({env["CUDA_VISIBLE_DEVICES"] for env in cpu_only.values()}, {""})
    with self.assertRaisesRegex(ValueError, r"needs 4 GPUs; this process was given 3 \(4,5,6\)"):
      launcher.child_environments(["4", "5", "6"], num_workers=2, gpus_per_worker=2, port=1)

  def test_launcher_parent_starts_no_tensorflow_and_pins_its_children(self):
    tmp = self.get_temp_dir()
    smi = write_fake_nvidia_smi(os.path.join(tmp, "bin"), [("NVIDIA H100", "9.0")] * 8)
    record = os.path.join(tmp, "imports.jsonl")
    env = fake_tensorflow_env(tmp, record, CUDA_VISIBLE_DEVICES="4,5,6,7",
                              PATH=smi + os.pathsep + os.environ["PATH"])
    parent = subprocess.run(
        [sys.executable, "-m", "tfhub_transfer.cli", "--model=mobilenet_v2", "--dataset=digits",
         "--regime=finetune", "--workdir=" + os.path.join(tmp, "w"), "--parallel_trials=2",
         "--gpus_per_trial=2"], cwd=fakes.REPO_ROOT, env=env, capture_output=True, text=True,
        check=False, timeout=240)
    started = read_records(record)
    self.assertNotEqual(parent.returncode, 0)  # The children cannot start TensorFlow here.
    self.assertIn("chief FAILED", parent.stdout + parent.stderr)
    pinned = {r["KERASTUNER_TUNER_ID"]: r["CUDA_VISIBLE_DEVICES"] for r in started}
    self.assertEqual(pinned, {"chief": "4,5", "worker0": "4,5", "worker1": "6,7"})
    self.assertEqual({r["TF_FORCE_GPU_ALLOW_GROWTH"] for r in started}, {"true"})
    self.assertTrue(all(r["KERASTUNER_TUNER_ID"] for r in started))  # Never the parent.


class StrategyTest(tf.test.TestCase):

  def test_gpu_strategies_without_a_gpu_are_errors(self):
    for name in ("one_device", "mirrored"):
      with self.assertRaisesRegex(ValueError, rf"--strategy={name} needs a GPU.*\[gpu\]"):
        devices.resolve_strategy(name, num_gpus=0)
      with self.assertRaisesRegex(ValueError, rf"--strategy={name} needs a GPU"):
        training.make_strategy(name)  # This process: one CPU device, no GPU.
    self.assertEqual(devices.resolve_strategy("mirrored", num_gpus=0, num_cpus=2),
                     ("mirrored", 2))
    self.assertEqual(devices.resolve_strategy("auto", num_gpus=0, num_cpus=2), ("default", 1))
    self.assertEqual(devices.resolve_strategy("auto", num_gpus=4), ("mirrored", 4))

  def test_jit_compile_on_several_replicas_is_refused_in_one_line(self):
    for name, gpus in (("auto", 2), ("mirrored", 4)):
      with self.assertRaisesRegex(ValueError, r"^--jit_compile with --strategy=mirrored on "
                                              rf"{gpus} replicas: [^\n]*Drop --jit_compile"):
        devices.resolve_strategy(name, num_gpus=gpus, jit_compile=True)
    self.assertEqual(devices.resolve_strategy("auto", num_gpus=1, jit_compile=True),
                     ("one_device", 1))

  def test_cli_refuses_a_gpu_strategy_without_a_gpu_before_any_work(self):
    workdir = os.path.join(self.get_temp_dir(), "w")
    stderr = io.StringIO()
    with flagsaver.flagsaver(), contextlib.redirect_stderr(stderr):
      flags.FLAGS(["cli", "--model=mobilenet_v2", "--dataset=digits", "--regime=logreg",
                   "--strategy=one_device", "--workdir=" + workdir])
      self.assertEqual(cli.main(["cli"]), 2)
    errors = [line for line in stderr.getvalue().splitlines()
              if line.startswith("tfhub_transfer:")]
    self.assertLen(errors, 1)
    self.assertIn("--strategy=one_device needs a GPU", errors[0])
    self.assertFalse(os.path.exists(workdir))


class CompileOnceTest(tf.test.TestCase):

  def test_one_xla_compilation_for_a_split_with_a_short_last_batch(self):
    model = gpu_paths_check.counting_head()
    feature_fn = features.make_feature_fn(model, tf.distribute.get_strategy(),
                                          jit_compile=True, batch_size=4)
    images = np.random.default_rng(0).uniform(-1, 1, (10, 8, 8, 3)).astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(10))).batch(4)
    cached = features.extract_features(feature_fn, dataset, cache_dir=self.get_temp_dir(),
                                       key="k")
    # One trace of one static shape: XLA compiles per concrete shape, so once.
    self.assertEqual(model.traced_shapes, [[4, 8, 8, 3]])
    self.assertAllClose(np.asarray(cached.features),
                        model.backbone(images, training=False).numpy(), atol=1e-5)

  def test_trials_share_one_compiled_training_step(self):
    """Two trials (other learning rate and weight decay), each a new model in a process of
    its own, one persistent XLA cache: the second loads the first's program and computes its
    own trial's loss with it. The trials' processes are forked from one that imported
    TensorFlow once (tests/xla_cache_check.py)."""
    cache = os.path.join(self.get_temp_dir(), "xla_cache")
    env = fakes.subprocess_env(TF_XLA_FLAGS=f"--tf_xla_persistent_cache_directory={cache}")
    done = subprocess.run([sys.executable, "-m", "tests.xla_cache_check", cache, "0.1,0.0",
                           "0.01,0.001"], cwd=fakes.REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    self.assertEqual(done.returncode, 0, done.stderr[-3000:])
    outs = json.loads(done.stdout)
    self.assertEqual([(out["lr"], out["wd"]) for out in outs], [(0.1, 0.0), (0.01, 0.001)])
    self.assertNotEqual(outs[0]["pid"], outs[1]["pid"])
    self.assertLen(outs[0]["files"], 1)
    self.assertEqual(outs[1]["files"], outs[0]["files"])  # Nothing compiled for trial 2.
    for out in outs:  # The zero head's cross-entropy, log 3, plus (wd / lr) / 2 * ||W||^2.
      expected = math.log(3) + 0.5 * out["wd"] / out["lr"] * out["kernels_squared"]
      self.assertNear(out["loss"], expected, 1e-4 * expected)


class DiagnosticsTest(tf.test.TestCase):

  def test_machine_code_of_the_build(self):
    for cap in ("8.0", "8.6", "8.9", "7.5", "6.1"):
      self.assertIsNone(devices.missing_machine_code(cap, _TF_221_ARCHS), cap)
    for cap in ("9.0", "10.0", "12.0"):  # Hopper, Blackwell: PTX only.
      self.assertIn("JIT-compiled from PTX", devices.missing_machine_code(cap, _TF_221_ARCHS))
    self.assertIn("no kernels for compute capability 5.2",
                  devices.missing_machine_code("5.2", _TF_221_ARCHS))

  def test_driver_without_cuda_keeps_the_lines_and_names_the_fix(self):
    smi = write_fake_nvidia_smi(os.path.join(self.get_temp_dir(), "bin"),
                                [("NVIDIA H100 80GB HBM3", "9.0")])
    build = dict(tf.sysconfig.get_build_info(), cuda_compute_capabilities=_TF_221_ARCHS,
                 is_cuda_build=True)
    with mock.patch.dict(os.environ, PATH=smi + os.pathsep + os.environ["PATH"]), \
        mock.patch.object(tf.sysconfig, "get_build_info", return_value=build):
      os.environ.pop("CUDA_VISIBLE_DEVICES", None)
      os.environ.pop(devices.CUDA_CACHE_ENV, None)
      line = devices.import_tensorflow_quietly()
      cache_size = os.environ.get(devices.CUDA_CACHE_ENV)
      os.environ[devices.CUDA_CACHE_ENV] = "1000"  # The user's own value is kept.
      devices.import_tensorflow_quietly()
      self.assertEqual(os.environ[devices.CUDA_CACHE_ENV], "1000")
    self.assertIn("GPU 0 (NVIDIA H100 80GB HBM3): this TensorFlow build has no machine code "
                  "for compute capability 9.0", line)
    self.assertEqual(cache_size, str(4 * 2**30))
    self.assertIn("no GPU visible although an NVIDIA driver is present: TensorFlow could not "
                  f"load CUDA {build['cuda_version']} / cuDNN {build['cudnn_version']}", line)
    self.assertIn("pip install '.[gpu]'", line)
    self.assertTrue(devices.keep_line("E0000 cuda_platform.cc:52] failed call to cuInit: x",
                                      driver=True))
    self.assertFalse(devices.keep_line("E0000 cuda_platform.cc:52] failed call to cuInit: x",
                                       driver=False))
    self.assertTrue(devices.keep_line("W gpu_device.cc:2342] Cannot dlopen some GPU libraries.",
                                      driver=True))

  def test_no_gpu_reasons(self):
    self.assertIn("CUDA_VISIBLE_DEVICES='' hides them",
                  devices.no_gpu_reason(driver=True, cuda_build=True, visible=""))
    self.assertIn("no NVIDIA driver",
                  devices.no_gpu_reason(driver=False, cuda_build=True, visible=None))


class ProvenanceTest(tf.test.TestCase):

  def test_cpu_provenance(self):
    self.assertEqual(devices.provenance(["/job:localhost/replica:0/task:0/device:CPU:0"]),
                     {"device_kind": "CPU", "gpu_names": [], "tf32": False,
                      "cuda_version": None, "cudnn_version": None})

  def test_gpu_provenance_names_the_gpu_tf32_and_cudnn(self):
    gpu = tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")
    with mock.patch.object(tf.config, "list_physical_devices", return_value=[gpu]), \
        mock.patch.object(tf.config.experimental, "get_device_details",
                          return_value={"device_name": "NVIDIA A100-SXM4-40GB"}), \
        mock.patch.object(tf.sysconfig, "get_build_info",
                          return_value={"cuda_version": "12.5.1", "cudnn_version": "9"}):
      facts = devices.provenance(["/job:localhost/replica:0/task:0/device:GPU:0"])
    self.assertEqual(facts, {"device_kind": "GPU", "gpu_names": ["NVIDIA A100-SXM4-40GB"],
                             "tf32": True, "cuda_version": "12.5.1", "cudnn_version": "9"})
    json.dumps(facts)  # Plain JSON values.

  def test_logreg_solves_with_tf32_off_and_restores_it(self):
    seen = []
    real = lbfgs.make_solve_fn

    def spy(multi_label):
      solve = real(multi_label)

      def wrapped(*args):
        seen.append(tf.config.experimental.tensor_float_32_execution_enabled())
        return solve(*args)
      return wrapped

    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    y = np.arange(20) % 2
    self.assertTrue(tf.config.experimental.tensor_float_32_execution_enabled())
    with mock.patch.object(lbfgs, "make_solve_fn", side_effect=spy):
      logreg.fit(x, y, l2=1.0, multi_label=False, num_classes=2)
    self.assertEqual(seen, [False])
    self.assertTrue(tf.config.experimental.tensor_float_32_execution_enabled())


class GpuSessionScriptTest(tf.test.TestCase):

  def test_script_parses_and_its_dry_run_lists_every_step(self):
    script = os.path.join(fakes.REPO_ROOT, "bench", "gpu_session.sh")
    self.assertEqual(subprocess.run(["bash", "-n", script], check=False).returncode, 0)
    logs = os.path.join(self.get_temp_dir(), "session")
    done = subprocess.run(["bash", script, logs], env=dict(os.environ, DRY_RUN="1"),
                          capture_output=True, text=True, timeout=60, check=False)
    self.assertEqual(done.returncode, 0, done.stderr)
    with open(os.path.join(logs, "summary.txt")) as f:
      steps = [line for line in f.read().splitlines() if "(timeout " in line]
    self.assertEqual([line.split(" ")[0] for line in steps],
                     ["1_environment", "2_kernel_compile", "3_logreg_cell", "4_finetune_trial",
                      "5_two_replicas", "6_pipeline_vs_forward", "7_precision_xla"])
    budget = sum(int(line.split("(timeout ")[1].split("s)")[0]) for line in steps)
    self.assertLessEqual(budget, 17 * 60)
    self.assertEqual(os.listdir(logs), ["summary.txt"])  # Nothing ran.
    for line in steps:  # The CLI steps' flags parse, with the values the script gives.
      if "-m tfhub_transfer.cli" in line:
        args = line.split("-m tfhub_transfer.cli ")[1].split()
        with flagsaver.flagsaver():
          flags.FLAGS(["cli"] + args)


if __name__ == "__main__":
  tf.test.main()
