"""Visual domains as data: `domains.yaml` gives each domain's style parameters for the renderer."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import yaml

from clipgauge.errors import DataError

NOISE_KINDS = ("coarse", "fine", "streak")


@dataclass(frozen=True)
class DomainStyle:
    """How one domain draws a scene. Lengths in pixels at 64x64, amounts in 0..1 colour units."""

    name: str
    background_value: tuple[float, float] = (0.5, 0.9)  # brightness range of the background
    background_saturation: tuple[float, float] = (0.0, 0.2)  # kept low: never an object colour
    background_noise: float = 0.0  # amplitude of the background texture
    background_noise_kind: str = "coarse"  # coarse blotches, fine grain, or brush streaks
    lighting: float = 0.0  # strength of a linear lighting gradient across the image
    fill_opacity: float = 1.0  # 0 leaves objects unfilled (line drawing): colour is invisible
    fill_saturation: float = 1.0  # >1 pushes object colours further from gray
    colour_jitter: float = 0.0  # per-image random shift of the object colour, per channel
    shading: float = 0.0  # darkening away from a highlight: objects look lit and round
    shadow: float = 0.0  # darkness of a soft drop shadow under each object
    outline_width: float = 0.0
    outline_colour: tuple[float, float, float] = (0.1, 0.1, 0.1)
    edge_wobble: float = 0.0  # smooth random displacement of every edge (hand-drawn look)
    pattern_contrast: float = 0.7  # how strongly the texture recolours the fill
    pattern_ink: float = 0.0  # darkness of the texture drawn as ink lines (sketch hatching)
    blur: float = 0.0  # Gaussian blur sigma
    brush_noise: float = 0.0  # amplitude of streaky brush-stroke noise over the whole image
    pixel_noise: float = 0.0  # amplitude of per-pixel sensor noise

    @property
    def shows_colour(self) -> bool:
        """Whether an object's colour can be seen at all (a caption may only name it then)."""
        return self.fill_opacity > 0


_FIELDS = {f.name: f for f in dataclasses.fields(DomainStyle) if f.name != "name"}


def _style(name: str, entry: object, origin: str) -> DomainStyle:
    if not isinstance(entry, dict):
        raise DataError(f"{origin}: domain {name!r} must be a mapping of style parameters")
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
        raise DataError(
            f"{origin}: domain {name!r} has unknown parameter(s) {unknown}; "
            f"known: {', '.join(_FIELDS)}"
        )
    values: dict[str, object] = {}
    for key, value in entry.items():
        default = _FIELDS[key].default
        if isinstance(default, tuple):
            if not isinstance(value, list) or len(value) != len(default):
                raise DataError(
                    f"{origin}: {name}.{key} must be a list of {len(default)} numbers, "
                    f"not {value!r}"
                )
            value = tuple(float(v) for v in value)
        elif isinstance(default, float):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise DataError(f"{origin}: {name}.{key} must be a number >= 0, not {value!r}")
            value = float(value)
        elif key == "background_noise_kind" and value not in NOISE_KINDS:
            raise DataError(
                f"{origin}: {name}.{key} must be one of {', '.join(NOISE_KINDS)}, not {value!r}"
            )
        values[key] = value
    return DomainStyle(name=name, **values)


def parse_domains(document: object, origin: str = "domains.yaml") -> dict[str, DomainStyle]:
    """Domain styles from a parsed YAML document (a mapping of domain name to parameters)."""
    if not isinstance(document, dict) or not document:
        raise DataError(f"{origin} must map each domain name to its style parameters")
    return {str(name): _style(str(name), entry or {}, origin) for name, entry in document.items()}


@lru_cache(maxsize=1)
def load_domains() -> dict[str, DomainStyle]:
    """The packaged domain styles, in file order (sorted by name)."""
    text = resources.files("clipgauge.world").joinpath("domains.yaml").read_text("utf-8")
    return parse_domains(yaml.safe_load(text))


def domain_names() -> list[str]:
    return list(load_domains())


def get_style(domain: str) -> DomainStyle:
    """The style of `domain`; an unknown name is a DataError listing the known ones."""
    styles = load_domains()
    if domain not in styles:
        raise DataError(f"unknown world domain {domain!r}; known: {', '.join(styles)}")
    return styles[domain]
