"""HiLo distillation: the model taught the compressed sequence its engines give it.

Owns the student (LoRA adapters and a learned low-frequency embedding on the model; the frozen
model, adapters off, is the dense teacher), the sources it trains on (the reference model, a
``FluxFillPipeline`` folder), planned batches from any folder of images, the training loop with
resumable checkpoints, and its report. Imports ``planning``, ``model``, ``folder`` and
``reference``; only ``evaluation`` and the CLI import it, and serving never needs it.
"""

from .data import CATEGORIES, MaskSampler, read_images
from .distill import DistillRequest, DistillResult, distill, hilo_loss
from .sources import FillSource, ReferenceSource, open_source
from .student import LORA_TARGETS, Student, TrainError

__all__ = [
    "CATEGORIES", "LORA_TARGETS", "DistillRequest", "DistillResult", "FillSource", "MaskSampler", "ReferenceSource",
    "Student", "TrainError", "distill", "hilo_loss", "open_source", "read_images",
]
