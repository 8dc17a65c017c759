"""The ``dhanalysis`` command line: one module per subcommand, each with ``add_arguments`` and ``run``; an analysis's
subcommand is read from its row in `dhanalysis.results.RESULTS`.

User errors (`DHError`) print one line, ``dhanalysis: error: ...``, and exit with code 2; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from typing import Iterator

from dhanalysis.engine.host import retain_freed_memory, set_signal_handlers
from dhanalysis.errors import DHError
from dhanalysis.results import RESULTS

DESCRIPTION = "Train, analyse and plot the head variants of Double-Head R-CNN (Wu et al., CVPR 2020)."

# The commands that set up, train and pipeline: subcommand -> (module under dhanalysis.cli, one-line help). The
# analyses' commands come from their rows in `dhanalysis.results.RESULTS` (name, help, module), listed between them.
SETUP: dict[str, tuple[str, str]] = {
    "variants": ("variants", "list the head variants and what each branch does"),
    "params": ("params", "parameter table of a config's model, or Table 2's parameter column"),
    "data": ("data", "make the synthetic dataset or convert Pascal VOC to COCO format"),
    "pretrain": ("pretrain", "pretrain a ResNet on the dataset's box crops (local stand-in for ImageNet weights)"),
    "train": ("train", "train a model from a config (CPU, one GPU, or torchrun)"),
}
PIPELINES: dict[str, tuple[str, str]] = {
    "sweep": ("sweep", "the paper's ablation sweeps (Tables 1-3, Fig. 8)"),
    "figures": ("figures", "render the paper's figures and tables from result files (no model is run)"),
    "demo": ("demo", "the whole pipeline on the synthetic dataset on CPU (--quick: tiny models)"),
    "reproduce": ("reproduce", "the CPU-scale reproduction: trained detectors, every analysis, the paper's claims"),
    "convert": ("convert", "write torchvision/detectron2/mmdet/maskrcnn-benchmark weights as a dhanalysis checkpoint"),
}

# subcommand -> (dotted module defining add_arguments and run, one-line help). Modules are imported lazily so that
# `dhanalysis variants` does not pay for importing torch's whole detection stack.
COMMANDS: dict[str, tuple[str, str]] = {
    **{name: (f"dhanalysis.cli.{module}", text) for name, (module, text) in SETUP.items()},
    **{o.command: (o.command_module, o.help) for o in RESULTS.values() if o.command and o.command_module},
    **{name: (f"dhanalysis.cli.{module}", text) for name, (module, text) in PIPELINES.items()},
}


class Parser(argparse.ArgumentParser):
    """argparse's parser with the house's error form: a bad flag is one line, ``dhanalysis: error: ...`` naming the
    command's ``--help``, and exit code 2 (argparse alone prints the whole usage block first)."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        print(f"dhanalysis: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(2)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (all of them when None, e.g. for docs and tests)."""
    from dhanalysis import __version__

    parser = Parser(prog="dhanalysis", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"dhanalysis {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if command is not None and name != command:
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        doc = (module.__doc__ or help_text).strip()
        p = sub.add_parser(name, help=help_text, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def one_line(exc: DHError) -> str:
    """The error's message on one line.

    A `DHError` raised in a DataLoader worker reaches us re-raised by torch with the worker's whole traceback in its
    message; its last line is the original error, which is all the user needs.
    """
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else type(exc).__name__
    prefix = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    return lines[-1][len(prefix):] if lines[-1].startswith(prefix) else " ".join(lines)


def in_flags(exc: DHError, args: argparse.Namespace | None = None) -> str:
    """The error's one line, its remedy worded with the command line's flags where the library words it with
    parameters (``overwrite=True`` is ``--overwrite``, a batch size is ``--batch-size``). ``args``: the command's
    parsed flags, for remedies whose flag differs between commands."""
    from dhanalysis.errors import BadImages, DeviceUnavailable, OutOfMemory
    from dhanalysis.folders import FolderTaken

    if isinstance(exc, BadImages):
        return one_line(exc).replace(f", or {BadImages.SKIP}", _skip_images_remedy(args))
    if isinstance(exc, DeviceUnavailable):
        return f"--device {exc.device} was asked for but no CUDA GPU is visible; use --device cpu"
    if isinstance(exc, OutOfMemory):
        return (f"out of memory even at --batch-size {exc.batch_size} (the floor of the automatic halving); free "
                "device memory or run with --device cpu")
    if not isinstance(exc, FolderTaken):
        return one_line(exc)
    if exc.resumable:
        return f"{exc.problem}; pass --resume to continue it or --overwrite to start again"
    return f"{exc.problem}; rerun with --overwrite to replace them, or choose another --out"


def _skip_images_remedy(args: argparse.Namespace | None) -> str:
    """How this command skips bad images: `eval` skips unless --strict, the analyses with --skip-bad-images, the
    others (train) cannot, so their remedy is only to fix the data."""
    if args is not None and hasattr(args, "strict"):
        return ", or rerun without --strict to skip them"
    if args is not None and hasattr(args, "skip_bad_images"):
        return ", or rerun with --skip-bad-images to skip them"
    return ""


# What a command interrupted by Ctrl-C needs to go on, since that differs: train resumes only with --resume, eval and
# pretrain start over, the analyses with chunks (their rows') resume chunk by chunk, sweeps and studies skip what is
# finished. Commands not listed resume by being rerun.
ON_INTERRUPT: dict[str, str] = {
    "train": "rerun it with --resume (without --overwrite) to continue from the last checkpoint in --out",
    "eval": "rerun the same command to evaluate again (evaluation does not resume; it starts over)",
    "pretrain": "rerun the same command to pretrain again (pretraining does not resume; it starts over)",
    **{o.command: "rerun the same command to resume after the last finished chunk"
       for o in RESULTS.values() if o.command and o.chunks},
    "sweep": "rerun the same command to resume: finished runs are skipped and the interrupted one continues from its "
             "last checkpoint",
    "reproduce": "rerun the same command to resume: finished steps are skipped and training continues from its last "
                 "checkpoint",
    "demo": "rerun the same command to resume: finished steps are skipped and training continues from its last "
            "checkpoint",
    "data": "rerun the same command to write the dataset again (an incomplete one is replaced)",
    "convert": "rerun the same command to convert again",
}


def interrupted_remedy(command: str) -> str:
    """How to go on after Ctrl-C stopped ``command``: true for that command, so following it is never refused."""
    return ON_INTERRUPT.get(command, "rerun the same command to resume")


def _nothing_to_checkpoint(signum, frame) -> None:
    print("dhanalysis: SIGUSR1 asks for a training checkpoint, but no training iteration is running; going on",
          file=sys.stderr, flush=True)


@contextlib.contextmanager
def checkpoint_requests_welcome() -> Iterator[None]:
    """SIGUSR1 asks a training loop for a checkpoint (engine/train.py: `CheckpointRequests`). Outside a loop (data
    loading, evaluation, an analysis) the signal's default action would end the process and lose the work in hand,
    so a command answers it with one line and goes on; the caller's handler is restored afterwards."""
    restore = set_signal_handlers({"SIGUSR1": _nothing_to_checkpoint})
    try:
        yield
    finally:
        restore()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else "")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad flag (already printed as one line)
        return int(exc.code or 0)
    if args.command is None:  # `dhanalysis` alone: what there is to run
        parser.print_help()
        return 0
    retain_freed_memory()  # every command's large tensors reuse freed memory (engine/host.py)
    try:
        with checkpoint_requests_welcome():
            return int(args._run(args) or 0)
    except DHError as exc:
        print(f"dhanalysis: error: {in_flags(exc, args)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dhanalysis: interrupted; {interrupted_remedy(args.command)}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (`dhanalysis sweep --list | head`): stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush does not raise again
        return 0


if __name__ == "__main__":
    sys.exit(main())
