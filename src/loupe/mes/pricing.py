"""Pricing a piece from its 3D model (STL): the metal it takes and the work its detail needs.

`price_isolated` prices in a child process (`python -m loupe.mes.pricing`), never on the
service's event loop: pricing is pure-Python CPU work (250 000 triangles take about 2 s), and
on the loop it would freeze the service's consumers and `/healthz` for that long. A process,
not a thread: a thread cannot be stopped and still holds the GIL the loop needs, while a
process is killed at the time limit and its memory returned. One process per model (about 30
ms to start), so a model that is killed takes nothing else down with it; at most
`LOUPE_PREFETCH` run at once, as MES holds one message per pricing.
"""

from __future__ import annotations

import asyncio
import json
import math
import resource
import struct
import sys
from collections import Counter
from dataclasses import asdict, dataclass

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
class PricingLimits:
    """What one model may cost to price (LOUPE_PRICING_MAX_TRIANGLES, _TIMEOUT_SECONDS)."""

    max_triangles: int
    seconds: float


@dataclass(frozen=True)
class Quote:
    price: float
    currency: str
    volume_mm3: float
    triangles: int


Triangle = tuple[tuple[float, float, float], ...]


def _too_many(max_triangles: int | None) -> ModelError:
    return ModelError(f"the model has more than {max_triangles} triangles, the limit of pricing")


def _binary_triangles(data: bytes, max_triangles: int | None) -> list[Triangle]:
    count = struct.unpack_from("<I", data, 80)[0]
    # Checked before a single triangle is unpacked: the header alone says how many there are.
    if max_triangles is not None and count > max_triangles:
        raise _too_many(max_triangles)
    if len(data) != 84 + count * 50:
        raise ModelError(f"binary STL says {count} triangles but has {len(data)} bytes")
    triangles = []
    for i in range(count):
        values = struct.unpack_from("<12f", data, 84 + i * 50)
        triangles.append((values[3:6], values[6:9], values[9:12]))
    return triangles


def _ascii_triangles(text: str, max_triangles: int | None) -> list[Triangle]:
    vertices = []
    most = None if max_triangles is None else 3 * max_triangles
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["vertex"]:
            if most is not None and len(vertices) == most:
                raise _too_many(max_triangles)
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


def parse_stl(data: bytes, max_triangles: int | None = None) -> list[Triangle]:
    """The model's triangles; ModelError when it is not an STL or has more than
    `max_triangles` (None: no limit)."""
    if len(data) >= 84 and len(data) == 84 + struct.unpack_from("<I", data, 80)[0] * 50:
        return _binary_triangles(data, max_triangles)
    if data.lstrip().startswith(b"solid"):
        return _ascii_triangles(data.decode("ascii", "replace"), max_triangles)
    if len(data) >= 84:
        return _binary_triangles(data, max_triangles)
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


def price_model(data: bytes, max_triangles: int | None = None) -> Quote:
    triangles = parse_stl(data, max_triangles)
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


async def price_isolated(data: bytes, limits: PricingLimits) -> Quote:
    """`price_model` in a child process killed past `limits.seconds` (see the module's
    docstring). ModelError when the model cannot be priced within the limits; RuntimeError
    when the process failed for another reason (retried like any transient failure)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        __name__,
        str(limits.max_triangles),
        str(limits.seconds),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(limits.seconds):
            out, err = await process.communicate(data)
    except TimeoutError:
        raise ModelError(f"pricing the model took longer than {limits.seconds:g} s") from None
    finally:
        # Also when the consumer is cancelled (the service stops): no pricing outlives it.
        if process.returncode is None:
            process.kill()
            await process.wait()
    try:
        answer = json.loads(out)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"pricing process exited with {process.returncode}: {tail[0][:200]}")
    if "error" in answer:
        raise ModelError(str(answer["error"]))
    return Quote(**answer["quote"])


def _price_from_stdin(max_triangles: int, seconds: float) -> None:
    """The child's side: the model on stdin, the quote or the refusal as JSON on stdout."""
    # A second bound should the parent die before it kills this process: the kernel stops it.
    limit = math.ceil(seconds) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (limit, limit))
    try:
        answer = {"quote": asdict(price_model(sys.stdin.buffer.read(), max_triangles))}
    except ModelError as exc:
        answer = {"error": str(exc)}
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    _price_from_stdin(int(sys.argv[1]), float(sys.argv[2]))
