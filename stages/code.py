"""Stage `code`: for every stage module, the md5 of each project file it runs (rnnlab/core/imports.py).

Each other stage depends on its own fingerprint file, so it reruns exactly when a file it imports changes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnlab.core.cli import run_cli
from rnnlab.core.files import atomic_directory, write_json
from rnnlab.core.imports import fingerprint

STAGES = Path(__file__).resolve().parent
ROOT = STAGES.parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder of <stage module>.json fingerprints")
    args = parser.parse_args(argv)
    entries = sorted(path for path in STAGES.glob("*.py") if path.name != "__init__.py")
    imports: dict[Path, list[Path]] = {}  # each module parsed once for all the walks
    with atomic_directory(args.out) as out:  # a removed stage module loses its file
        for entry in entries:
            write_json(
                out / f"{entry.stem}.json",
                {"entry": entry.relative_to(ROOT).as_posix(), "files": fingerprint(entry, ROOT, imports)},
            )
    print(f"code: {len(entries)} stage fingerprints -> {args.out}")


if __name__ == "__main__":
    run_cli(main)
