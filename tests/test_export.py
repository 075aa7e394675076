"""Exporting a round: the ONNX file computes what the torch network computes (in onnxruntime,
on the trial's own test batch, at a batch size other than the one traced), a structured round's
file is the smaller network, a masked round's holds its exact zeros, TorchScript and
safetensors reload to the same network, every file carries its row's fields, and the CLI gives
one line and exit status 2 for a trial or round that is not there."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from ticket_helpers import rows, run_into_experiment, test_batches

from sweeps import export as export_cli
from trainables.export import TRACE_BATCH, export_round, load_torchscript
from trainables.tickets import load_round, network

onnx = pytest.importorskip("onnx", reason="the [export] extra is not installed")
ort = pytest.importorskip("onnxruntime", reason="the [export] extra is not installed")
safetensors_torch = pytest.importorskip("safetensors.torch",
                                        reason="the [export] extra is not installed")

IMP, CHANNELS, NM = "imp_s0_p0.5x2", "channels_s0_c0.5", "imp_s0_nm2:4"
SOURCE = {"version": "0.1.0", "commit": "0123456789abcdef", "dirty": False}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, tiny_trial) -> Path:
    root = tmp_path_factory.mktemp("export")
    run_into_experiment(root, IMP, 0, tiny_trial(
        method="imp", imp={"rounds": 2, "rate": 0.5, "rewind": "init"}))
    run_into_experiment(root, CHANNELS, 1, tiny_trial(
        method="channels", channels={"target": "channels", "channel_fraction": 0.5}))
    run_into_experiment(root, NM, 2, tiny_trial(
        method="imp", imp={"schedule": "oneshot"}, prune={"pattern": "2:4"}))
    (root / "prunetune_sweep.json").write_text(json.dumps({"name": "export", "source": SOURCE}))
    return root


def real_batch(info) -> torch.Tensor:
    inputs, _ = next(test_batches(info, batch_size=TRACE_BATCH + 3, max_batches=1))
    return inputs


def onnx_weights(path: Path) -> list:
    """The ONNX file's convolution and fully connected weight tensors (as numpy arrays)."""
    model = onnx.load(str(path))
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return [initializers[node.input[1]] for node in model.graph.node
            if node.op_type in ("Conv", "Gemm")]


@pytest.mark.parametrize(("trial", "round_number"), [(IMP, 2), (CHANNELS, 1)])
def test_onnx_computes_what_torch_computes(experiment, tmp_path, trial, round_number):
    model, info = load_round(experiment, trial, round_number)
    exported = export_round(model, info, "onnx", tmp_path / "net.onnx")
    inputs = real_batch(info)
    assert len(inputs) != TRACE_BATCH  # the batch dimension is dynamic
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": inputs.numpy()})
    with torch.no_grad():
        expected = model(inputs)
    assert torch.allclose(torch.from_numpy(logits), expected, atol=1e-4, rtol=0)


def conv_and_linear_weights(model: torch.nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules()
               if isinstance(m, torch.nn.Conv2d | torch.nn.Linear))


def test_a_structured_round_exports_the_smaller_network(experiment, tmp_path):
    dense_model, dense_info = load_round(experiment, CHANNELS, 0)
    small_model, small_info = load_round(experiment, CHANNELS, 1)
    dense = export_round(dense_model, dense_info, "onnx", tmp_path / "dense.onnx")
    small = export_round(small_model, small_info, "onnx", tmp_path / "small.onnx")
    # Weight elements in the file: each convolution's and the classifier's, no more, no fewer.
    assert sum(w.size for w in onnx_weights(small.path)) == conv_and_linear_weights(small_model)
    assert conv_and_linear_weights(small_model) < conv_and_linear_weights(dense_model) / 2
    # The file shrinks by the float32 bytes of the weights removed, less what the smaller
    # network's metadata adds (its layer widths).
    removed = conv_and_linear_weights(dense_model) - conv_and_linear_weights(small_model)
    added = len(json.dumps(small.metadata)) - len(json.dumps(dense.metadata))
    assert dense.file_bytes - small.file_bytes >= 4 * removed - added > 0
    assert small.metadata["structured"] and small.metadata["layer_widths"]


def test_a_masked_round_exports_its_exact_zeros(experiment, tmp_path):
    model, info = load_round(experiment, IMP, 2)
    exported = export_round(model, info, "onnx", tmp_path / "masked.onnx")
    pruned = sum(int((~keep).sum()) for keep in info.masks.values())
    zeros = sum(int((w == 0).sum()) for w in onnx_weights(exported.path))
    # Folding batch norm scales each output channel: a zero stays exactly zero.
    assert zeros >= pruned > 0
    assert conv_and_linear_weights(model) == sum(w.size for w in onnx_weights(exported.path))
    assert exported.zipped_bytes < exported.file_bytes / 2  # 75% zeros deflate


def test_torchscript_reloads_and_agrees_exactly(experiment, tmp_path):
    model, info = load_round(experiment, CHANNELS, 1)
    exported = export_round(model, info, "torchscript", tmp_path / "net.pt", SOURCE)
    reloaded, fields = load_torchscript(exported.path)
    inputs = real_batch(info)
    with torch.no_grad():
        assert torch.equal(reloaded(inputs), model(inputs))
    sidecar = json.loads(exported.sidecar.read_text())
    assert fields == {k: v for k, v in sidecar.items() if k not in ("format", "file")}
    assert (fields["trial"], fields["round"], fields["source"]) == (CHANNELS, 1, SOURCE)


def test_safetensors_and_its_metadata_rebuild_the_network(experiment, tmp_path):
    model, info = load_round(experiment, CHANNELS, 1)
    exported = export_round(model, info, "safetensors", tmp_path / "net.safetensors")
    state = safetensors_torch.load_file(str(exported.path))
    with safetensors_torch.safe_open(str(exported.path), "pt") as opened:
        fields = json.loads(opened.metadata()["prunetune"])
    rebuilt = network(info.config.model, state, fields["layer_widths"]).eval()
    inputs = real_batch(info)
    with torch.no_grad():
        assert torch.equal(rebuilt(inputs), model(inputs))


def test_every_file_carries_its_row_and_the_sweeps_source(experiment, tmp_path, capsys):
    assert export_cli.main([str(experiment), "--trial", NM, "--format", "onnx",
                            "--out", str(tmp_path / "nm.onnx")]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = rows(next(experiment.glob(f"{NM}_*")))[1]
    sidecar = json.loads((tmp_path / "nm.onnx.json").read_text())
    assert sidecar["trial"] == NM and sidecar["round"] == 1 and sidecar["pattern"] == "2:4"
    assert (sidecar["sparsity"], sidecar["macs"], sidecar["test_acc"]) == (
        row["sparsity"], row["flops"], row["test_acc"])
    assert sidecar["source"] == SOURCE
    stored = {p.key: p.value for p in onnx.load(str(tmp_path / "nm.onnx")).metadata_props}
    assert json.loads(stored["prunetune"]) == {k: v for k, v in sidecar.items()
                                               if k not in ("format", "file")}
    assert len(lines) == 2
    assert f"{100 * row['sparsity']:.1f}% of the prunable weights exact zeros" in lines[1]
    assert "2:4 pattern is in the metadata" in lines[1] and "zipped it is" in lines[1]


def test_the_default_is_the_last_round_in_the_experiment(experiment, capsys):
    assert export_cli.main([str(experiment), "--trial", CHANNELS]) == 0
    out = capsys.readouterr().out
    assert (experiment / "exports" / f"{CHANNELS}_r1.onnx").is_file()
    structured = out.splitlines()[1]
    total = rows(next(experiment.glob(f"{CHANNELS}_*")))[1]["params_total"]
    assert f"is structured: the network itself is smaller, {total:,} of the dense" in structured


@pytest.mark.parametrize(("arguments", "message"), [
    (["--trial", "imp_s0_p0.5x9"], "no trial 'imp_s0_p0.5x9' (did you mean 'imp_s0_p0.5x2'?)"),
    (["--trial", IMP, "--round", "7"], "no round 7; its rounds: 0, 1, 2"),
    (["--trial", IMP, "--format", "torchscript", "--benchmark"], "use --format onnx"),
])
def test_bad_input_is_one_line_and_exit_2(experiment, capsys, arguments, message):
    assert export_cli.main([str(experiment), *arguments]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err
    assert captured.err.count("\n") == 1


def test_a_missing_export_library_says_which_extra(experiment, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import fails as if not installed
    assert export_cli.main([str(experiment), "--trial", IMP]) == 2
    err = capsys.readouterr().err
    assert "needs onnxscript: pip install 'prunetune[export]'" in err and err.count("\n") == 1


def test_benchmark_times_the_file_beside_the_recorded_torch_latency(experiment, capsys):
    assert export_cli.main([str(experiment), "--trial", IMP, "--benchmark"]) == 0
    line = capsys.readouterr().out.splitlines()[2]
    row = rows(next(experiment.glob(f"{IMP}_*")))[2]
    for size in (1, 2):  # tiny_trial's measure.batch_sizes
        assert f"batch {size}: onnxruntime " in line
        assert f"torch {row[f'latency_ms_b{size}']:.3g} ms" in line


@pytest.mark.slow
def test_the_script_and_the_console_command_are_the_same_cli(experiment, capsys):
    import subprocess

    from sweeps import cli

    script = subprocess.run([sys.executable, "sweeps/export.py", str(experiment), "--trial",
                             "nope"], cwd=Path(__file__).resolve().parents[1],
                            capture_output=True, text=True, timeout=120)
    assert script.returncode == 2 and script.stderr.count("\n") == 1
    assert script.stderr.startswith("python sweeps/export.py: error: ")
    assert cli.main(["export", str(experiment), "--trial", "nope"]) == 2
    assert capsys.readouterr().err.startswith("prunetune export: error: ")
