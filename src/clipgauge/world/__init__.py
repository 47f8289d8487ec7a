"""A procedural multi-domain image world: seeded scenes, domain styles, captions and tasks.

Everything is a pure function of seeds, so any image can be re-rendered from its identity:
`world_dataset` / `open_world` give ImageDatasets for classification tasks (`tasks.yaml`),
`pretraining_stream` gives captioned batches, `export_world` writes DomainBed folders.
"""

from clipgauge.world.captions import (
    DEFAULT_MENTION,
    caption_for,
    caption_words,
    max_caption_words,
    vocabulary,
)
from clipgauge.world.dataset import (
    SPLITS,
    image_rng,
    open_world,
    parse_world_spec,
    render_task_image,
    world_dataset,
)
from clipgauge.world.export import export_world, render_grid
from clipgauge.world.render import render
from clipgauge.world.scene import ATTRIBUTES, WORLD_VERSION, Scene, sample_scene
from clipgauge.world.stream import pretraining_sample, pretraining_stream
from clipgauge.world.styles import DomainStyle, domain_names, get_style, load_domains
from clipgauge.world.tasks import Task, get_task, list_tasks, load_tasks

__all__ = [
    "ATTRIBUTES",
    "DEFAULT_MENTION",
    "SPLITS",
    "WORLD_VERSION",
    "DomainStyle",
    "Scene",
    "Task",
    "caption_for",
    "caption_words",
    "domain_names",
    "export_world",
    "get_style",
    "get_task",
    "image_rng",
    "list_tasks",
    "load_domains",
    "load_tasks",
    "max_caption_words",
    "open_world",
    "parse_world_spec",
    "pretraining_sample",
    "pretraining_stream",
    "render",
    "render_grid",
    "render_task_image",
    "sample_scene",
    "vocabulary",
    "world_dataset",
]
