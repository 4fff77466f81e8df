"""Sample files the panel tests write into the lab, shared so every test module opens the same
code (the rewrite tests compare against SOURCE after a revert)."""

from __future__ import annotations

from conftest import Lab

SOURCE = """def area(width, height):
    return width*height


def perimeter(width, height):
    return 2*(width+height)
"""


def fresh_file(lab: Lab, name: str, text: str = SOURCE) -> str:
    """Write `text` into the lab under `name` so each test starts from a known file."""
    lab.write(name, text)
    return name
