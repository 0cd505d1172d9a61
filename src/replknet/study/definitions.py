"""The studies: the paper's five guidelines plus its ERF and shape-bias evidence, as arms x tasks x seeds.

An arm is a registered model name with constructor options; a task is the data and training budget it is trained
with (a quick and a full budget); a comparison is the difference between two arms that the paper reports, with
the paper's number where the paper gives one. The budgets and the reasons for them are in docs/study.md.

The paper's numbers (Ding et al., CVPR 2022, Sec. 3-5) carried here are the ones the paper states in its text:
the depthwise share of latency (49.5% -> 12.3%), MobileNetV2 3x3 -> 13x13 (+0.77 top-1 with shortcuts, 53.98%
without), MobileNetV2 3x3 -> 9x9 (+1.33 top-1, +3.99 Cityscapes mIoU), RepLKNet [3,3,3,3] -> [31,29,27,13]
(+0.96 top-1, +3.12 ADE20K mIoU), MobileNetV2 with a large last stage (Cityscapes mIoU 74.62). Other per-arm
figures of its tables are not carried: they could not be checked against the paper here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

__all__ = [
    "Arm",
    "Task",
    "Comparison",
    "Study",
    "STUDIES",
    "TASKS",
    "CALIBRATION",
    "get_study",
    "list_studies",
]


@dataclass(frozen=True)
class Arm:
    """One model of a study: a registered name and constructor options on top of its registered ones."""

    label: str
    model: str
    kwargs: dict = field(default_factory=dict)
    note: str = ""
    settings: dict = field(default_factory=dict)  # options of the run that are not constructor options (impl)
    tasks: tuple[str, ...] | None = None  # the study's tasks this arm runs on (None: all)
    full_only: bool = False  # left out of --quick, with the comparisons it is in (docs/study.md, "Budgets")

    def runs_on(self, task: str, quick: bool = False) -> bool:
        """Whether this arm trains on ``task`` (in the quick study when ``quick``)."""
        if quick and self.full_only:
            return False
        return self.tasks is None or task in self.tasks

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "model": self.model,
            "kwargs": _jsonable(self.kwargs),
            "settings": _jsonable(self.settings),
            "note": self.note,
        }


@dataclass(frozen=True)
class Task:
    """Data and budget of one training task.

    Attributes:
        name: short key (``pathfinder``, ``longrange``, ``shapes``, ``timing``).
        kind: ``classification``, ``segmentation`` or ``timing``.
        data: built-in data name (``pathfinder``, ``synthetic`` shapes, ``longrange``) or, with ``--data``, a folder.
        options: the built-in generator's preset and fields.
        quick / full: the training budget (engine options) of ``--quick`` and of the full study.
        metric: the metric every arm reports on this task.
    """

    name: str
    kind: str
    data: str
    metric: str
    options: dict = field(default_factory=dict)
    quick: dict = field(default_factory=dict)
    full: dict = field(default_factory=dict)
    description: str = ""

    def budget(self, quick: bool) -> dict:
        return dict(self.quick if quick else self.full)


@dataclass(frozen=True)
class Comparison:
    """``better - than`` on ``task``: the difference the paper reports (``paper``, None when it gives no number)."""

    better: str
    than: str
    task: str
    paper: float | None = None
    paper_note: str = ""


@dataclass(frozen=True)
class Study:
    """A study: arms trained on tasks for several seeds, the comparisons to report and the paper's claim."""

    name: str
    guideline: str
    claim: str
    arms: tuple[Arm, ...]
    tasks: tuple[str, ...]
    comparisons: tuple[Comparison, ...] = ()
    paper: dict = field(default_factory=dict)
    analysis: str = "accuracy"  # "accuracy", "erf", "shape_bias" or "timing": what is measured after training

    def runs(self, comparison: Comparison, quick: bool = False) -> bool:
        """Whether both arms of ``comparison`` train on its task (in the quick study when ``quick``)."""
        return all(self.arm(label).runs_on(comparison.task, quick) for label in (comparison.better, comparison.than))

    def arm(self, label: str) -> Arm:
        for arm in self.arms:
            if arm.label == label:
                return arm
        raise KeyError(f"study {self.name!r} has no arm {label!r}; arms: {[a.label for a in self.arms]}")


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------- tasks
# Budgets: docs/study.md "Budgets" gives the measured cost behind each number. batch_size is the global batch
# (the runner divides it over torchrun processes).
TASKS: dict[str, Task] = {
    "pathfinder": Task(
        name="pathfinder",
        kind="classification",
        data="pathfinder",
        metric="top1",
        options={"preset": "long", "difficulty": 0},
        quick=dict(image_size=64, train_size=6000, val_size=1000, epochs=4, batch_size=32, lr=4e-3),
        full=dict(image_size=64, train_size=8000, val_size=2000, epochs=5, batch_size=32, lr=4e-3),
        description="Pathfinder, long setting, difficulty 0: are the two dots on one path? (replknet.data.pathfinder)",
    ),
    "longrange": Task(
        name="longrange",
        kind="segmentation",
        data="longrange",
        metric="miou",
        options={"preset": "long"},
        quick=dict(image_size=64, train_size=1024, val_size=128, iterations=400, batch_size=8, lr=2e-3),
        full=dict(image_size=64, train_size=2048, val_size=256, iterations=1200, batch_size=8, lr=2e-3),
        description="long-range segmentation: a region's class is given by one distant cue (replknet.data.longrange_seg)",
    ),
    "pathfinder_short": Task(
        name="pathfinder_short",
        kind="classification",
        data="pathfinder",
        metric="top1",
        options={"preset": "short", "difficulty": 0},
        quick=dict(image_size=64, train_size=6000, val_size=1000, epochs=4, batch_size=32, lr=4e-3),
        full=dict(image_size=64, train_size=8000, val_size=2000, epochs=5, batch_size=32, lr=4e-3),
        description="Pathfinder, short setting (markers 9-13 px apart): a check that the local model can learn",
    ),
    "shapes": Task(
        name="shapes",
        kind="classification",
        data="synthetic",
        metric="shape_bias",
        quick=dict(image_size=48, train_size=3000, val_size=500, epochs=4, batch_size=32, lr=4e-3),
        full=dict(image_size=64, train_size=6000, val_size=1000, epochs=6, batch_size=32, lr=4e-3),
        description="the built-in shapes (class = outline only); shape bias on its cue-conflict split",
    ),
    "timing": Task(
        name="timing",
        kind="timing",
        data="none",
        metric="dw_share",
        quick=dict(image_size=128, batch_size=2, rounds=2),
        full=dict(image_size=224, batch_size=8, rounds=3),
        description="share of the forward time spent in depthwise convolutions, RepLKNet-31B (fused), eval mode",
    ),
}


# ---------------------------------------------------------------------------------------------- arms
# MobileNetV2 arms run at half width: the full-width model trains ~4x slower on a CPU (docs/study.md).
_MBV2 = {"width_multiplier": 0.5}


def _mbv2(label: str, model: str, note: str = "", full_only: bool = False) -> Arm:
    return Arm(label, model, dict(_MBV2), note, full_only=full_only)


# The RepLKNet kernel-size sweep on the tiny body (layers 1/1/2/1, channels 16..128). NOTE: a 5x5 re-param
# branch cannot sit inside a 3x3 kernel, so k3 has none (as replknet_31b_k3).
_REPLKNET_SWEEP = (
    Arm("k3", "replknet_tiny_k3", {}, "kernels 3,3,3,3, no re-param branch"),
    Arm("k7", "replknet_tiny", {"large_kernel_sizes": (7, 7, 7, 7)}, "kernels 7,7,7,7 + 5x5"),
    Arm("k13", "replknet_tiny", {"large_kernel_sizes": (13, 13, 13, 13)}, "kernels 13,13,13,13 + 5x5"),
    Arm("k31", "replknet_tiny", {}, "kernels 31,29,27,13 + 5x5 (the paper's RepLKNet-31)"),
)

_PAPER_SOURCE = "Ding et al., CVPR 2022, Sec. 3 (numbers stated in the text)"

STUDIES: dict[str, Study] = {}


def _add(study: Study) -> None:
    STUDIES[study.name] = study


_add(
    Study(
        name="efficiency",
        guideline="1: large depthwise convolutions can be efficient in practice",
        claim="with an efficient implementation the depthwise share of latency falls from 49.5% to 12.3%",
        arms=(
            Arm("pytorch", "replknet_31b", {}, "plain F.conv2d (PyTorch's depthwise kernel)", {"impl": "reference"}),
            Arm("replknet_ops", "replknet_31b", {}, "this library's depthwise op (auto rule)", {"impl": "auto"}),
        ),
        tasks=("timing",),
        comparisons=(Comparison("replknet_ops", "pytorch", "timing", paper=12.3 - 49.5, paper_note="49.5% -> 12.3%"),),
        paper={
            "source": _PAPER_SOURCE,
            "depthwise_share_percent": {"pytorch": 49.5, "replknet_ops": 12.3},
            "note": "the paper measures GPU latency with its CUDA kernel; here CPU time with this library's CPU op",
        },
        analysis="timing",
    )
)

_add(
    Study(
        name="shortcut",
        guideline="2: identity shortcuts are vital for large kernels",
        claim="MobileNetV2 3x3 -> 13x13: +0.77 ImageNet top-1 with shortcuts; without them the 13x13 model falls "
        "to 53.98%",
        arms=(
            _mbv2("k3", "mbv2_lk_k3"),
            _mbv2("k13", "mbv2_lk_k13"),
            _mbv2("k3_noshortcut", "mbv2_lk_k3_noshortcut"),
            _mbv2("k13_noshortcut", "mbv2_lk_k13_noshortcut"),
        ),
        tasks=("pathfinder",),
        comparisons=(
            Comparison("k13", "k3", "pathfinder", paper=0.77, paper_note="ImageNet top-1, with shortcuts"),
            Comparison(
                "k13_noshortcut",
                "k3_noshortcut",
                "pathfinder",
                paper=None,
                paper_note="ImageNet: 13x13 falls to 53.98%",
            ),
        ),
        paper={
            "source": _PAPER_SOURCE,
            "imagenet_top1": {"k13_noshortcut": 53.98},
            "imagenet_top1_gain": {"k13 - k3": 0.77},
        },
    )
)

_add(
    Study(
        name="reparam",
        guideline="3: re-parameterising with a small kernel helps large kernels",
        claim="MobileNetV2 9x9 -> 13x13 loses accuracy without a parallel 3x3 branch; with it, 13x13 is better",
        # No 3x3 arm: no comparison here uses it, and it is the shortcut study's k3 (the same runs; the full
        # reparam study of docs/study.md, run with it, gave its numbers to the last digit). --quick trains the
        # arms of the guideline as stated (9 -> 13 loses without re-param; the parallel 3x3 fixes 13): k9_rep3 is
        # full only. With it the quick study took 15.5 minutes on 2 idle cores (docs/study.md, "Budgets").
        arms=(
            _mbv2("k9", "mbv2_lk_k9"),
            _mbv2("k13", "mbv2_lk_k13"),
            _mbv2("k9_rep3", "mbv2_lk_k9_rep3", full_only=True),
            _mbv2("k13_rep3", "mbv2_lk_k13_rep3"),
        ),
        tasks=("pathfinder",),
        comparisons=(
            Comparison("k13", "k9", "pathfinder", paper_note="ImageNet: negative (13x13 below 9x9 without re-param)"),
            Comparison("k13_rep3", "k9_rep3", "pathfinder", paper_note="ImageNet: positive with re-param"),
            Comparison("k9_rep3", "k9", "pathfinder", paper_note="re-param helps"),
            Comparison("k13_rep3", "k13", "pathfinder", paper_note="re-param helps"),
        ),
        paper={"source": _PAPER_SOURCE, "note": "signs only: the per-arm numbers of the paper's table are not carried"},
    )
)

_add(
    Study(
        name="downstream",
        guideline="4: large kernels help downstream tasks more than ImageNet",
        claim="MobileNetV2 3x3 -> 9x9: +1.33 ImageNet, +3.99 Cityscapes mIoU; RepLKNet [3,3,3,3] -> [31,29,27,13]: "
        "+0.96 ImageNet, +3.12 ADE20K mIoU; ImageNet stops improving past 13, ADE20K keeps improving to 31",
        # --quick keeps the comparisons the paper gives numbers for (k31 - k3, MobileNetV2 k9 - k3, on both tasks)
        # and their arms: k7 (in no comparison) and k13 (sign-only comparisons) are full only. With them the quick
        # study took ~17.5 minutes on 2 cores (docs/study.md, "Budgets").
        arms=(
            *(dataclasses.replace(a, full_only=a.label in ("k7", "k13")) for a in _REPLKNET_SWEEP),
            _mbv2("mbv2_k3", "mbv2_lk_k3"),
            _mbv2("mbv2_k9", "mbv2_lk_k9"),
        ),
        tasks=("pathfinder", "longrange"),
        comparisons=(
            Comparison("k31", "k3", "pathfinder", paper=0.96, paper_note="ImageNet top-1"),
            Comparison("k31", "k3", "longrange", paper=3.12, paper_note="ADE20K mIoU"),
            Comparison("k31", "k13", "pathfinder", paper_note="ImageNet: no gain past 13"),
            Comparison("k31", "k13", "longrange", paper_note="ADE20K: keeps improving up to 31"),
            Comparison("mbv2_k9", "mbv2_k3", "pathfinder", paper=1.33, paper_note="ImageNet top-1"),
            Comparison("mbv2_k9", "mbv2_k3", "longrange", paper=3.99, paper_note="Cityscapes mIoU"),
        ),
        paper={
            "source": _PAPER_SOURCE,
            "replknet_gain": {"imagenet_top1": 0.96, "ade20k_miou": 3.12},
            "mobilenetv2_gain": {"imagenet_top1": 1.33, "cityscapes_miou": 3.99},
        },
    )
)

_add(
    Study(
        name="small-maps",
        guideline="5: large kernels help even on small feature maps",
        claim="MobileNetV2 with the last stage's kernels at 7x7 or 13x13 (its map is 7x7): ImageNet does not move, "
        "Cityscapes mIoU rises (to 74.62)",
        arms=(
            _mbv2("k3", "mbv2_lk_k3"),
            _mbv2("last7", "mbv2_lk_last7", "last stage 7x7"),
            _mbv2("last13", "mbv2_lk_last13", "last stage 13x13"),
        ),
        tasks=("pathfinder", "longrange"),
        comparisons=(
            Comparison("last13", "k3", "pathfinder", paper_note="ImageNet: about no change"),
            Comparison("last13", "k3", "longrange", paper_note="Cityscapes: up (74.62 mIoU for the large last stage)"),
            Comparison("last7", "k3", "longrange", paper_note="Cityscapes: up"),
        ),
        paper={"source": _PAPER_SOURCE, "cityscapes_miou": {"last13": 74.62}},
    )
)

_add(
    Study(
        name="erf",
        guideline="evidence: large kernels have larger effective receptive fields",
        claim="trained large-kernel CNNs have much larger high-contribution areas than small-kernel ones",
        arms=tuple(a for a in _REPLKNET_SWEEP if a.label in ("k3", "k13", "k31")),
        tasks=("pathfinder",),
        comparisons=(
            Comparison("k31", "k3", "pathfinder", paper_note="larger"),
            Comparison("k31", "k13", "pathfinder", paper_note="larger"),
        ),
        paper={"source": "Ding et al., CVPR 2022, Sec. 5 (ERF figure and area-ratio table)", "note": "direction only"},
        analysis="erf",
    )
)

_add(
    Study(
        name="shape-bias",
        guideline="evidence: large kernels are more shape-biased",
        claim="RepLKNet is far more shape-biased than small-kernel CNNs",
        arms=tuple(a for a in _REPLKNET_SWEEP if a.label in ("k3", "k13", "k31")),
        tasks=("shapes",),
        comparisons=(Comparison("k31", "k3", "shapes", paper_note="higher shape bias"),),
        paper={"source": "Ding et al., CVPR 2022, Sec. 5 (shape-bias figure)", "note": "direction only"},
        analysis="shape_bias",
    )
)

# Not a guideline: the calibration of the built-in tasks (docs/study.md). A reference with a global view from its
# first layers must learn each task in the quick budget; a model whose receptive field is provably smaller than
# the long setting's distances must stay at chance there (and, as a check of the model itself, learn the short one).
# The short setting is run by the local model only (the reference learnt it to 100% in every earlier calibration;
# running it too would put the quick calibration over 15 minutes on 2 cores).
CALIBRATION = Study(
    name="calibration",
    guideline="the built-in tasks: learnable by a global-view reference, not by a provably local model",
    claim="(not a paper claim) the references learn the long settings; the local model stays at chance on long "
    "Pathfinder and learns the short one",
    arms=(
        # The third classification reference tried and the fourth segmentation one (docs/study.md "Calibration"):
        # the first ones had a global view too but did not learn the long settings within the quick budget.
        Arm(
            "reference",
            "replknet_tiny",
            {"large_kernel_sizes": (31,), "layers": (4,), "channels": (96,)},
            "stem (stride 4) + 4 blocks of width 96 with 31x31 kernels on the 16x16 map: a global view from the "
            "first block",
            tasks=("pathfinder",),
        ),
        Arm(
            "local",
            "replknet_tiny_k3",
            {"large_kernel_sizes": (3,), "layers": (1,), "channels": (32,)},
            "stem + one 3x3 block: every feature unit sees 19 x 19 pixels",
            tasks=("pathfinder", "pathfinder_short"),
        ),
        Arm(
            "reference_seg",
            "replknet_tiny",
            {"large_kernel_sizes": (31, 15, 7, 5), "layers": (1, 1, 1, 1), "channels": (32, 64, 128, 256)},
            "4 stages of 1 block, width 32-256, kernels 31/15/7/5: each spans its whole map (16/8/4/2 at 64 px), "
            "a global view from the first block (UperNet head)",
            tasks=("longrange",),
        ),
    ),
    tasks=("pathfinder", "pathfinder_short", "longrange"),
    comparisons=(Comparison("reference", "local", "pathfinder"),),
)
STUDIES["calibration"] = CALIBRATION


def list_studies() -> list[str]:
    """Study names accepted by ``get_study`` (the paper's studies first, then the calibration)."""
    return list(STUDIES)


def get_study(name: str) -> Study:
    """A study by name; unknown names raise ``ValueError`` listing the studies."""
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; studies: {', '.join(STUDIES)}")
    return STUDIES[name]


def with_tasks(study: Study, **tasks: Task) -> dict[str, Task]:
    """The tasks of a study by name (``TASKS`` entries, replaced by any given here)."""
    return {name: tasks.get(name, TASKS[name]) for name in study.tasks}


def replace_budget(task: Task, quick: bool, **changes) -> Task:
    """A copy of ``task`` whose quick or full budget has ``changes``."""
    key = "quick" if quick else "full"
    return dataclasses.replace(task, **{key: {**getattr(task, key), **changes}})
