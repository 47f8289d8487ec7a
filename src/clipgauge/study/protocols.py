"""The evaluation protocols of one study run, and the fine-tuning they evaluate.

Per run (see `clipgauge.study.store` for what is stored):
  1. zero-shot measures of the base model on the task's test images, per domain
     (`measure_before`; computed once per process, embeddings from the study's cache),
  2. fine-tuning with `finetune` on the train side of the train domains (the engine holds out
     its own validation images from them); a method that trains nothing evaluates the base
     model, so every gain has a same-seed baseline,
  3. with the tuned model on the task's test images: the measures again (`measure_after`),
     in-domain accuracy (`id`, the train domains), domain generalization (`dg`, the other
     domains), and forgetting: every other forgetting task zero-shot, base model (`cf_before`,
     cached) and tuned model (`cf_after`),
  4. with `eval.wise_alphas`, step 3's id, dg and cf_after again for the model moved `alpha`
     of the way from the zero-shot to the fine-tuned one (`Method.interpolate`), stored under
     the protocols `id@<alpha>`, `dg@<alpha>` and `cf_after@<alpha>` (`wise_protocol`).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from clipgauge.embeddings import TaskEmbeddings, embed_dataset
from clipgauge.interruption import pause_point
from clipgauge.measures import MEASURE_FIELDS, OVERALL, compute_measures, correct_predictions
from clipgauge.methods import get_method
from clipgauge.study.context import StudyContext
from clipgauge.study.plan import PlannedRun
from clipgauge.study.store import MetricRow, PredictionRow, wise_protocol
from clipgauge.training.checkpoint import CheckpointError
from clipgauge.training.config import TrainConfig
from clipgauge.training.finetuning import finetune
from clipgauge.training.load import load_run, other_task_bundle
from clipgauge.training.run_folder import CONFIG_FILE, RESULT_FILE, TRAINED_FILE, RunError

RUNS_DIR = "runs"


def embeddings(
    context: StudyContext, bundle, task: str, cached: bool, forgetting: bool = False
) -> TaskEmbeddings:
    """A model's embeddings of a task's test images (those that measure forgetting of it when
    `forgetting`) with the task's templates."""
    return embed_dataset(
        bundle,
        context.forgetting_set(task) if forgetting else context.test_set(task),
        context.spec.tasks[task].templates,
        cache=context.cache if cached else None,
        progress=False,
        pixel_cache=context.pixels,
    )


def measure_rows(embeds: TaskEmbeddings, domains: Sequence[str]) -> dict[str, dict]:
    """Measures per domain (those with test images) and pooled over them as 'overall'."""
    out, pooled = {}, torch.zeros(len(embeds.labels), dtype=torch.bool)
    for name in domains:
        mask = embeds.domains == embeds.domain_names.index(name)
        if bool(mask.any()):
            out[name] = compute_measures(
                embeds.image_embeds[mask], embeds.text_embeds, embeds.labels[mask]
            )
            pooled |= mask
    if bool(pooled.any()):
        out[OVERALL] = compute_measures(
            embeds.image_embeds[pooled], embeds.text_embeds, embeds.labels[pooled]
        )
    return out


def correct_by_domain(embeds: TaskEmbeddings, domains: Sequence[str]) -> dict[str, object]:
    """Per domain with test images: whether each of its images is classified correctly."""
    out = {}
    for name in domains:
        mask = embeds.domains == embeds.domain_names.index(name)
        if bool(mask.any()):
            out[name] = correct_predictions(
                embeds.image_embeds[mask], embeds.text_embeds, embeds.labels[mask]
            )
    return out


def base_results(
    context: StudyContext, task: str, forgetting: bool = False
) -> tuple[dict[str, dict], dict]:
    """The base model's measures on a task (every domain and overall) and its per-image
    correct flags per domain; computed once per process."""
    key = (task, forgetting)
    if key not in context.base_rows_by_task:
        embeds = embeddings(context, context.bundle, task, cached=True, forgetting=forgetting)
        domains = context.task_domains(task)
        context.base_rows_by_task[key] = (
            measure_rows(embeds, domains),
            correct_by_domain(embeds, domains),
        )
    return context.base_rows_by_task[key]


def prediction_rows(protocol: str, task: str, correct: dict) -> list[PredictionRow]:
    return [(protocol, task, domain, flags) for domain, flags in correct.items()]


def metric_rows(protocol: str, task: str, rows: dict[str, dict]) -> list[MetricRow]:
    return [
        (protocol, task, domain, name, values[name])
        for domain, values in rows.items()
        for name in MEASURE_FIELDS
    ]


def execute(context: StudyContext, run: PlannedRun) -> tuple[list[MetricRow], list[PredictionRow]]:
    """Train (unless the method trains nothing) and evaluate one run: its metric rows and
    per-image prediction rows (and those of each WiSE-FT alpha of the spec)."""
    rows = metric_rows("measure_before", run.task, base_results(context, run.task)[0])
    if not run.train_domains:  # an evaluation-only task: measured zero-shot, nothing else
        return rows, []
    others = [t for t in context.spec.forgetting if t != run.task]
    predictions = []
    for other in others:
        before, before_correct = base_results(context, other, forgetting=True)
        rows += metric_rows("cf_before", other, before)
        predictions += prediction_rows("cf_before", other, before_correct)
    if get_method(run.method).trains_nothing:
        tuned, cached, run_dir = context.bundle, True, None
    else:
        run_dir = train(context, run)
        tuned, cached = load_run(run_dir), False
        pause_point("run-trained")
    domains = context.task_domains(run.task)
    after = embeddings(context, tuned, run.task, cached)
    rows += metric_rows("measure_after", run.task, measure_rows(after, domains))
    evaluated = evaluate_tuned(context, run, tuned, cached, after)
    rows, predictions = rows + evaluated[0], predictions + evaluated[1]
    for alpha in context.spec.wise_alphas if run_dir is not None else []:
        wise = load_run(run_dir, wise_alpha=alpha)
        evaluated = evaluate_tuned(context, run, wise, False, alpha=alpha)
        rows, predictions = rows + evaluated[0], predictions + evaluated[1]
    return rows, predictions


def evaluate_tuned(
    context: StudyContext,
    run: PlannedRun,
    tuned,
    cached: bool,
    after: TaskEmbeddings | None = None,
    alpha: float | None = None,
) -> tuple[list[MetricRow], list[PredictionRow]]:
    """ID, DG and forgetting (cf_after) of a run's model; under `wise_protocol` names for a
    WiSE-FT `alpha`. `after` are the model's embeddings of the run's task, if already made."""

    def name(protocol: str) -> str:
        return protocol if alpha is None else wise_protocol(protocol, alpha)

    domains = context.task_domains(run.task)
    after = after if after is not None else embeddings(context, tuned, run.task, cached)
    held_out = [d for d in domains if d not in run.train_domains]
    rows = metric_rows(name("id"), run.task, measure_rows(after, run.train_domains))
    predictions = prediction_rows(name("id"), run.task, correct_by_domain(after, run.train_domains))
    if held_out:
        rows += metric_rows(name("dg"), run.task, measure_rows(after, held_out))
        predictions += prediction_rows(name("dg"), run.task, correct_by_domain(after, held_out))
    for other in (t for t in context.spec.forgetting if t != run.task):
        other_after = embeddings(context, other_task_bundle(tuned), other, cached, True)
        other_domains = context.task_domains(other)
        rows += metric_rows(name("cf_after"), other, measure_rows(other_after, other_domains))
        predictions += prediction_rows(
            name("cf_after"), other, correct_by_domain(other_after, other_domains)
        )
    return rows, predictions


def train(context: StudyContext, run: PlannedRun) -> Path:
    """Fine-tune into `<out>/runs/<run_id>`, resuming an interrupted attempt if it can."""
    run_dir = context.out_dir / RUNS_DIR / run.run_id
    entry = context.spec.tasks[run.task]
    kwargs = dict(
        model=context.bundle,
        data=context.dataset(run.task),
        train_domains=run.train_domains,
        method=run.method,
        method_options=run.config["method"]["config"],
        train_config=TrainConfig.from_dict(run.config["train"]),
        out_dir=run_dir,
        templates=entry.templates,
        split="train",
        test_fraction=context.spec.test_fraction,
        split_seed=context.spec.split_seed,
        progress=False,
        pixel_cache=context.pixels,
    )
    # An attempt that got as far as its result but lost its weights cannot be resumed.
    lost = (run_dir / RESULT_FILE).is_file() and not (run_dir / TRAINED_FILE).is_file()
    if (run_dir / CONFIG_FILE).is_file() and not lost:
        try:
            finetune(**kwargs, resume=True)
            return run_dir
        except (RunError, CheckpointError):
            pass  # not resumable (options or data changed, no complete epoch): start over
    shutil.rmtree(run_dir, ignore_errors=True)
    finetune(**kwargs)
    return run_dir
