"""The CPU-scale study as a library: plans (`plan`), where a study keeps things (`layout`), the runner (`runner`),
the claims (`claims`), the findings (`findings`), the quality checks (`checks`) and shipping (`ship`).
`dhanalysis reproduce` and `dhanalysis demo` call these; so can a notebook:

  from dhanalysis.study import PLANS, run_study, ship
  outcome = run_study(PLANS["tiny"], "work", "reproduction-tiny")
"""

from dhanalysis.study.layout import Layout, Replicate
from dhanalysis.study.plan import DEMO, FULL, PLANS, QUICK, TINY, StudyPlan, Trunk
from dhanalysis.study.runner import Outcome, run_study
from dhanalysis.study.ship import ship

__all__ = ["DEMO", "FULL", "PLANS", "QUICK", "TINY", "Layout", "Outcome", "Replicate", "StudyPlan", "Trunk",
           "run_study", "ship"]
