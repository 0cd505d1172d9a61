"""The paper's claims, runnable: `replknet study NAME` trains arms x seeds on tasks where receptive field decides.

- ``definitions``: the studies (arms, tasks, budgets, the paper's numbers), ``get_study``, ``list_studies``;
- ``runner``: ``run_study(name, StudyOptions(...))`` through the library's training engines (resume, DDP);
- ``results``: the ``results.json`` schema, mean/std per arm, paired differences, CSV, the printed table;
- ``efficiency``: guideline 1's measurement (depthwise share of the forward time);
- ``plots``: the per-arm figure and the ERF radial profiles.
"""

from replknet.study.definitions import STUDIES, TASKS, Arm, Comparison, Study, Task, get_study, list_studies
from replknet.study.results import format_table, summarize, validate_results
from replknet.study.runner import StudyOptions, run_study

__all__ = [
    "STUDIES",
    "TASKS",
    "Arm",
    "Comparison",
    "Study",
    "StudyOptions",
    "Task",
    "format_table",
    "get_study",
    "list_studies",
    "run_study",
    "summarize",
    "validate_results",
]
