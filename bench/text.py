"""Preprocess + xy on the reviews file, against the floor of reading it and `str.split`-ing the texts."""

from __future__ import annotations

import contextlib
import io
import json
import string
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.timing import Row, Table, seconds, time_interleaved, verdict
from rnnlab.text.tokenize import tokenize
from stages import preprocess, xy

TARGET_SECONDS = 5.0
_PUNCTUATION_BYTES = string.punctuation.encode("ascii")


def read_and_split(reviews: Path) -> int:
    """The floor: parse every line and whitespace-split its text; returns the token count."""
    with reviews.open(encoding="utf-8") as handle:
        return sum(len(json.loads(line)["text"].split()) for line in handle)


def stage_arguments(reviews: Path, work: Path) -> list[list[str]]:
    """preprocess and xy as `dvc repro` calls them, on this checkout's params.yaml."""
    prepared, vocab, arrays = work / "prepared", work / "vocab.tsv", work / "xy"
    return [
        ["--reviews", str(reviews), "--out", str(prepared), "--vocab", str(vocab)],
        ["--prepared", str(prepared), "--vocab", str(vocab), "--out", str(arrays)],
    ]


def run_stage_functions(reviews: Path, work: Path) -> None:
    """The two stages' mains, in this process, exactly as `dvc repro` calls them (minus interpreter start)."""
    preprocess_arguments, xy_arguments = stage_arguments(reviews, work)
    with contextlib.redirect_stdout(io.StringIO()):
        preprocess.main(preprocess_arguments)
        xy.main(xy_arguments)


def run_stage_processes(reviews: Path, work: Path) -> None:
    """What a user waits for: two `python -m stages.*` processes, imports included."""
    for module, arguments in zip(("stages.preprocess", "stages.xy"), stage_arguments(reviews, work), strict=True):
        subprocess.run([sys.executable, "-m", module, *arguments], check=True, stdout=subprocess.DEVNULL)


def tokenize_with_bytes_translate(text: str) -> list[str]:
    """Candidate for rnnlab.text.tokenize.tokenize: punctuation is ASCII and UTF-8 never reuses ASCII
    bytes inside a multi-byte character, so deleting those bytes equals str.translate's deletion."""
    lowered = text.lower().replace("<br", "")
    return lowered.encode("utf-8").translate(None, _PUNCTUATION_BYTES).decode("utf-8").split()


def bench_text(reviews: Path, repeats: int, table: Table, with_processes: bool = True) -> None:
    if not reviews.is_file():
        table.add(
            Row(
                "text", f"preprocess + xy: {reviews} missing", "skipped", target="see README: IMDB_ARCHIVE=... dvc repro download"
            )
        )
        return
    with tempfile.TemporaryDirectory(prefix="rnnlab-bench-text-") as temporary:
        work = Path(temporary)
        timings = time_interleaved(
            {"stages": lambda: run_stage_functions(reviews, work), "floor": lambda: read_and_split(reviews)},
            repeats=repeats,
        )
        stages_time, floor_time = timings["stages"].best, timings["floor"].best
        table.add(
            Row(
                "text",
                f"preprocess + xy, in process ({reviews.name})",
                seconds(stages_time),
                f"{stages_time / floor_time:.1f}x read+split",
                f"<= {TARGET_SECONDS:.0f} s",
                verdict(stages_time <= TARGET_SECONDS),
            )
        )
        table.add(Row("text", "floor: read jsonl + str.split every text", seconds(floor_time), "1.0x"))
        if not with_processes:
            return bench_tokenizers(reviews, repeats, table)
        process_time = time_interleaved({"processes": lambda: run_stage_processes(reviews, work)}, 1, warmup=0)
        table.add(
            Row(
                "text",
                "preprocess + xy as 2 stage processes (imports incl.)",
                seconds(process_time["processes"].best),
                f"{process_time['processes'].best / floor_time:.1f}x read+split",
            )
        )
    bench_tokenizers(reviews, repeats, table)


def bench_tokenizers(reviews: Path, repeats: int, table: Table) -> None:
    with reviews.open(encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line in handle]
    if [tokenize(text) for text in texts[:2000]] != [tokenize_with_bytes_translate(text) for text in texts[:2000]]:
        raise AssertionError("bytes.translate tokenizer disagrees with rnnlab.text.tokenize.tokenize")
    timings = time_interleaved(
        {
            "current": lambda: [tokenize(text) for text in texts],
            "bytes": lambda: [tokenize_with_bytes_translate(text) for text in texts],
            "split": lambda: [text.split() for text in texts],
        },
        repeats=repeats,
    )
    split_time = timings["split"].best
    table.add(
        Row(
            "text",
            "tokenize all texts (str.translate, current)",
            seconds(timings["current"].best),
            f"{timings['current'].best / split_time:.1f}x str.split",
        )
    )
    table.add(
        Row(
            "text",
            "tokenize all texts (bytes.translate, candidate)",
            seconds(timings["bytes"].best),
            f"{timings['bytes'].best / split_time:.1f}x str.split",
        )
    )
