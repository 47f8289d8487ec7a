"""A tiny world-clip configuration for tests: seconds to pretrain, knows every world word."""

TINY_PRETRAIN = dict(
    steps=3,
    batch_size=8,
    warmup_steps=1,
    vision_width=32,
    vision_layers=1,
    vision_heads=2,
    vision_mlp_width=48,  # not 4 x 32: the field reaches the saved config
    text_width=32,
    text_layers=1,
    text_heads=2,
    projection_dim=16,
    image_size=32,
    threads=1,
    primer_steps=1,  # one primer step, then the main mix: both phases run
)
