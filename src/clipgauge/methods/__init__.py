"""Fine-tuning methods, one module each, registered by name.

Adding a method: write `clipgauge/methods/<name>.py` with a config dataclass and a `Method`
subclass ending in `register(...)`, and import it below. The test matrix covers it at once.
"""

# isort: off
# Import order is registration order, which is the order tables list the methods in.
from clipgauge.methods import zeroshot, full, bitfit, lora, clip_adapter, aclip  # noqa: F401
from clipgauge.methods import linear_probe, lp_ft, coop  # noqa: F401

# isort: on
from clipgauge.methods.base import (
    ClassEncoder,
    Method,
    MethodError,
    MethodTask,
    NotMergeableError,
    TunedClip,
    count_parameters,
)
from clipgauge.methods.counts import parameter_counts
from clipgauge.methods.registry import baseline_method, get_method, method_names, register

__all__ = [
    "baseline_method",
    "ClassEncoder",
    "Method",
    "MethodError",
    "MethodTask",
    "NotMergeableError",
    "TunedClip",
    "count_parameters",
    "get_method",
    "method_names",
    "parameter_counts",
    "register",
]
