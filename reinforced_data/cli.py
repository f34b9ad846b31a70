"""The ``reinforced-data`` command: demo, reinforce, merge, inspect, show.

    reinforced-data demo [--quick] [--out DIR]   # the whole idea end to end on generated data
    reinforced-data reinforce --data DIR|synthetic:N --teacher SPEC [--teacher SPEC ...] -o OUT.h5 [...]
    torchrun --nproc-per-node 8 -m reinforced_data reinforce ... [--merge]   # one shard per rank
    reinforced-data merge OUT.h5 [SHARD ...]
    reinforced-data inspect OUT.h5 [--data DIR]
    reinforced-data show OUT.h5 --data DIR --index I [--views N] [--out grid.png]
    reinforced-data import-mldr SRC [SRC ...] --data DIR -o OUT.h5 [--workers N] [--resume]   # apple/ml-dr's files

Errors a user can fix are printed as one line, ``reinforced-data: error: ...``, with
exit status 2; ``inspect --data`` exits 1 when the file belongs to another dataset.
Under torchrun, the ranks meet through torchrun's store (within 30 minutes, or
``$REINFORCED_DATA_DIST_TIMEOUT`` seconds), wait for each other at the end, and a rank
stops when torchrun is gone (see :mod:`reinforced_data.distributed`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]

log = logging.getLogger("reinforced_data")

EXAMPLES = """\
teacher specs (--teacher, repeat for an ensemble):
  NAME                    a timm model with its pretrained weights (timm's cache or hub)
  NAME=CHECKPOINT         a timm architecture with weights from a local file
  CHECKPOINT              a checkpoint that names its architecture ('arch'; teachers.save_checkpoint)
  HEAD.pth                an AdaptiveEnsembleHead file written by head.save()
  module:callable[=CKPT]  a factory returning an nn.Module
  '{"model": ..., "checkpoint": ..., "input_size": 224, "mean": [...], "std": [...]}'
a teacher without a normalisation of its own (mean/std in its spec or checkpoint, timm's
pretrained config for NAME, a head's) is fed the views normalised with the policy's mean/std,
as the student gets them

examples:
  reinforced-data reinforce --data /data/imagenet/train --teacher convnext_base.fb_in22k_ft_in1k \\
      --policy rrc_ra_re --views 50 --topk 10 -o imagenet_plus.h5
  reinforced-data reinforce --data synthetic:256 --teacher resnet10t=teacher.pth \\
      --policy '{"preset": "rrc_ra_re", "output_size": [64, 64]}' --views 8 -o demo.h5
"""


def _size(text: str) -> list[int]:
    try:
        parts = [int(p) for p in text.replace("x", ",").split(",") if p]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give SIZE or HEIGHT,WIDTH in whole pixels") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"{text!r}: give SIZE or HEIGHT,WIDTH")
    return parts


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give a count >= 0 (0: all)")
    return value


class _IntermixedParser(argparse.ArgumentParser):
    """A subcommand parser that takes options between and after positionals (``merge OUT --overwrite S1 S2``)."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:  # parse_known_intermixed_args calls back into parse_known_args
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def _add_writing_args(p: argparse.ArgumentParser, resume_help: str) -> None:
    """The options of a command that writes a reinforcement file: probability encoding, resume or
    overwrite, progress bar."""
    p.add_argument("--prob-encoding", choices=("log_uint8", "float16"), default="log_uint8",
                   help="how probabilities are stored (default log_uint8, see docs/format.md)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help=resume_help)
    g.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="reinforced-data", description="Dataset reinforcement: store augmentations and "
                                "teacher labels once, replay them bit-exactly.")
    p.add_argument("--version", action="version", version=f"reinforced_data {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_IntermixedParser)

    r = sub.add_parser("reinforce", help="write a reinforcement file for a dataset",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
                       description="Sample K augmentations per image, label each view with the teachers, and store "
                                   "the parameters and the top-k soft labels in one HDF5 file.")
    r.add_argument("--data", required=True, help="an ImageFolder directory, or synthetic:N (built-in generated images)")
    r.add_argument("--teacher", action="append", required=True, metavar="SPEC", help="a teacher (see below); repeat "
                   "for an ensemble, whose probabilities are averaged")
    r.add_argument("-o", "--output", required=True, help="the .h5 file to write (per rank: OUT-RRRRR-of-WWWWW.h5)")
    r.add_argument("--policy", default="rrc_ra_re", help="a preset (rrc, rrc_ra_re, rrc_ra_re_mix, torchvision, timm, "
                   "trivialaugment, autoaugment, paper_imagenet, paper_imagenet_mix, paper_cifar, paper_cifar_ra_re, "
                   "...), a JSON object or a JSON file; default rrc_ra_re")
    r.add_argument("--output-size", type=_size, metavar="SIZE",
                   help="override the policy's view size (e.g. 224 or 160,128)")
    r.add_argument("-K", "--views", type=int, default=50, help="augmented views per image (default 50)")
    r.add_argument("-k", "--topk", type=int, default=10, help="classes kept per view (default 10)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--batch-size", type=int, help="images per teacher batch, each with K views (default: ~256 views)")
    r.add_argument("--device", help="cpu, cuda, cuda:N (default: the rank's GPU when there is one)")
    r.add_argument("--workers", type=_non_negative, help="decode processes (default: 0 on CPU, min(8, cores-1) on "
                   "GPU)")
    r.add_argument("--block-size", type=int, default=64, help="images per mixing block (default 64)")
    _add_writing_args(r, "continue an existing output file")
    r.add_argument("--merge", action="store_true", help="with several ranks: rank 0 merges the shards at the end")
    r.add_argument("--backend", choices=("auto", "compiled", "reference"), default="auto", help="replay backend")

    m = sub.add_parser("merge", help="join the shards written by several ranks into one file")
    m.add_argument("output", help="the merged file to write")
    m.add_argument("shards", nargs="*", help="shard files (default: OUTPUT-*-of-*.h5 beside OUTPUT)")
    m.add_argument("--overwrite", action="store_true", help="replace an existing output file")

    i = sub.add_parser("inspect", help="summarise a reinforcement file")
    i.add_argument("file")
    i.add_argument("--data", help="check that the file belongs to this dataset (ImageFolder or synthetic:N)")
    i.add_argument("--max-images", type=_non_negative, default=2000, help="images to compute statistics over (0: all)")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.add_argument("--verify", action="store_true",
                   help="check every chunk and record (with --data: crops against the real image sizes); exit 1 "
                        "on any problem")
    i.add_argument("--no-progress", action="store_true", help="no progress bar for --verify")

    x = sub.add_parser("import-mldr", help="import apple/ml-dr's reinforced data (the paper's published files)",
                       description="Convert apple/ml-dr source folders (config.pth.tar + {index}.pth.tar) into one "
                                   "reinforcement file for the dataset they were made for (docs/mldr.md).")
    x.add_argument("sources", nargs="+", metavar="SRC", help="ml-dr folder(s); several concatenate their views")
    x.add_argument("--data", required=True, help="the training set the source was made for (ImageFolder directory, "
                   "in the order ml-dr indexed it); its labels and fingerprint go into the file")
    x.add_argument("-o", "--output", required=True, help="the .h5 file to write")
    x.add_argument("--workers", type=_non_negative, default=0, help="worker processes reading the source (default 0)")
    _add_writing_args(x, "continue an interrupted import")

    from .demo import add_demo_parser
    from .show import add_show_parser

    add_show_parser(sub)
    add_demo_parser(sub)
    return p


# ---------------------------------------------------------------------- commands
def _cmd_reinforce(args) -> int:
    from .generation import reinforce
    from .policy import Policy

    policy = Policy.parse(args.policy)
    if args.output_size:
        policy = type(policy).from_dict({**policy.to_dict(), "output_size": args.output_size})
    world = int(os.environ.get("WORLD_SIZE", 1))
    # with several ranks (torchrun), reinforce() meets the others, waits for all, and rank 0 merges
    summary = reinforce(
        args.data, args.teacher, args.output, policy=policy, num_views=args.views, topk=args.topk, seed=args.seed,
        batch_size=args.batch_size, device=args.device, num_workers=args.workers, resume=args.resume,
        overwrite=args.overwrite, block_size=args.block_size, prob_encoding=args.prob_encoding,
        progress=not args.no_progress, backend=args.backend, merge=args.merge, synchronize=world > 1)
    print(summary.table(), file=sys.stderr)
    if summary.ranks is None:
        print(f"wrote {summary.output}", file=sys.stderr)
    elif summary.rank == 0:
        imgs = sum(s["images"] for s in summary.ranks)
        wall = max(s["seconds"]["total"] for s in summary.ranks)
        print(f"all {len(summary.ranks)} ranks done: {imgs} images in {wall:.1f} s", file=sys.stderr)
        if summary.merged:
            print(f"merged {len(summary.ranks)} shards into {summary.merged}", file=sys.stderr)
        else:
            print(f"join the shards with: reinforced-data merge {args.output}", file=sys.stderr)
    return 0


def _cmd_merge(args) -> int:
    from . import store

    out = store.merge(args.output, args.shards or None, overwrite=args.overwrite)
    with store.ReinforcementFile(out) as f:
        print(f"merged into {out}: {f.num_images} images x {f.num_views} views, {f.bytes_per_record:.1f} bytes/record")
    return 0


def _cmd_import_mldr(args) -> int:
    from .mldr import import_mldr

    s = import_mldr(args.sources, args.output, args.data, num_workers=args.workers, resume=args.resume,
                    overwrite=args.overwrite, prob_encoding=args.prob_encoding, progress=not args.no_progress)
    print(f"wrote {s['output']}: {s['images']} images imported ({s['skipped']} already there), {s['views']} views "
          "per image", file=sys.stderr)
    return 0


def _cmd_inspect(args) -> int:
    from . import inspection
    from ._datasets import dataset_fingerprint
    from .errors import ReinforcementFileError
    from .generation import resolve_dataset

    dataset = resolve_dataset(args.data) if args.data else None
    data = dataset_fingerprint(dataset) if dataset is not None else None
    report = None
    if args.verify:  # first: a file that cannot even be opened is a verification failure (exit 1), not a crash
        report = inspection.verify_file(args.file, data=dataset, progress=not args.no_progress)
        if not report["opened"]:
            print(json.dumps({"file": args.file, "verify": report}, indent=2, sort_keys=True) if args.json else
                  f"file:             {args.file}\n" + inspection.format_verify(report))
            return 1
    try:
        info = inspection.inspect_file(args.file, data=data, max_images=args.max_images)
    except ReinforcementFileError as e:  # damaged, foreign, newer: still a verdict, as with --verify
        problem = " ".join(str(e).split())
        print(json.dumps({"file": args.file, "problem": problem, "verdict": "UNREADABLE"}, indent=2, sort_keys=True)
              if args.json else f"file:             {args.file}\nproblem:          {problem}\n"
              "verdict:          UNREADABLE: the file cannot be opened (the problem above says why)")
        return 1
    if report is not None:
        info["verify"] = report
    info["verdict"] = inspection.verdict(info).split(":", 1)[1].strip()
    print(json.dumps(info, indent=2, sort_keys=True) if args.json else inspection.format_inspect(info))
    bad = info["verdict"].startswith("DAMAGED") or info.get("dataset_matches") is False
    return 1 if bad or (report is not None and not report["ok"]) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``reinforced-data`` (and ``python -m reinforced_data``).

    Errors a user can fix (:class:`~reinforced_data.errors.ReinforcedDataError`, a missing
    or existing file, and the system errors of :func:`_system_error`: no space, file-size
    limit, read-only, permission) print one line and exit 2; anything else is a bug and
    keeps its traceback. (Library errors are raised ``from None`` with the cause's text in
    their message, so the one line says everything.)
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="reinforced-data: %(levelname)s: %(message)s")
    from .errors import ReinforcedDataError

    try:
        commands = {"reinforce": _cmd_reinforce, "merge": _cmd_merge, "inspect": _cmd_inspect,
                    "import-mldr": _cmd_import_mldr}
        return commands[args.command](args) if args.command in commands else args.func(args)
    except (ReinforcedDataError, FileNotFoundError, FileExistsError, OSError, RuntimeError) as e:
        msg = _user_message(e, args)
        if msg is None or args.verbose:
            raise
        print(f"reinforced-data: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reinforced-data: interrupted" + ("; committed rows are kept, continue with --resume"
                                                if args.command in ("reinforce", "import-mldr") else ""),
              file=sys.stderr)
        return 130


def _user_message(e: BaseException, args) -> str | None:
    """The one line for an error a user can fix, or None for a bug (which keeps its traceback)."""
    from .errors import ReinforcedDataError

    if isinstance(e, (ReinforcedDataError, FileNotFoundError, FileExistsError)):
        return " ".join(str(e).split()) or type(e).__name__
    from .errors import system_error_message

    return system_error_message(e, getattr(args, "output", None))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
