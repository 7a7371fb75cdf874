"""Stage `download`: the IMDB archive -> one canonical JSON-lines file of the 50k labeled reviews.

Source: `$IMDB_ARCHIVE` (a local copy) when set, else `download.url`, md5-checked (rnnlab/text/).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnlab.config.params import load_params
from rnnlab.core.cli import run_cli
from rnnlab.text.archive import export_reviews


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="canonical reviews file (JSON lines)")
    args = parser.parse_args(argv)
    export_reviews(load_params().download, args.out)


if __name__ == "__main__":
    run_cli(main)
