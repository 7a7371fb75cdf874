"""Issue 18: params that cannot fit in memory, duplicate params keys and a full disk fail with one clear
`error:` line (exit 2) before any work, and leave no partial output behind.

Tiny synthetic inputs keep every test fast; the one real-memory measurement trains a model whose
weights dominate (a few hundred MB) for a single step in a subprocess.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from rnnlab.config.params import load_params, parse_params_yaml
from rnnlab.core import memory as core_memory
from rnnlab.core.errors import ConfigError, UserError
from rnnlab.core.files import atomic_directory, atomic_path
from rnnlab.data.arrays import Meta
from rnnlab.text.encode import xy_needs
from rnnlab.training import train as memory
from tests.stages.test_training_faults import tiny_params, write_xy
from tests.support.stage_runner import (
    REPO,
    assert_user_error,
    files_under,
    outputs_under,
    repo_params,
    run_stage,
    stage_commands,
    write_params,
)

GiB = 2**30


# --- memory estimates ---------------------------------------------------------------------------


def write_prepared(directory: Path, reviews: int = 6) -> tuple[Path, Path]:
    """A tiny preprocess output: train/valid/test .tsv and the vocabulary."""
    prepared = directory / "data/prepared"
    prepared.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        lines = "".join(f"{row % 2}\t{row}\t{row}\ta b c a b\n" for row in range(reviews))
        (prepared / f"{split}.tsv").write_text(lines, encoding="utf-8")
    vocab = directory / "data/vocab.tsv"
    vocab.write_text("index\ttoken\ttrain_count\n0\t<unk>\t0\n1\t<pad>\t0\n2\ta\t9\n3\tb\t9\n", encoding="utf-8")
    return prepared, vocab


@pytest.fixture
def xy_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    write_prepared(tmp_path)

    def make(fix_length: int) -> Path:
        params = repo_params()
        params["data"]["fix_length"] = fix_length
        write_params(tmp_path, params)
        return tmp_path

    return make


def test_xy_refuses_a_fix_length_that_cannot_fit(xy_workdir, capsys):
    work = xy_workdir(10**12)  # 12 reviews at once x 10^12 tokens x 8 bytes: ~87 TiB
    before = files_under(work)
    module, argv = stage_commands()["xy"]
    code, out, err = run_stage(module, argv, capsys)
    message = assert_user_error(code, err, "data.fix_length=1000000000000 needs about", "int64 token id arrays",
                                "is available", "Lower data.fix_length.")
    assert "TiB" in message
    assert files_under(work) == before and out == ""


def test_xy_message_with_the_issue_numbers(xy_workdir, capsys, monkeypatch):
    monkeypatch.setattr("rnnlab.text.encode.available_memory", lambda: 16 * GiB)
    xy_workdir(200_000_000)  # the issue's `dvc exp run -S data.fix_length=200000000 xy`
    code, _out, err = run_stage(*stage_commands()["xy"], capsys)
    assert assert_user_error(code, err) == (
        "error: data.fix_length=200000000 needs about 20 GiB of memory to encode the reviews (largest: int64 token "
        "id arrays (reviews x fix_length), 18 GiB) but 16 GiB is available. Lower data.fix_length."
    )


def test_xy_estimate_counts_the_arrays_it_allocates():
    needs = {need.what: need.bytes for need in xy_needs({"train": 20000, "valid": 5000, "test": 25000}, 200)}
    # test (forked worker) beside train (this process), int64; one 1000-row boolean mask per process
    assert needs == {"int64 token id arrays (reviews x fix_length)": 45000 * 200 * 8, "padding masks": 2 * 1000 * 200}


@pytest.fixture
def train_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RNNLAB_THREADS", "1")
    write_xy(tmp_path / "data/xy")
    return tmp_path


def train_outputs(directory: Path) -> set[str]:
    return {name for name in outputs_under(directory) if not name.startswith("data/")}


def test_train_refuses_a_hidden_size_that_cannot_fit_before_building_the_model(train_workdir, capsys, monkeypatch):
    params = tiny_params()
    params["model"]["hidden_size"] = 200_000  # the issue's `dvc exp run -S model.hidden_size=200000 train@relu`
    params["variants"] = {"relu": {"model": {"activation": "relu"}}}
    write_params(train_workdir, params)

    def never(*args: Any) -> None:
        raise AssertionError("the model was built despite the memory check")

    monkeypatch.setattr("rnnlab.training.train.initial_model", never)
    monkeypatch.setattr("rnnlab.training.train.load_split", never)
    code, out, err = run_stage(*stage_commands("relu")["train"], capsys)
    assert_user_error(code, err, "model.hidden_size=200000 needs about", "to train relu",
                      "largest: recurrent weights with gradients and Adam state", "Lower model.hidden_size (or ")
    assert train_outputs(train_workdir) == set() and out == ""


def test_train_names_the_variant_override_and_the_batch_size(train_workdir, capsys, monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 1 * GiB)
    params = tiny_params()
    params["variants"] = {"big": {"train": {"batch_size": 10**8}}}  # activations: 10^8 x 12 steps x hidden 8
    write_params(train_workdir, params)
    code, _out, err = run_stage(*stage_commands("big")["train"], capsys)
    message = assert_user_error(code, err, "variants.big.train.batch_size=100000000", "recurrent activations",
                                "but 1.0 GiB is available", "Lower variants.big.train.batch_size (or data.fix_length")
    assert train_outputs(train_workdir) == set(), message


def test_train_on_cuda_checks_the_gpu_memory(monkeypatch):
    params = load_params(REPO / "params.yaml")
    _task, variant = params.find_variant("relu")
    variant = replace(variant, model=replace(variant.model, hidden_size=20_000), overrides=variant.overrides | {"model.hidden_size"})
    meta = Meta(input_size=10_002, num_classes=2, class_names=("neg", "pos"), sequence_length=200)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (8 * GiB, 80 * GiB))
    monkeypatch.setattr(memory, "available_memory", lambda: 64 * GiB)
    with pytest.raises(UserError) as raised:
        memory.check_training_fits(variant, meta, Path("missing"), torch.device("cuda", 0))
    message = str(raised.value)
    assert "variants.relu.model.hidden_size=20000" in message and "of GPU memory (cuda:0)" in message
    assert "but 8.0 GiB is available" in message


def test_every_configured_variant_fits_in_a_few_gib():
    """The checks must not refuse the project's own experiments (IMDB: 25k train/valid reviews)."""
    params = load_params(REPO / "params.yaml")
    for task in params.tasks.values():
        imdb = task.name == "imdb"
        meta = Meta(10_002 if imdb else 9, 2 if imdb else 4, ("a", "b"), 200 if imdb else 80)
        for variant in task.variants.values():
            needs = {need.what: need.bytes for need in memory.training_needs(variant, meta)}
            assert sum(needs.values()) < 4 * GiB, (variant.name, needs)


def test_available_memory_reads_cgroup_limits(tmp_path: Path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text(f"{4 * GiB}\n")
    (v2 / "memory.current").write_text(f"{3 * GiB}\n")
    (v2 / "memory.stat").write_text(f"anon 1\ninactive_file {GiB}\n")
    assert core_memory._cgroup_available(v2) == 2 * GiB  # page cache counts as free
    (v2 / "memory.max").write_text("max\n")
    assert core_memory._cgroup_available(v2) is None
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(f"{2 * GiB}\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{GiB}\n")
    assert core_memory._cgroup_available(tmp_path / "v1") == GiB
    available = core_memory.available_memory()
    assert available is None or available > 0


MEASURE = r"""
import json, os, resource, sys
from pathlib import Path
import torch
import dvclive  # the history logger's imports (DVC) are not training memory: load them before the baseline
import stages.train
from rnnlab.training import train as memory
from rnnlab.config.params import load_params
from rnnlab.data.arrays import load_meta

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

_task, variant = load_params().find_variant("probe")
estimate = sum(need.bytes for need in memory.training_needs(variant, load_meta(Path("xy")), Path("xy")))
baseline = rss()
stages.train.main(["--variant", "probe", "--data", "xy", "--model", "m.pt", "--history", "live"])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"estimate": estimate, "growth": peak - baseline}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmRSS from /proc (Linux)")
def test_training_estimate_is_within_a_factor_of_the_measured_peak(tmp_path: Path):
    """The estimate against the resident-memory growth of a real train stage (one epoch, 2 steps).

    Weights dominate (a 50k x 256 embedding, a 1024-unit GRU: 17M parameters), so torch's own
    baseline does not swamp them. Measured: estimate / growth ~ 0.95; the stated factor is 0.5x-2x.
    """
    params = tiny_params(epochs=1, batch_size=32)
    params["model"] = {**params["model"], "cell": "gru", "embedding_dim": 256, "hidden_size": 1024, "head_size": 256}
    params["variants"] = {"probe": {}}
    write_params(tmp_path, params)
    write_xy(tmp_path / "xy", train_size=64, length=20, vocabulary=50_000)
    environment = {**os.environ, "PYTHONPATH": str(REPO), "RNNLAB_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", MEASURE], cwd=tmp_path, env=environment,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.splitlines()[-1])
    ratio = measured["estimate"] / measured["growth"]
    assert 0.5 <= ratio <= 2.0, measured


# --- duplicate keys -----------------------------------------------------------------------------

DUPLICATED = """\
data:
  fix_length: 200
model:
  cell: rnn
  hidden_size: 256
  dropout: 0.5
  hidden_size: 512
"""


def test_duplicate_key_is_refused_with_its_lines(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text(DUPLICATED, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_params(path)
    assert str(raised.value) == (
        f"{path} line 7: duplicate key 'hidden_size' under 'model' (first on line 5). Keep one of them."
    )


def test_duplicate_keys_at_any_depth_but_merge_keys_still_work():
    with pytest.raises(ConfigError, match=r"line 2: duplicate key 'data' at the top level \(first on line 1\)"):
        parse_params_yaml("data: {}\ndata: {}\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'lr' under 'variants.relu.train'"):
        parse_params_yaml("variants:\n  relu:\n    train: {lr: 1, lr: 2}\n")
    assert parse_params_yaml("base: &b {lr: 1}\nother:\n  <<: *b\n  lr: 2\n") == {"base": {"lr": 1}, "other": {"lr": 2}}


@pytest.mark.parametrize("module, argv", [stage_commands()["params"], ("tools.predict", ["--variant", "relu", "great film"])],
                         ids=["params", "predict"])
def test_stages_run_directly_refuse_duplicate_keys(tmp_path, monkeypatch, capsys, module, argv):
    monkeypatch.chdir(tmp_path)
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    (tmp_path / "params.yaml").write_text(text.replace("  hidden_size: 256\n", "  hidden_size: 256\n  hidden_size: 512\n", 1),
                                          encoding="utf-8")
    code, out, err = run_stage(module, argv, capsys)
    assert_user_error(code, err, "params.yaml line", "duplicate key 'hidden_size' under 'model'", "Keep one of them.")
    assert outputs_under(tmp_path) == set() and out == ""


# --- a full disk --------------------------------------------------------------------------------

FULL_DISK_TEXT = ("while writing", "Free disk space", "dvc cache dir", "no partial output was left behind")


def no_temporaries(directory: Path) -> bool:
    return not any(part.startswith(".") for name in files_under(directory) for part in Path(name).parts)


def test_atomic_path_turns_enospc_into_a_clear_error(tmp_path: Path):
    target = tmp_path / "out" / "file.json"
    with pytest.raises(UserError, match=r"no space left on device while writing .*file\.json \(ENOSPC"):
        with atomic_path(target) as temporary:
            temporary.write_text("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert files_under(tmp_path) == set()


def test_atomic_directory_keeps_the_old_output_on_failure(tmp_path: Path):
    output = tmp_path / "xy"
    (output / "train").mkdir(parents=True)
    (output / "meta.json").write_text("old")
    with pytest.raises(UserError, match=f"while writing {output / 'test' / 'X.npy'} "):
        with atomic_directory(output) as temporary:
            with atomic_path(temporary / "meta.json") as path:
                path.write_text("new")
            with atomic_path(temporary / "test" / "X.npy"):
                raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
    assert files_under(tmp_path) == {"xy/meta.json"} and (output / "meta.json").read_text() == "old"
    with atomic_directory(output) as temporary:
        (temporary / "meta.json").write_text("new")
    assert files_under(tmp_path) == {"xy/meta.json"} and (output / "meta.json").read_text() == "new"


def test_train_checkpoint_on_a_full_disk(train_workdir, capsys, monkeypatch):
    """A file output: the checkpoint write fails half-way; neither it, the history nor a temporary is left."""
    write_params(train_workdir, tiny_params())

    def full_disk_save(payload: Any, handle: Any) -> None:
        handle.write(b"PK half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk_save)
    code, _out, err = run_stage(*stage_commands("good")["train"], capsys)
    assert_user_error(code, err, "no space left on device while writing models/good.pt (ENOSPC", *FULL_DISK_TEXT)
    assert train_outputs(train_workdir) == set()


def limited_file_size(limit: int):
    def apply() -> None:
        # Writes past `limit` fail with EFBIG (SIGXFSZ ignored) like a disk that fills up.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_xy_directory_on_a_full_disk_leaves_the_old_output(xy_workdir):
    """A directory output, in a real subprocess whose writes past 64 KiB fail (EFBIG)."""
    work = xy_workdir(5000)  # X.npy of 6 reviews x 5000 x int64 = 240 KB
    old = work / "data/xy/meta.json"
    old.parent.mkdir(parents=True)
    old.write_text("{}")
    before = files_under(work)
    module, argv = stage_commands()["xy"]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, "-m", module, *argv], cwd=work, env=environment, capture_output=True,
                            text=True, timeout=60, preexec_fn=limited_file_size(64 * 1024))
    assert_user_error(result.returncode, result.stderr, "file size limit reached while writing data/xy/",
                      "X.npy (EFBIG", *FULL_DISK_TEXT)
    assert files_under(work) == before and old.read_text() == "{}" and no_temporaries(work)


def test_download_stops_at_once_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Retrying cannot free space: the first full-disk error ends the stage; the .part file stays for resuming."""
    from rnnlab.config.params import DownloadConfig
    from rnnlab.text import fetch as download

    attempts = []

    def fetch(url: str, partial: Path, timeout: float) -> None:
        attempts.append(url)
        partial.write_bytes(b"first bytes")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(download, "_fetch", fetch)
    destination = tmp_path / "cache" / "aclImdb_v1.tar.gz"
    with pytest.raises(UserError, match=r"no space left on device while writing .*aclImdb_v1\.tar\.gz\.part \(ENOSPC.*"
                                         r"the part downloaded so far is kept, and the next run resumes from it\."):
        download.download(DownloadConfig(), destination)
    assert len(attempts) == 1 and files_under(tmp_path) == {"cache/aclImdb_v1.tar.gz.part"}
