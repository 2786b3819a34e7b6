"""effnet.core.results through tools.collect (and bench.readme): the seed README's tables from real logs of our
runs and from NVIDIA's format. The reader itself is tested in test_runlog.py."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from effnet.core.dllogger import DLLogger
from bench import readme
from effnet.core import results, runlog
from tools.plots import write_plots
from tests.conftest import ROOT

FIXTURES = Path(__file__).parent / "fixtures"
TINY = ["--cfg", "b0", "--mparams", "width_coefficient=0.25,depth_coefficient=0.25,num_classes=3,bn_momentum=0.9",
        "--train_img_size", "32", "--eval_img_size", "32", "--train_batch_size", "8", "--eval_batch_size", "8",
        "--max_epochs", "2", "--steps_per_epoch", "5", "--warmup_epochs", "0", "--seed", "1", "--log_steps", "1",
        "--augmenter_name", "none", "--moving_average_decay", "0.9", "--notensorboard", "--noexport_savedmodel"]


def module_cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def collect_cli(*args: str) -> subprocess.CompletedProcess:
    return module_cli("tools.collect", *args)


@pytest.fixture(scope="module")
def requeued_run(tmp_path_factory) -> Path:
    """A real tiny run stopped by SIGUSR2 (exit 75) and resumed: two segments appended to one log."""
    tmp = tmp_path_factory.mktemp("collect")
    subprocess.run([sys.executable, "-m", "tools.demo_data", str(tmp / "data"), "--no-mnist"], cwd=ROOT, check=True,
                   capture_output=True)
    model_dir = tmp / "run"
    argv = [sys.executable, "-m", "effnet", "--mode", "train_and_eval", *TINY, "--data_dir", str(tmp / "data" / "photos"),
            "--model_dir", str(model_dir)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        log = model_dir / "log.json"
        if log.exists() and '"step": [0, 2]' in log.read_text():
            proc.send_signal(signal.SIGUSR2)
            break
        time.sleep(0.2)
    assert proc.wait(timeout=300) == 75, proc.stderr.read()[-2000:]
    subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True)
    return model_dir


def test_accuracy_table_from_a_requeued_run(requeued_run):
    run = runlog.read_log(requeued_run)
    assert len(run.segments()) == 2 and run.skipped_lines == 0
    assert run.wall_seconds() > max(float(r["elapsedtime"]) for r in run.segments()[1])
    assert not run.superseded_steps() and results.training_curves(run)[0] == list(range(1, 11))
    rows = results.accuracy_rows([run])
    assert len(rows) == 1
    row = rows[0]
    assert (row["Model"], row["GPUs"]) == ("B0", 1)
    assert row["Accuracy - FP32"].endswith("(raw)") or row["Accuracy - FP32"].endswith("(EMA)")
    finals = [f for f in run.final_results() if "eval_accuracy_top_1" in f]
    best = max(f["eval_accuracy_top_1"] for f in finals)
    assert row["Accuracy - FP32"].startswith(f"{100 * best:.2f}%")
    inference = results.inference_rows([run])
    assert inference[0]["Batch size"] == 8 and inference[0]["Resolution"] == 32


def test_nvidia_fixture_gives_the_seed_shapes():
    run = runlog.read_log(FIXTURES / "nvidia_b0_amp_8gpu.json")
    assert (run.model, run.precision, run.ranks) == ("B0", "mixed precision", 8)
    acc = results.accuracy_rows([run])
    assert acc == [{"Model": "B0", "GPUs": 8, "Accuracy - mixed precision": "77.59% (raw)",
                    "Time to train - mixed precision": "8.50 h"}]
    thr = results.throughput_rows([run])
    assert thr[0]["Throughput - mixed precision"] == "20647.2" and thr[0]["GPUs"] == 8
    inf = results.inference_rows([run])
    assert len(inf) == 1 and inf[0]["Latency 90% (ms)"] == "32.90" and inf[0]["Batch size"] == 1024


def _benchmark_log(path: Path, ranks: int, rate: float, amp: bool) -> None:
    path.mkdir(parents=True)
    with DLLogger(str(path / "log.json"), rank=0) as logger:
        logger.log("PARAMETER", {"mode": "benchmark", "cfg": "b0", "use_amp": amp, "use_tf32": True,
                                 "world_size": ranks, "train_img_size": 224, "accelerator": "GPU"})
        logger.log((), {"comment": "benchmark on synthetic data", "avg_exp_per_second_training": rate,
                        "avg_exp_per_second_training_per_GPU": rate / ranks})


def test_weak_scaling_and_mixed_precision_speedup(tmp_path):
    for ranks, rate in ((1, 100.0), (2, 180.0), (4, 320.0)):
        _benchmark_log(tmp_path / f"tf32-{ranks}", ranks, rate, amp=False)
        _benchmark_log(tmp_path / f"amp-{ranks}", ranks, 2 * rate, amp=True)
    rows = results.throughput_rows(runlog.read_runs([tmp_path]))
    assert [r["GPUs"] for r in rows] == [1, 2, 4]
    assert rows[1]["Weak scaling - TF32"] == "1.80x (90% of 2x)"
    assert rows[2]["Weak scaling - mixed precision"] == "3.20x (80% of 4x)"
    assert {r["Throughput speedup (TF32 - mixed precision)"] for r in rows} == {"2.00x"}


def test_bad_lines_are_skipped_and_counted(tmp_path):
    good = (FIXTURES / "nvidia_b0_amp_8gpu.json").read_text().splitlines()
    mangled = [good[0], "garbage line", good[1][:40], good[2] + good[3], "", "DLLL {not json", *good[4:]]
    (tmp_path / "log.json").write_text("\n".join(mangled) + "\n")
    run = runlog.read_log(tmp_path)
    assert run.skipped_lines == 3  # garbage, truncated, bad JSON; the glued pair is split and kept
    assert len(run.records) == len(good) - 1  # all but the truncated one
    assert results.accuracy_rows([run])[0]["Accuracy - mixed precision"] == "77.59% (raw)"


def test_many_log_files(tmp_path):
    source = (FIXTURES / "nvidia_b0_amp_8gpu.json").read_text()
    for i in range(1000):
        job = tmp_path / f"job{i // 100}" / f"run{i}"
        job.mkdir(parents=True)
        (job / "log.json").write_text(source)
    start = time.perf_counter()
    runs = runlog.read_runs([tmp_path])
    seconds = time.perf_counter() - start
    assert len(runs) == 1000
    print(f"read 1000 logs in {seconds:.2f} s")  # figures live in bench/, not in asserts
    assert results.throughput_rows(runs)[0]["Throughput - mixed precision"] == "20647.2"


def test_cli_errors_and_formats(tmp_path):
    missing = collect_cli(str(tmp_path / "nope"))
    assert missing.returncode == 2 and missing.stderr.strip().splitlines()[0].startswith("collect: error:")
    assert len(missing.stderr.strip().splitlines()) == 1
    empty = collect_cli(str(tmp_path))
    assert empty.returncode == 2 and "no dllogger logs" in empty.stderr
    shutil.copy(FIXTURES / "nvidia_b0_amp_8gpu.json", tmp_path / "log.json")
    csv_out = collect_cli(str(tmp_path), "--table", "accuracy", "--format", "csv")
    assert csv_out.stdout.splitlines()[0] == "Model,GPUs,Accuracy - mixed precision,Time to train - mixed precision"
    assert '"throughput"' in collect_cli(str(tmp_path), "--format", "json").stdout


def test_plots_render(requeued_run, tmp_path):
    runs = [runlog.read_log(requeued_run), runlog.read_log(FIXTURES / "nvidia_b0_amp_8gpu.json")]
    written = write_plots(runs, tmp_path)
    assert {p.name for p in written} == {"throughput.png", "curves.png", "latency.png"}
    for path in written:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_results_section_is_rewritten_between_markers(tmp_path):
    path = tmp_path / "results.md"
    path.write_text(f"# title\n\nbefore\n{readme.RESULTS_BEGIN}\nold text\n{readme.RESULTS_END}\nafter\n")
    proc = module_cli("bench.readme", str(FIXTURES / "nvidia_b0_amp_8gpu.json"), "--file", str(path))
    assert proc.returncode == 0, proc.stderr
    text = path.read_text()
    assert "old text" not in text and text.startswith(f"# title\n\nbefore\n{readme.RESULTS_BEGIN}\n")
    assert text.endswith(f"{readme.RESULTS_END}\nafter\n")
    assert "no GPU)" in text and "| B0 | 8 | 77.59% (raw) | 8.50 h |" in text
    path.write_text("no markers\n")
    bad = module_cli("bench.readme", str(FIXTURES / "nvidia_b0_amp_8gpu.json"), "--file", str(path))
    assert bad.returncode == 2 and "no results markers" in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_bench_table_shows_each_figure_against_its_target():
    from bench.__main__ import summary_rows
    results = {"p4": {"P4 localslurm: seconds from submit to the first training step": 36.0,
                      "P4 localslurm: seconds from the preemption to the resumed step": 53.0,
                      "P4 localslurm: steps lost per preemption": 0.0,
                      "P4 localpyxis: seconds from submit to the first training step": 49.5},
               "convergence": {"runs": [{}] * 4, "worst_top1": 0.964, "median_top1": 0.976, "max_seconds": 320.4},
               "p5": {"error": "local Slurm is down"}}
    rows = {(figure, what): (value, target) for figure, what, value, target in summary_rows(results)}
    assert rows[("P4", "localslurm: seconds from submit to the first training step")] == ("36.0", "<= 30")
    assert rows[("P4", "localslurm: seconds from the preemption to the resumed step")] == ("53.0", "<= 35")
    assert rows[("P4", "localslurm: steps lost per preemption")] == ("0.0", "")
    # The targets are localslurm's (issue "Restart cost"); the container path is measured beside it.
    assert rows[("P4", "localpyxis: seconds from submit to the first training step")] == ("49.5", "")
    assert rows[("--", "convergence: B0 MNIST-5k top-1 over 4 seeds: worst, median; slowest")] == (
        "96.4%, 97.6%; 320 s", ">= 97%, >= 98%; <= 600 s")
    assert rows[("p5", "did not run")] == ("local Slurm is down", "")
