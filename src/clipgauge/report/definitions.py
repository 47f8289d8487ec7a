"""The report's terms: short ones for the top of the report, the full list near its end."""

from __future__ import annotations

from clipgauge.analysis.findings import RULE

TERMS = [
    "**ID gain** (in-domain): accuracy gained on test images of the domains trained on, "
    "against the same task's zero-shot model, in accuracy points (pp).",
    "**DG gain** (domain generalisation): accuracy gained on the task's other domains, never "
    "trained on.",
    "**CF drop** (catastrophic forgetting): zero-shot accuracy lost on other tasks; "
    "> 0 means the model forgot.",
    "**score**: the balance score, mean of ID gain, DG gain and -CF drop; the table ranks by "
    "it. Every number is defined in full under *How each number is defined*.",
]

DEFINITIONS = [
    "Accuracies are class-prompt accuracies on test splits (a method with a head or learned "
    "prompts classifies its own task with those); gains and drops are in accuracy points (pp).",
    "Baseline: the `zeroshot` run (no training) of the same task, train domains and seed.",
    "ID gain: accuracy on the test split of the train domains, minus the baseline's.",
    "DG gain: accuracy on the test split of the task's other domains, minus the baseline's "
    "(n/a for a task with one domain).",
    "CF drop: mean over the forgetting suite of zero-shot accuracy before minus after "
    "fine-tuning, each task with its own prompts through the tuned towers (a method's head or "
    "learned prompts are left out: they only know the task trained on); positive means the "
    "model forgot.",
    "Score: mean of ID gain, DG gain and -CF drop over those available, per run. Per method, "
    "each value is averaged over train-domain choices, then over tasks, once per seed; the "
    "table shows the mean over seeds, ± the standard deviation over seeds.",
    "Only finished runs with a finished baseline enter the averages; failed runs are listed.",
    "Correlations: across tasks (each task's zero-shot `overall` measures) and task-domains "
    "(per-domain measures), averaged over seeds. Pearson and Spearman p-values are scipy's; "
    "intervals are 95% percentile bootstrap intervals from 2000 resamples of the pairs "
    "(seed 0). With fewer than 10 units, call any correlation weak evidence.",
    "Bootstrap intervals of method means (and of their differences): 2000 replicates (seed 0), "
    "each drawing tasks with replacement (a task keeps its train-domain settings, methods and "
    "seeds) and, independently, the test images of every task and domain with replacement, "
    "the same draw for every run scored on those images, so gains and differences between "
    "methods pair image by image; seeds are averaged as in the point estimate, not "
    "resampled. Each replicate recomputes the table's arithmetic; the interval is the 2.5th "
    "to 97.5th percentile. Studies stored without per-image predictions resample tasks only.",
    "Findings: each statistic is oriented so that > 0 supports the finding; " + RULE + ".",
    "Advice check: each task's advice is made from the other tasks only (leave one out); "
    "regret = the task's best actual score (zero-shot counting as 0) minus the recommended "
    "method's actual score, in pp.",
    "`summary.json` beside this report holds the headline numbers in pp (its keys are "
    "documented in `clipgauge.analysis.study_summary`).",
]
