"""Pricing a piece from its 3D model (STL): the metal it takes and the work its detail needs."""

from __future__ import annotations

import math
import struct
from collections import Counter
from dataclasses import dataclass

# Cast in 14-carat gold: grams per cubic millimetre, and the workshop's demo tariff.
GOLD_DENSITY_G_PER_MM3 = 0.0131
PRICE_PER_GRAM = 62.0
BASE_PRICE = 120.0
PRICE_PER_THOUSAND_TRIANGLES = 4.0
CURRENCY = "EUR"
MAX_VOLUME_MM3 = 200_000.0  # larger than any jewellery piece: the model is in the wrong unit


class ModelError(ValueError):
    """The model cannot be priced; the text says why, for the seller and the trace."""


@dataclass(frozen=True)
class Quote:
    price: float
    currency: str
    volume_mm3: float
    triangles: int


Triangle = tuple[tuple[float, float, float], ...]


def _binary_triangles(data: bytes) -> list[Triangle]:
    count = struct.unpack_from("<I", data, 80)[0]
    if len(data) != 84 + count * 50:
        raise ModelError(f"binary STL says {count} triangles but has {len(data)} bytes")
    triangles = []
    for i in range(count):
        values = struct.unpack_from("<12f", data, 84 + i * 50)
        triangles.append((values[3:6], values[6:9], values[9:12]))
    return triangles


def _ascii_triangles(text: str) -> list[Triangle]:
    vertices = []
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["vertex"]:
            try:
                if len(words) != 4:
                    raise ValueError
                vertex = tuple(float(w) for w in words[1:])
            except ValueError:
                raise ModelError(f"unreadable vertex line: {line.strip()[:60]}") from None
            vertices.append(vertex)
    if len(vertices) % 3:
        raise ModelError("ASCII STL has a facet without three vertices")
    return [tuple(vertices[i : i + 3]) for i in range(0, len(vertices), 3)]  # type: ignore[misc]


def parse_stl(data: bytes) -> list[Triangle]:
    if len(data) >= 84 and len(data) == 84 + struct.unpack_from("<I", data, 80)[0] * 50:
        return _binary_triangles(data)
    if data.lstrip().startswith(b"solid"):
        return _ascii_triangles(data.decode("ascii", "replace"))
    if len(data) >= 84:
        return _binary_triangles(data)
    raise ModelError("not an STL model (too short for binary, no 'solid' header)")


def check_closed(triangles: list[Triangle]) -> None:
    """A solid's surface is closed: every edge is shared by exactly two triangles.

    The volume of an open surface depends on where it sits, so it cannot be priced.
    """
    edges: Counter[tuple[tuple[float, ...], tuple[float, ...]]] = Counter()
    for triangle in triangles:
        for vertex in triangle:
            if not all(math.isfinite(c) for c in vertex):
                raise ModelError("the model has a vertex that is not a finite number")
        for a, b in ((0, 1), (1, 2), (2, 0)):
            edge = tuple(sorted((tuple(triangle[a]), tuple(triangle[b]))))
            edges[edge] += 1  # type: ignore[index]
    open_edges = sum(1 for count in edges.values() if count != 2)
    if open_edges:
        raise ModelError(f"the model is not a closed solid ({open_edges} open or shared edges)")


def volume(triangles: list[Triangle]) -> float:
    """Enclosed volume by the divergence theorem: signed tetrahedra from the origin."""
    total = 0.0
    for (ax, ay, az), (bx, by, bz), (cx, cy, cz) in triangles:
        total += ax * (by * cz - bz * cy) - ay * (bx * cz - bz * cx) + az * (bx * cy - by * cx)
    return abs(total) / 6.0


def price_model(data: bytes) -> Quote:
    triangles = parse_stl(data)
    if not triangles:
        raise ModelError("the model has no triangles")
    check_closed(triangles)
    mm3 = volume(triangles)
    if mm3 <= 0:
        raise ModelError("the model encloses no volume (not a closed solid)")
    if mm3 > MAX_VOLUME_MM3:
        raise ModelError(f"the model encloses {mm3:.0f} mm³, too large for a piece of jewellery")
    grams = mm3 * GOLD_DENSITY_G_PER_MM3
    price = (
        BASE_PRICE + grams * PRICE_PER_GRAM + len(triangles) / 1000 * PRICE_PER_THOUSAND_TRIANGLES
    )
    return Quote(round(price, 2), CURRENCY, round(mm3, 3), len(triangles))
