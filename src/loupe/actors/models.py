"""3D models the simulated customers upload: rings as closed triangle meshes, in binary STL."""

from __future__ import annotations

import math
import random
import struct

Vertex = tuple[float, float, float]


def ring_triangles(
    major_mm: float, minor_mm: float, segments: int = 24, sides: int = 12
) -> list[tuple[Vertex, Vertex, Vertex]]:
    """A torus (a plain band ring), outward-facing triangles."""

    def point(i: int, j: int) -> Vertex:
        u = 2 * math.pi * (i % segments) / segments
        v = 2 * math.pi * (j % sides) / sides
        radius = major_mm + minor_mm * math.cos(v)
        return (radius * math.cos(u), radius * math.sin(u), minor_mm * math.sin(v))

    triangles = []
    for i in range(segments):
        for j in range(sides):
            a, b = point(i, j), point(i + 1, j)
            c, d = point(i + 1, j + 1), point(i, j + 1)
            triangles += [(a, b, c), (a, c, d)]
    return triangles


def binary_stl(triangles: list[tuple[Vertex, Vertex, Vertex]], name: str = "ring") -> bytes:
    header = f"loupe {name}".encode().ljust(80, b" ")[:80]
    parts = [header, struct.pack("<I", len(triangles))]
    for a, b, c in triangles:
        parts.append(struct.pack("<12fH", 0.0, 0.0, 0.0, *a, *b, *c, 0))
    return b"".join(parts)


def random_ring(rng: random.Random) -> bytes:
    """A ring the size customers order: 7 to 11 mm inner radius, 1 to 2.5 mm band."""
    return binary_stl(
        ring_triangles(rng.uniform(7.0, 11.0), rng.uniform(1.0, 2.5), rng.choice((16, 24, 32)))
    )
