"""Pictures of a plan: which tokens the DiT sees, drawn over the image."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .plan import DROPPED, FILL, HIGH_FREQ, MASK, TokenPlan

COLOURS = {
    MASK: (230, 40, 40),
    HIGH_FREQ: (250, 200, 30),
    FILL: (40, 140, 240),
}
LOWFREQ_GRID = (40, 220, 90)
_TINT = 0.45  # how strongly kept tokens take their kind's colour
_DIM = 0.35  # brightness left to dropped tokens


def selection_picture(image: Image.Image, plan: TokenPlan) -> Image.Image:
    """The image with kept tokens tinted by kind, dropped tokens dimmed, low-frequency blocks outlined, and a legend."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    size = plan.token_size
    kinds = plan.kinds.numpy().repeat(size, 0).repeat(size, 1)
    out = rgb.copy()
    out[kinds == DROPPED] *= _DIM
    for kind, colour in COLOURS.items():
        where = kinds == kind
        out[where] = (1 - _TINT) * rgb[where] + _TINT * np.array(colour, np.float32)
    picture = Image.fromarray(out.clip(0, 255).astype(np.uint8))

    draw = ImageDraw.Draw(picture)
    if plan.lowfreq is not None:
        step = plan.lowfreq.factor * size
        width, height = picture.size
        for x in range(0, width, step):
            draw.line([(x, 0), (x, height - 1)], fill=LOWFREQ_GRID, width=2)
        for y in range(0, height, step):
            draw.line([(0, y), (width - 1, y)], fill=LOWFREQ_GRID, width=2)
        draw.rectangle([0, 0, width - 1, height - 1], outline=LOWFREQ_GRID, width=2)
        for row, col in plan.positions[: plan.n_lowfreq].tolist():
            cx, cy = (col + 0.5) * size, (row + 0.5) * size
            draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=LOWFREQ_GRID)
    return _with_legend(picture, plan)


def _with_legend(picture: Image.Image, plan: TokenPlan) -> Image.Image:
    font = ImageFont.load_default(size=14)
    counts = plan.counts
    dropped = plan.n_tokens - (plan.length - plan.n_lowfreq)
    entries = [
        (COLOURS[MASK], f"mask (dilated) {counts['mask']}"),
        # the context policy's tokens: high-frequency ones for sobel, nearest-the-mask or seeded ones otherwise
        (COLOURS[HIGH_FREQ], f"context, {plan.config.context} {counts['high_freq']}"),
        (COLOURS[FILL], f"fill {counts['fill']}"),
        ((50, 50, 50), f"dropped {dropped}"),
        (LOWFREQ_GRID, f"low-frequency blocks {counts['low_freq']}"),
    ]
    title = (
        f"bucket {plan.bucket}: {plan.length} of {plan.n_tokens} tokens ({plan.kept_ratio:.0%}), "
        f"grid {plan.grid[0]}x{plan.grid[1]}, mask {plan.mask_ratio:.1%}"
    )
    line = 20
    panel_height = line * (2 + (len(entries) + 1) // 2)
    width = max(picture.width, 460)
    canvas = Image.new("RGB", (width, picture.height + panel_height), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    top = picture.height + 6
    draw.text((8, top), title, fill=(0, 0, 0), font=font)
    for i, (colour, label) in enumerate(entries):
        x = 8 + (i % 2) * (width // 2)
        y = top + line * (1 + i // 2)
        draw.rectangle([x, y + 2, x + 14, y + 16], fill=colour, outline=(0, 0, 0))
        draw.text((x + 22, y), label, fill=(0, 0, 0), font=font)
    return canvas
