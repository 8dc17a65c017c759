"""The CPU-scale study as a library: plans (`plan`), where a study keeps things (`layout`), the runner (`runner`),
the claims (`claims`), the findings (`findings`), the quality checks (`checks`) and shipping (`ship`).
`dhanalysis reproduce` and `dhanalysis demo` call these; so can a notebook:

  from dhanalysis.study import PLANS, run_study
  from dhanalysis.study.ship import ship
  outcome = run_study(PLANS["tiny"], "work", "reproduction-tiny")
"""

from __future__ import annotations

from dhanalysis.lazy import lazy_getattr

# names are imported on first use, so that reading a plan (`reproduce --help` describes the regime pilots) does not
# import the runner, the findings and their statistics (2 s); `ship` comes from `dhanalysis.study.ship`, since a
# lazy name cannot share its module's name (importing the module sets the package's attribute to it)
_EXPORTS = {"Layout": "layout", "Replicate": "layout", "Outcome": "runner", "run_study": "runner",
            **{name: "plan" for name in ("DEMO", "FULL", "PLANS", "QUICK", "TINY", "StudyPlan", "Trunk")}}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
