"""`replknet study NAME`: the paper's guidelines as experiments (arms x seeds), with the paper's numbers beside."""

from __future__ import annotations

import argparse

from replknet.cli import _common as common


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME", help="the study to run (see --list)")
    parser.add_argument("--list", action="store_true", help="list the studies and exit")
    parser.add_argument(
        "--quick", action="store_true", help="the small version: at most ~15 minutes on 2 CPU cores (docs/study.md)"
    )
    parser.add_argument("--seeds", type=common.positive_int, help="seeds per arm: 0..N-1 (default 3; 2 with --quick)")
    parser.add_argument(
        "--data",
        action="append",
        metavar="FOLDER",
        help="run on your data: an ImageFolder (train/, val/) for classification and/or a segmentation folder "
        "(images/, annotations/, classes.json); repeat for a study with both tasks",
    )
    parser.add_argument(
        "--output",
        metavar="DIR",
        help="output folder (default runs/study/NAME[-quick]); rerunning into it resumes and never redoes a "
        "finished arm-seed",
    )
    common.add_image_size(parser, "override every task's image size", square_only=True)
    common.add_json(parser, "the results (results.json's content)")
    common.add_threads(parser)
    common.add_progress(parser)
    common.add_device(parser)


def _list() -> int:
    from replknet.study import STUDIES, TASKS

    width = max(len(name) for name in STUDIES)
    for name, study in STUDIES.items():
        arms = ", ".join(arm.label + (" (full only)" if arm.full_only else "") for arm in study.arms)
        tasks = ", ".join(f"{t} ({TASKS[t].kind})" for t in study.tasks)
        print(f"{name:<{width}}  guideline {study.guideline}")
        print(f"{'':<{width}}  paper: {study.claim}")
        print(f"{'':<{width}}  arms: {arms}; tasks: {tasks}")
    return 0


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from replknet.study import StudyOptions, format_table, run_study

    if args.list:
        return _list()
    if not args.name:
        raise ValueError("give a study NAME (replknet study --list shows them)")
    seeds = args.seeds if args.seeds is not None else (2 if args.quick else 3)
    common.check_json_output(args.json)
    device = common.setup_torch(args)
    options = StudyOptions(
        quick=args.quick,
        seeds=tuple(range(seeds)),
        output=args.output,
        data=tuple(args.data or ()),
        image_size=args.image_size,
        device=str(device),
        progress=not args.no_progress,
        command="replknet study " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["study"] else sys.argv[1:]),
    )
    results = run_study(args.name, options, log=lambda message: common.say(args, message))
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only the first process reports
        return 0
    common.say(args, "")
    common.say(args, format_table(results))
    common.say(args, f"\nwrote results.json, results.csv, summary.csv and plots to {options.out_dir(args.name)}")
    common.write_json(results, args.json)
    return 0
