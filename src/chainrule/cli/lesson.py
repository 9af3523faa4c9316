"""``chainrule lesson NAME``: one of the lecture notes' experiments: a table and a figure."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..io import atomic_write
from ._common import ListHelp, UsageError, prepare_out


def add_parser(sub: Any) -> None:
    from ..lessons import LESSONS

    width = max(len(name) for name in LESSONS)
    listing = "\n".join(f"  {name:<{width}}  {lesson.title}" for name, lesson in LESSONS.items())
    le = sub.add_parser(
        "lesson",
        help="run one of the lecture notes' experiments: prints a table, writes a plot",
        description=f"Run one of the lecture notes' experiments.\n\nlessons:\n{listing}",
        formatter_class=ListHelp,
    )
    le.add_argument("name", choices=list(LESSONS), metavar="NAME", help="which lesson (see above)")
    le.add_argument("--quick", action="store_true", help="a seconds-long version")
    le.add_argument("--seed", type=int, default=0, help="seed of everything random")
    le.add_argument("--data-dir", type=Path, help="directory of the four IDX files")
    le.add_argument("--out", type=Path, default=Path("runs/lessons"), help="where the PNG goes")
    le.set_defaults(run=command)


def command(args: argparse.Namespace) -> int:
    from ..lessons import LESSONS

    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    prepare_out(args.out)
    lesson = LESSONS[args.name]
    print(f"lesson {args.name}: {lesson.title}{' (quick)' if args.quick else ''}", flush=True)
    result = lesson.run(quick=args.quick, seed=args.seed, data_dir=args.data_dir)
    print(result.text)
    png = args.out / f"{args.name}.png"
    atomic_write(png, result.png)
    print(f"wrote {png}")
    return 0
