"""Process supervision for `loupe up` and the end-to-end tests.

A `Process` (process.py) is one child, spec and handle; a `Stack` (supervisor.py) starts
processes in order and stops them in reverse; the factories in components.py build the
processes loupe runs, and up.py puts them together. Import each from its module.
"""
