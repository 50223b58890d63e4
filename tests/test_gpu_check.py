"""experiments/gpu_check.py: --quick runs on the CPU with tensorflow-datasets and Pillow blocked from import
and writes every figure with real values; the peak table knows the accelerators and no others."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import SUBPROCESS_TIMEOUT

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "gpu_check.py"
BLOCKED = ("tensorflow_datasets", "tensorflow", "PIL")
# A package of a blocked name: it logs the attempt and refuses, as if the package were not installed.
BLOCKER = ("import os\nwith open(os.environ['GPU_CHECK_IMPORT_LOG'], 'a') as log:\n    log.write(__name__ + '\\n')\n"
           "raise ImportError(__name__ + ' is blocked by tests/test_gpu_check.py')\n")


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """(report, stdout, the blocked imports attempted) of one --quick run in a fresh process."""
    tmp = tmp_path_factory.mktemp("gpu_check")
    for name in BLOCKED:
        (tmp / "blocked" / name).mkdir(parents=True)
        (tmp / "blocked" / name / "__init__.py").write_text(BLOCKER)
    log, out = tmp / "imports.log", tmp / "report.json"
    log.write_text("")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp / "blocked"), str(ROOT)]), GPU_CHECK_IMPORT_LOG=str(log),
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", f"--out={out}"], env=env, cwd=tmp,
                          capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout, log.read_text().split()


def test_quick_runs_without_tfds_or_pillow_and_writes_every_figure(quick_run):
    report, stdout, attempted = quick_run
    assert attempted == [], f"imported blocked packages: {attempted}"
    assert report["mode"] == "quick" and report["errors"] == {} and report["skipped"] == []
    assert report["stopped_early"] == []
    env = report["environment"]
    for key in ("python", "jax", "jaxlib", "flax", "optax", "orbax"):
        assert env[key], key
    assert env["device_kind"] == "cpu" and env["device_count"] >= 1
    assert env["peak_tflops"] == {"device": None, "float32": None, "float32_mode": None, "bfloat16": None}
    assert "peak unknown" in stdout
    assert all(rate > 0 for rate in env["matmul_tflops"].values()) and set(env["matmul_tflops"]) == {"float32",
                                                                                                      "bfloat16"}
    digits = report["digits_run"]
    assert digits["exit_code"] == 0 and not digits["timed_out"] and digits["wall_s"] > 0
    assert digits["rounds"] == 1 and 0.0 <= digits["test_accuracy"] <= 1.0
    assert digits["compilations"] >= 1 and "--strategy=fixed" in digits["command"]
    assert report["compilations_total"] >= 1


def test_quick_measures_both_archs_in_both_dtypes(quick_run):
    report = quick_run[0]
    assert set(report["throughput"]) == {"A(1,2)", "A(2,4)"}
    for arch, dtypes in report["throughput"].items():
        assert set(dtypes) == {"float32", "bfloat16"}
        for dtype, r in dtypes.items():
            assert r["images_per_s"] > 0 and r["step_ms"] > 0 and r["repeats"] >= 1, (arch, dtype)
            assert r["compilations"] >= 1, (arch, dtype)  # the step (and the network's init) compiled here
            assert r["flops_per_image"] > 0 and r["flops_per_image_device"] > 0 and r["tflops"] > 0
            assert r["flops_source"] == "xla_cost_analysis_cpu_direct_conv_float32"
            assert r["peak_tflops"] is None and r["fraction_of_peak"] is None  # the CPU's peak is unknown
            assert r["dtype_via"].startswith("ModelConfig.compute_dtype") and r["width"] == 8 and r["batch"] == 16
    flops = {arch: dtypes["float32"]["flops_per_image"] for arch, dtypes in report["throughput"].items()}
    assert flops["A(2,4)"] > 2 * flops["A(1,2)"]  # 8 blocks in 4 stacks against 2 in 2
    assert report["throughput"]["A(1,2)"]["bfloat16"]["flops_per_image"] == flops["A(1,2)"]


def test_quick_runs_an_epoch_of_the_paper_preset(quick_run):
    report = quick_run[0]
    assert set(report["paper_epoch"]) == {"A(1,2)", "A(2,4)"}
    for arch, r in report["paper_epoch"].items():
        assert r["steps_run"] == r["steps_per_epoch"] == 4 and not r["stopped_early"], arch
        assert r["epoch_s"] > 0 and r["images_per_s"] > 0 and r["compute_dtype"] == "float32"
        assert r["step_shared_with_throughput"] and r["augmentation"] == {"flip": True, "max_shift": 4,
                                                                          "max_rotation": 15.0}
    assert report["paper_epoch"]["A(1,2)"]["compilations"] >= 1  # augmentation compiles once, for the first


def test_the_peak_table_knows_accelerators_and_gives_no_fraction_elsewhere(gpu_check):
    unknown = gpu_check.device_peaks("cpu")
    assert unknown["float32"] is None and unknown["bfloat16"] is None and unknown["device"] is None
    assert gpu_check.fraction(1e12, unknown["bfloat16"]) is None and gpu_check.fraction(None, 989.4) is None
    h100 = gpu_check.device_peaks("NVIDIA H100 80GB HBM3")
    assert h100["device"] == "NVIDIA H100 SXM" and h100["bfloat16"] == 989.4 and h100["float32"] == 494.7  # TF32
    assert gpu_check.device_peaks("NVIDIA H100 80GB HBM3", "highest")["float32"] == 67.0  # CUDA cores
    assert gpu_check.device_peaks("NVIDIA H100 PCIe")["bfloat16"] == 756.0
    assert gpu_check.device_peaks("NVIDIA H200")["bfloat16"] == 989.4
    assert gpu_check.device_peaks("NVIDIA A100-SXM4-80GB")["bfloat16"] == 312.0
    assert gpu_check.device_peaks("Tesla V100-SXM2-16GB")["bfloat16"] is None
    v5e = gpu_check.device_peaks("TPU v5 lite")
    assert v5e["bfloat16"] == v5e["float32"] == 197.0 and gpu_check.device_peaks("TPU v4")["bfloat16"] == 275.0
    assert gpu_check.fraction(0.05 * 989.4e12, 989.4) == pytest.approx(0.05)


def test_xla_flops_reads_every_form_of_the_cost_analysis(gpu_check):
    class Compiled:
        def __init__(self, cost):
            self.cost = cost

        def cost_analysis(self):
            return self.cost

    assert gpu_check.xla_flops(Compiled({"flops": 12.0})) == 12.0  # jax 0.10 and later
    assert gpu_check.xla_flops(Compiled([{"flops": 12.0}])) == 12.0  # a list of one dict, jax 0.4.3x
    assert gpu_check.xla_flops(Compiled(None)) is None
    assert gpu_check.xla_flops(Compiled({"flops": -1.0})) is None  # what GPUs reported when they could not count
