"""The ``vecconv`` command: summary, and a tiny training run through every output option."""

import json

import numpy as np
import pytest

from vecconv.__main__ import main


def test_summary_prints_the_layers_and_total(capsys):
    assert main(["summary"]) == 0
    out = capsys.readouterr().out
    assert "C3 Conv2D 5x5 6->16, table of 60" in out and "1,516" in out and "60,850" in out


def test_train_writes_weights_metrics_and_plots(tmp_path, capsys):
    pytest.importorskip("mlxtend")
    pytest.importorskip("matplotlib")
    out_dir = tmp_path / "run"
    metrics_path = tmp_path / "metrics.json"
    assert main(["train", "--epochs", "1", "--train-size", "64", "--batch-size", "16",
                 "--dtype", "float64", "--no-progress", "--out", str(out_dir),
                 "--json", str(metrics_path)]) == 0
    metrics = json.loads(metrics_path.read_text())
    for key in ("test_accuracy", "train_seconds", "parameters", "epochs", "dtype"):
        assert key in metrics
    assert metrics["dtype"] == "float64" and metrics["parameters"] == 60850
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    for name in ("lenet5.npz", "metrics.json", "curves.png", "c1_kernels.png", "feature_maps.png"):
        assert (out_dir / name).stat().st_size > 0
    import vecconv.nn as nn
    net = nn.load(out_dir / "lenet5.npz")
    assert net.layers[0].params["w"].dtype == np.float64
    assert "test accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["train", "--epochs", "0"], ["train", "--batch-size", "0"],
                                  ["train", "--dtype", "float16"], ["bogus"]])
def test_bad_command_lines_exit_with_usage(argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


def test_progress_into_a_log_file_is_a_line_per_epoch(tmp_path):
    """stderr not a terminal: no bar redrawn per batch (a log once grew 450 KB), one line
    per epoch instead."""
    import subprocess
    import sys
    pytest.importorskip("mlxtend")
    pytest.importorskip("tqdm")
    err, out = tmp_path / "err.log", tmp_path / "out.log"
    with open(err, "w") as fe, open(out, "w") as fo:
        subprocess.run([sys.executable, "-m", "vecconv", "train", "--epochs", "2",
                        "--train-size", "100", "--batch-size", "1"], stdout=fo, stderr=fe,
                       check=True, timeout=300)
    assert err.stat().st_size < 1000, err.read_text()[:500]
    lines = out.read_text().splitlines()
    assert [ln.split(":")[0] for ln in lines if ln.startswith("epoch")] == ["epoch  1", "epoch  2"]
    assert len(lines) <= 4


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self"), reason="needs Linux's /proc")
@pytest.mark.parametrize("argv, name", [(["--out", "/proc/x"], "--out"),
                                        (["--out", "/proc/self/x/y"], "--out"),
                                        (["--json", "/proc/x.json"], "--json")])
def test_outputs_that_cannot_be_written_stop_before_training(monkeypatch, capsys, argv, name):
    """/proc passes every permission check for root, yet takes no new entry: the paths
    are tried by writing, before the data is even loaded."""
    import vecconv.train

    def never(*args, **kwargs):
        raise AssertionError("training started")
    monkeypatch.setattr(vecconv.train, "load_digits", never)
    with pytest.raises(SystemExit) as info:
        main(["train", "--no-progress"] + argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and name in err and "cannot write" in err, err
    with pytest.raises(ValueError, match="out '/proc/x'"):
        vecconv.train.train(out="/proc/x")


def test_checking_the_outputs_leaves_nothing_behind(tmp_path):
    from vecconv.train import check_outputs
    check_outputs(tmp_path / "a" / "b" / "c", tmp_path / "m.json")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "keep.json").write_text("{}")
    check_outputs(tmp_path, tmp_path / "keep.json")
    assert (tmp_path / "keep.json").read_text() == "{}"


def test_plain_vecconv_prints_its_usage_and_commands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: vecconv") and "train" in out and "summary" in out


def test_summary_reads_a_saved_network(tmp_path, capsys):
    import vecconv.nn as nn
    net = nn.Sequential([nn.Conv2D(1, 4, 3, seed=0), nn.Flatten(), nn.Dense(4 * 6 * 6, 2)],
                        input_shape=(1, 8, 8))
    path = net.save(tmp_path / "small")
    assert main(["summary", path]) == 0
    out = capsys.readouterr().out
    assert "Conv2D 3x3 1->4" in out and "Dense(144, 2)" in out and "330" in out
    (tmp_path / "junk.npz").write_text("not a model")
    with pytest.raises(SystemExit) as exc:
        main(["summary", str(tmp_path / "junk.npz")])
    assert exc.value.code == 2
    assert "junk.npz is not a vecconv model" in capsys.readouterr().err
