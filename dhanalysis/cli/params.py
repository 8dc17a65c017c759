"""Parameter counts in the paper's unit (M = 2^20 conv/fc weights, no biases or BN, rounded half up).

  dhanalysis params --config configs/coco/r50/double-head-ext.yaml   # the model's table by module
  dhanalysis params --table2                                         # Table 2's column and the fc-head, vs the paper
"""

from __future__ import annotations

import argparse

from dhanalysis.flags import non_negative_int, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config whose model to count")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--table2", action="store_true", help="compute Table 2's parameter column from the code")
    parser.add_argument("--depth", type=non_negative_int, default=4,
                        help="module depth of the table (default 4; 0: the total only)")
    parser.add_argument("--num-classes", type=positive_int, default=80,
                        help="classes when the config leaves them open")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from dhanalysis.errors import DHError

    if not args.table2 and not args.config and not args.overrides:
        raise DHError("give --config C (a model's parameter table) or --table2 (the paper's Table 2 column)")
    with pd.option_context("display.max_rows", None, "display.width", 160):
        if args.table2:
            from dhanalysis.model.params import table2

            df = table2()
            print("Table 2 parameter column (conv-head with K blocks) and the fc-head, M = 2^20 weights:")
            print(df.to_string(index=False))
            if not df["match"].all():
                return 1
        if args.config or args.overrides:
            from dhanalysis.config import load_config
            from dhanalysis.model.build import build_model
            from dhanalysis.model.params import branch_table, param_table

            # counting needs the architecture, not the weights: a config whose backbone file is absent still counts
            cfg = load_config(args.config, args.overrides)
            model = build_model(cfg, num_classes=args.num_classes, pretrained=False)
            print(f"{cfg.name}: variant {cfg.model.variant}, backbone {cfg.model.backbone.name}")
            print(param_table(model, args.depth).to_string(index=False))
            branches = branch_table(model)
            print("\nbranches (conv/fc weights of each head and predictor; fc_over_conv: fc-head ÷ conv-head):")
            print(branches.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    return 0
