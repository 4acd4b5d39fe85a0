"""Simulated people who drive orders through the workshop: customers, a B2B partner, sellers
and operators. They talk to the services over HTTP only, as the real front ends do."""

from loupe.actors.workshop import Workshop, run_actors

__all__ = ["Workshop", "run_actors"]
