"""List the paper's head variants: each branch, the task it focuses on, and the default inference mode."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="loss settings to show the weights for, e.g. model.loss.lambda_fc=0.7")


def run(args: argparse.Namespace) -> int:
    from dhanalysis.config import load_config
    from dhanalysis.model.variants import VARIANTS, applicable_modes, branch_loss_weights, default_mode

    loss = load_config(None, args.overrides).model.loss
    for v in VARIANTS.values():
        from dataclasses import replace

        vloss = loss if args.overrides else replace(loss, lambda_fc=v.lambda_fc, lambda_conv=v.lambda_conv)
        parts = []
        for b in v.branches:
            w = branch_loss_weights(b, vloss)
            parts.append(f"{b.name}[{b.head}-head cls={w['cls']:g} reg={w['reg']:g}]")
        print(f"{v.name:20s} {v.summary}")
        print(f"{'':20s} branches: {'  '.join(parts)}")
        print(f"{'':20s} modes: {', '.join(applicable_modes(v.name, vloss))} (default {default_mode(v.name, vloss)})")
    return 0
