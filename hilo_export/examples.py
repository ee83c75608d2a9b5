"""The example image and mask bundled with the package (the embedded default input)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from PIL import Image

_DATA = resources.files("hilo_export") / "data"


def example_image_path() -> Path:
    return Path(str(_DATA / "coffee.png"))


def example_mask_path() -> Path:
    return Path(str(_DATA / "coffee_mask.png"))


def example_image() -> Image.Image:
    return Image.open(example_image_path()).convert("RGB")


def example_mask() -> Image.Image:
    return Image.open(example_mask_path()).convert("L")
