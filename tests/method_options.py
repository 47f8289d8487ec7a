"""Method options that fit the tiny test models: their text towers have 16 positions, too few
for CoOp's default 16 context vectors plus a class name."""

TINY_OPTIONS = {"coop": {"n_ctx": 4}}


def tiny_options(method: str) -> dict:
    return dict(TINY_OPTIONS.get(method, {}))
