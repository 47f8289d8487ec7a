"""Names of the protocols stored for WiSE-FT interpolations: "<protocol>@<alpha>".

Shared by the study that writes them and the analysis that reads them.
"""

from __future__ import annotations

# Protocols evaluated again for WiSE-FT interpolations, stored as "<protocol>@<alpha>".
WISE_PROTOCOLS = ("id", "dg", "cf_after")


def wise_protocol(protocol: str, alpha: float) -> str:
    """The stored protocol name of `protocol` at WiSE-FT alpha, e.g. "dg@0.5"."""
    return f"{protocol}@{alpha:g}"


def parse_wise_protocol(name: str) -> tuple[str, float] | None:
    """(protocol, alpha) of a `wise_protocol` name; None for any other protocol."""
    protocol, sep, alpha = name.partition("@")
    if not sep or protocol not in WISE_PROTOCOLS:
        return None
    try:
        return protocol, float(alpha)
    except ValueError:
        return None
