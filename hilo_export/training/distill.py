"""HiLo distillation: teach a model the compressed sequence the engines will give it.

Each step draws a batch of crops with masks of one category (small, medium, large in turn), plans
them with the engines' planner settings and buckets, noises them to one of the pipeline's 8-step
noise levels, and runs the frozen model dense on them (the teacher). The student (the model with
LoRA and a learned low-frequency embedding) runs on the planned HiLo sequence; the loss is the
mean squared difference of its predictions and the teacher's on the kept tokens, the dilated mask's
tokens weighted ``mask_weight`` times. A ``full_share`` of the steps runs the student dense instead,
so the ``full`` bucket (the same weights) keeps the teacher's prediction.

Usage::

    from hilo_export.evaluation.masks import sample_mask
    from hilo_export.training import DistillRequest, distill
    result = distill(DistillRequest(model="reference", images=Path("photos"), out=Path("out"), steps=200),
                     masks=sample_mask)
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..model.loading import REFERENCE
from ..model.ops import token_gather
from ..model.sequence import PlanTensors
from ..planning.buckets import parse_buckets
from ..planning.plan import MASK, PlannerConfig, TokenPlan, plan_batch
from ..reference.model import load_checkpoint
from .data import CATEGORIES, MaskSampler, draw_batch, read_images, to_tensors
from .report import write_report
from .sources import Source, open_source
from .student import Student, TrainError, enable_gradient_checkpointing

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
SCHEDULES = ("cosine", "constant")
GRID_TOKENS = 64  # the operating grid's side in tokens: Flux at 1024 px, the reference model at 512 px
CHECKPOINT = "checkpoints/last.pt"


@dataclass(frozen=True)
class DistillRequest:
    """What to distill and how (``hilo-export distill --help`` says the same per option)."""

    model: str = REFERENCE  # "reference", a reference-model folder, or a FluxFillPipeline folder / cached id
    images: Path | None = None  # any folder of images
    out: Path | None = None  # the distilled model's folder; checkpoints, distill.json and loss.png go in it
    steps: int = 500
    lora_rank: int = 16
    lr: float = 1e-4
    batch: int = 4
    resolution: int | None = None  # square crops of this many pixels; None: the operating grid (GRID_TOKENS a side)
    device: str = "cpu"
    precision: str = "fp32"  # the model's dtype while training ("bf16" for a 12B model on a GPU)
    buckets: str = "s,m,l"
    config: PlannerConfig = field(default_factory=PlannerConfig)
    full_share: float = 0.25  # share of steps that train the dense (full-bucket) prediction
    mask_weight: float = 4.0  # loss weight of the dilated mask's tokens, against 1 for context tokens
    warmup: int = 20  # steps of linear learning-rate warm-up
    schedule: str = "cosine"  # after warm-up: "cosine" (down to zero at --steps) or "constant"
    validation_batches: int = 3  # fixed batches (one per category, never trained on) scored at every checkpoint
    seed: int = 0
    checkpoint_every: int = 50
    log_every: int = 10
    gradient_checkpointing: bool = False
    text_len: int | None = None  # Fill pipelines: prompt tokens (the empty prompt is padded to this)
    resume: bool = False
    threads: int | None = None  # CPU threads for torch (None: torch's default)

    def __post_init__(self) -> None:
        if self.images is None or self.out is None:
            raise TrainError("distill needs --images (a folder of images) and --out (the output folder)")
        object.__setattr__(self, "images", Path(self.images))
        object.__setattr__(self, "out", Path(self.out))
        for name in ("steps", "batch", "resolution", "checkpoint_every", "log_every"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise TrainError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise TrainError(f"--lr must be positive, got {self.lr}")
        if not 0.0 <= self.full_share <= 1.0:
            raise TrainError(f"full_share must lie in [0, 1], got {self.full_share}")
        if not self.mask_weight > 0:
            raise TrainError(f"mask_weight must be positive, got {self.mask_weight}")
        if self.schedule not in SCHEDULES:
            raise TrainError(f"--lr-schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise TrainError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise TrainError("--device cuda but torch sees no GPU here; use --device cpu")
        parse_buckets(self.buckets)  # a bad table fails now, not after the model has loaded

    def settings(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(images=str(self.images), out=str(self.out), config=self.config.to_dict())
        return data


@dataclass
class DistillResult:
    folder: Path  # what ``hilo-export build --model`` takes
    steps: int
    seconds: float
    history: list[dict[str, Any]]


def distill(request: DistillRequest, masks: MaskSampler,
            progress: Callable[[str], None] = log.info) -> DistillResult:
    """Train the student, then write the distilled model (adapters merged) with its report."""
    if request.threads:
        torch.set_num_threads(request.threads)
    source = open_source(request.model, request.device, PRECISIONS[request.precision], request.text_len)
    if request.resolution is None:  # train on the grid the engines serve: what the gaps look like there
        request = replace(request, resolution=GRID_TOKENS * source.token_size)
    if request.resolution % source.token_size:
        raise TrainError(f"--resolution {request.resolution} is not a multiple of the model's {source.token_size}-px tokens; "
                         f"use {request.resolution // source.token_size * source.token_size or source.token_size}")
    images = read_images(request.images, request.resolution)
    with torch.random.fork_rng(devices=[]):  # the adapters' random start comes from the seed: runs repeat
        torch.manual_seed(request.seed)
        student = Student(source.model, request.lora_rank)
    if request.gradient_checkpointing:
        enable_gradient_checkpointing(source.model)
    source.model.train()
    params = student.trainable()
    optimizer = torch.optim.AdamW(params.values(), lr=request.lr, weight_decay=0.0)
    grid = (request.resolution // source.token_size,) * 2
    sigmas = source.sigmas(grid)
    history: list[dict[str, Any]] = []
    start, spent = 0, 0.0
    checkpoint = request.out / CHECKPOINT
    if request.resume and checkpoint.exists():
        start, spent, history = _resume(checkpoint, request, params, optimizer)
        progress(f"resumed from {checkpoint} at step {start}")
    if start == 0 and request.validation_batches:
        history.append(validate(student, source, request, images, masks, sigmas, 0))
    progress(f"distilling {source.name} ({source.kind}): {sum(p.numel() for p in params.values()):,} trained parameters "
             f"(LoRA rank {request.lora_rank} on {len(student.layers)} layers, low-frequency embedding), "
             f"{len(images)} images, {request.resolution}-px crops, {grid[0]}x{grid[1]} tokens, noise levels "
             + ", ".join(f"{s:.3f}" for s in sigmas))
    tick = time.perf_counter()
    for step in range(start, request.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(request, step)
        record = train_step(student, source, request, images, masks, sigmas, step)
        loss = record.pop("tensor")
        loss.backward()
        record["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params.values(), 1.0))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        history.append(record)
        done = step + 1
        if done % request.log_every == 0 or done == request.steps:
            elapsed = time.perf_counter() - tick
            per_step = elapsed / (done - start)
            recent = [r["loss"] for r in history[-request.log_every:] if r["kind"] != "validation"]
            progress(f"step {done}/{request.steps}: loss {np.mean(recent):.4g} (last {len(recent)}), "
                     f"{per_step:.2f} s/step, ETA {_clock(per_step * (request.steps - done))}")
        if done % request.checkpoint_every == 0 and done < request.steps:
            if request.validation_batches:
                history.append(validate(student, source, request, images, masks, sigmas, done))
                progress(f"step {done}: validation loss {history[-1]['loss']:.4g} (HiLo, fixed batches)")
            _save_checkpoint(checkpoint, request, params, optimizer, done, spent + time.perf_counter() - tick, history)
    if request.steps > start and request.validation_batches:
        history.append(validate(student, source, request, images, masks, sigmas, request.steps))
        progress(f"step {request.steps}: validation loss {history[-1]['loss']:.4g} (HiLo, fixed batches)")
    seconds = spent + time.perf_counter() - tick
    if request.steps > start:
        _save_checkpoint(checkpoint, request, params, optimizer, request.steps, seconds, history)
    source.model.eval()
    folder = source.save(student.merge(), request.out)
    write_report(request.out, request.settings(), source, history, seconds, sigmas, request.lora_rank)
    progress(f"distilled model: {folder} ({request.steps} steps, {_clock(seconds)})")
    return DistillResult(folder, request.steps, seconds, history)


def learning_rate(request: DistillRequest, step: int) -> float:
    """Linear warm-up, then constant or a cosine decay to zero at the last step (the noisy
    single-batch gradients settle instead of leaving the last steps' noise in the weights). A
    resumed run with more --steps stretches the decay from where it is."""
    warm = min(1.0, (step + 1) / request.warmup)
    if request.schedule == "constant" or request.steps <= request.warmup:
        return request.lr * warm
    progress = (step - request.warmup) / (request.steps - request.warmup)
    return request.lr * warm * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))


VALIDATION_DRAW = 10**9  # validation batches are drawn as steps from here on: never a training step's


@torch.no_grad()
def validate(student: Student, source: Source, request: DistillRequest, images: list[np.ndarray],
             masks: MaskSampler, sigmas: list[float], step: int) -> dict[str, Any]:
    """The HiLo loss on the same fixed batches every time: a curve that batch-to-batch noise does not hide."""
    losses = [train_step(student, source, request, images, masks, sigmas, VALIDATION_DRAW + i, dense=False)["loss"]
              for i in range(request.validation_batches)]
    return {"step": step, "loss": float(np.mean(losses)), "kind": "validation", "per_batch": [round(v, 8) for v in losses]}


def train_step(student: Student, source: Source, request: DistillRequest, images: list[np.ndarray],
               masks: MaskSampler, sigmas: list[float], step: int, dense: bool | None = None) -> dict[str, Any]:
    """One batch's loss (``tensor``) and what the loss curve records of it. Drawn from (seed, step)
    alone, so a resumed run sees the batches an uninterrupted one would."""
    rng = np.random.default_rng([request.seed, step])
    noise = torch.Generator().manual_seed(request.seed * 1_000_003 + step)
    category = CATEGORIES[step % len(CATEGORIES)]
    crops, drawn = draw_batch(images, request.resolution, request.batch, category, masks, rng)
    sigma = sigmas[int(rng.integers(len(sigmas)))]
    drawn_dense = bool(rng.random() < request.full_share)
    dense = drawn_dense if dense is None else dense
    plans = plan_batch(crops, drawn, source.token_size, request.buckets, request.config)
    pixels, holes = to_tensors(crops, drawn)
    inputs = source.inputs(pixels, holes, sigma, noise)
    teacher = student.teacher(inputs)
    loss = hilo_loss(student, plans, inputs, teacher, request.mask_weight, dense)
    return {"step": step + 1, "loss": float(loss.detach()), "tensor": loss, "kind": "full" if dense else "hilo",
            "category": category, "bucket": plans[0].bucket, "sigma": round(sigma, 4),
            "kept": round(sum(p.length for p in plans) / (len(plans) * plans[0].n_tokens), 4)}


def hilo_loss(student: Student, plans: list[TokenPlan], inputs: dict[str, Any], teacher: torch.Tensor,
              mask_weight: float, dense: bool) -> torch.Tensor:
    """Weighted mean squared difference from the teacher on the tokens the student predicts."""
    device = teacher.device
    in_mask = torch.stack([(p.kinds.reshape(-1) == MASK) for p in plans]).to(device)
    weights = 1.0 + (mask_weight - 1.0) * in_mask.float()  # [B, N]
    if dense:
        return _weighted_mse(student.dense(inputs), teacher, weights)
    n_tokens = plans[0].n_tokens
    batch = teacher.shape[0]
    total, weight_sum = teacher.new_zeros((), dtype=torch.float32), teacher.new_zeros((), dtype=torch.float32)
    for rows in _equal_lengths(plans):
        tensors = PlanTensors.from_plan(plans[rows[0]], len(rows), device)
        keep = torch.stack([plans[r].keep_indices for r in rows]).to(device)
        tensors = PlanTensors(keep, tensors.pool, tensors.block)
        part = {k: (v[rows] if k in student.adapter.batched_inputs and torch.is_tensor(v) and v.shape[:1] == (batch,)
                    else v) for k, v in inputs.items()}
        predicted = student.hilo(tensors, n_tokens, part)[:, tensors.n_lowfreq:]
        target = token_gather(teacher[rows], keep)
        w = torch.gather(weights[rows], 1, keep)
        error = (predicted.float() - target.float()).pow(2).mean(-1)
        total = total + (w * error).sum()
        weight_sum = weight_sum + w.sum()
    return total / weight_sum


def _weighted_mse(predicted: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    error = (predicted.float() - target.float()).pow(2).mean(-1)
    return (weights * error).sum() / weights.sum()


def _equal_lengths(plans: list[TokenPlan]) -> list[list[int]]:
    """Rows whose plans keep as many tokens (one call each; padded sizing gives one group)."""
    groups: dict[int, list[int]] = {}
    for row, plan in enumerate(plans):
        groups.setdefault(int(plan.keep_indices.numel()), []).append(row)
    return list(groups.values())


def _save_checkpoint(path: Path, request: DistillRequest, params: dict[str, torch.nn.Parameter],
                     optimizer: torch.optim.Optimizer, step: int, seconds: float, history: list[dict[str, Any]]) -> None:
    from ..files import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"step": step, "seconds": seconds, "settings": request.settings(), "history": history,
             "trained": {k: v.detach().cpu() for k, v in params.items()}, "optimizer": optimizer.state_dict()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _resume(path: Path, request: DistillRequest, params: dict[str, torch.nn.Parameter],
            optimizer: torch.optim.Optimizer) -> tuple[int, float, list[dict[str, Any]]]:
    state = load_checkpoint(path)
    # every setting but the step count (and resume itself, threads, and where the folder now lies)
    # must match the run being continued
    differ = sorted(k for k, v in request.settings().items()
                    if k not in ("steps", "resume", "threads", "out") and state["settings"].get(k) != v)
    if differ:
        raise TrainError(f"{path} was trained with other settings ({', '.join(differ)}); "
                         "resume with the same ones, or start afresh without --resume")
    if set(state["trained"]) != set(params):
        raise TrainError(f"{path} holds other trained tensors than this student; start afresh without --resume")
    with torch.no_grad():
        for name, value in state["trained"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    if state["step"] > request.steps:
        raise TrainError(f"{path} is at step {state['step']}, past --steps {request.steps}; ask for more steps")
    return int(state["step"]), float(state["seconds"]), list(state["history"])


def _clock(seconds: float) -> str:
    seconds = max(0, int(math.ceil(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
