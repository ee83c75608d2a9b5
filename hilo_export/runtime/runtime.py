"""``HiLoRuntime``: plan with a built folder's settings and run the matching bucket's engine.

Torch tensors stay where they are: feeds go to the engine's device (no copy when they are
already there) in the engine's dtypes, the engine reads them in place (ONNX Runtime's IO
binding, TensorRT device pointers, torch itself), and the output comes back on the caller's
device and dtype. Numpy inputs keep working (a torch CPU tensor comes back). What tokens
without a prediction get is computed inside the engine graph (``use_fill``), never here.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import HiLoError
from ..folder.backends import TORCH_DTYPES, Backend, Profile, Runner, get_backend
from ..folder.dtypes import from_numpy
from ..folder.manifest import ManifestError, all_files, check_graphs, read_manifest, read_verified, verify_files
from ..model.engine import ENGINE_INPUTS, engine_module
from ..planning.buckets import FULL
from ..planning.plan import PlannerConfig, TokenPlan, plan_tokens


class RuntimeInputError(HiLoError, ValueError):
    """Inputs that do not fit the engines; the message says what was expected."""


class HiLoRuntime:
    """One built engine folder, ready to run. Safe to call from several threads at once."""

    def __init__(self, folder: Path, manifest: dict[str, Any], backend: str | Backend | None = None):
        self.folder = Path(folder)
        self.manifest = manifest
        self.config = PlannerConfig.from_dict(manifest["planner"])
        self.token_size = manifest["token_size"]
        self.grid = tuple(manifest["grid"])
        self.buckets = {b["name"]: b for b in manifest["buckets"]}
        # a name, or a configured backend such as OrtBackend(fix_k=True); created on first run,
        # so planning with a folder needs no engine backend installed
        self._backend_choice = backend
        self._backend: Backend | None = None
        self._runners: dict[str, Runner] = {}
        self._lock = threading.Lock()
        self._verify = True  # engine bytes are checked against the manifest when read (load(verify=False): not)
        self._keep: tuple[torch.Tensor, torch.device, torch.Tensor] | None = None  # the last plan's keep list, on the device
        self._zero_fill: dict[tuple[str, torch.device], torch.Tensor] = {}  # the unused fill, made once per bucket and device

    @classmethod
    def load(cls, folder: str | Path, backend: str | Backend | None = None, verify: bool = True) -> "HiLoRuntime":
        """Read ``manifest.json`` and check every file against its sha256 (``verify=False`` skips that)."""
        folder = Path(folder)
        manifest = read_manifest(folder)
        check_graphs(folder, manifest)  # also unverified: where external data may be read from
        if verify:
            verify_files(folder, all_files(manifest))
        runtime = cls(folder, manifest, backend)
        runtime._verify = verify
        return runtime

    @property
    def resolution(self) -> tuple[int, int]:
        return tuple(self.manifest["resolution"])

    def plan(self, image: Any, mask: Any, dense: bool = False) -> TokenPlan:
        """Plan with the folder's planner settings and bucket table; masks beyond ``l`` plan ``full``.

        ``dense=True`` plans the ``full`` bucket whatever the mask: the uncompressed baseline."""
        height, width = np.shape(image)[:2]
        if (width, height) != self.resolution:
            raise RuntimeInputError(
                f"image is {width}x{height} but the engines in {self.folder} were built for "
                f"{self.resolution[0]}x{self.resolution[1]}; resize it, or build for this size (--resolution {width}x{height})"
            )
        buckets = FULL if dense else self.manifest["buckets_spec"]
        return plan_tokens(image, mask, self.token_size, buckets, self.config)

    def __call__(self, *, plan: TokenPlan, fill: Any = None, **inputs: Any) -> torch.Tensor:
        """One denoising step on the plan's bucket; returns the full-grid output as a torch tensor.

        On the device and in the dtype of ``hidden_states`` when that is a tensor (else the
        engine's output on the CPU). ``fill``: what tokens without a prediction get (a full-grid
        tensor); without it, their block's low-frequency prediction (computed in the graph)."""
        bucket = self._bucket_for(plan)
        expected = {v["name"]: v for v in bucket["inputs"]}
        if bucket["n_lowfreq"] and "use_fill" not in expected:
            raise ManifestError(f"the engines in {self.folder} were built by an older hilo-export, whose graphs leave "
                                "tokens without a prediction to the caller; rebuild the folder with hilo-export build")
        runner = self._runner(bucket["graph"])
        device = runner.device
        feeds = {}
        for name, value in inputs.items():
            if name not in expected or name in ENGINE_INPUTS:
                raise RuntimeInputError(f"unexpected input {name!r}; the engines take {sorted(expected)} (plan= and fill= apart)")
            feeds[name] = _tensor(value, expected[name], name, device)
        missing = set(expected) - set(feeds) - set(ENGINE_INPUTS)
        if missing:
            raise RuntimeInputError(f"missing inputs {sorted(missing)}")
        feeds["keep_indices"] = self._keep_indices(plan, device)
        fill_spec = expected["fill"]
        if fill is None:  # the graph ignores it (use_fill is false): one zero tensor serves every step
            key = (bucket["name"], device)
            if key not in self._zero_fill:
                self._zero_fill[key] = torch.zeros(fill_spec["shape"], dtype=TORCH_DTYPES[fill_spec["dtype"]], device=device)
            feeds["fill"] = self._zero_fill[key]
        else:
            feeds["fill"] = _tensor(fill, fill_spec, "fill", device)
        if "use_fill" in expected:  # graphs with low-frequency tokens fill from them unless told otherwise
            feeds["use_fill"] = torch.full((1,), fill is not None, dtype=torch.bool, device=device)  # no host copy
        output = self.run_bucket(bucket["name"], feeds)["output"]  # through run_bucket: bench counts its calls
        like = inputs.get("hidden_states")
        if isinstance(like, torch.Tensor):
            return output.to(like.device, like.dtype)
        return output.cpu()

    def _keep_indices(self, plan: TokenPlan, device: torch.device) -> torch.Tensor:
        """int64 [batch, K], the plan's own length (exact sizing: inside the bucket's range), on
        ``device``: copied there once per plan, not once per denoising step."""
        cached = self._keep
        if cached is not None and cached[0] is plan.keep_indices and cached[1] == device:
            return cached[2]
        keep = plan.keep_indices.to(device).expand(self.manifest["batch"], -1).contiguous()
        self._keep = (plan.keep_indices, device, keep)  # one tuple: replaced whole, safe across threads
        return keep

    @property
    def device(self) -> torch.device:
        """Where the engines run: a runner already made tells; else one of the full graph is made."""
        made = next(iter(self._runners.values()), None)
        return (made or self._runner(FULL)).device

    def run_bucket(self, name: str, feeds: dict[str, Any]) -> dict[str, Any]:
        """Run one bucket's engine on raw engine inputs (names and shapes as in the manifest):
        torch tensors in, torch tensors out on the engine's device; numpy in, numpy out."""
        return self._runner(self.buckets[name]["graph"]).run(name, feeds)

    def _bucket_for(self, plan: TokenPlan) -> dict[str, Any]:
        if not isinstance(plan, TokenPlan):
            raise RuntimeInputError(f"plan= must be a TokenPlan (plan = runtime.plan(image, mask)), got {type(plan).__name__}")
        if plan.grid != self.grid:
            raise RuntimeInputError(
                f"the plan is for a {plan.grid[0]}x{plan.grid[1]} token grid, the engines for {self.grid[0]}x{self.grid[1]}; "
                "plan with runtime.plan(image, mask)"
            )
        bucket = self.buckets.get(plan.bucket)
        kept = int(plan.keep_indices.numel())
        if (bucket is None or plan.config != self.config or bucket["capacity"] != plan.capacity
                or not bucket["kept_min"] <= kept <= bucket["kept"]):
            raise RuntimeInputError(
                f"the plan (bucket {plan.bucket}, capacity {plan.capacity}, {kept} kept tokens) was not made with this "
                "folder's settings; plan with runtime.plan(image, mask)"
            )
        return bucket

    def _engine_backend(self) -> Backend:
        if self._backend is None:
            choice = self._backend_choice
            name = choice or self.manifest["backend"]["name"]
            # the torch backend makes its modules with the model code, which the folder layer does not import
            self._backend = choice if hasattr(choice, "load") else get_backend(name, engine_module=engine_module)
            if getattr(self._backend, "engine_module", False) is None:
                self._backend.engine_module = engine_module
            if getattr(self._backend, "fix_k", False) and self.config.sizing != "padded":
                raise RuntimeInputError(
                    f"the engines in {self.folder} plan with sizing {self.config.sizing!r}: every plan has its own length, "
                    "which a session with k_kept fixed per bucket cannot run; use OrtBackend() (dynamic k_kept) "
                    "or build with --sizing padded"
                )
            built = self.manifest["backend"]
            if not self._backend.portable and (built["version"], built["device"]) != (self._backend.version(), self._backend.device()):
                raise ManifestError(
                    f"the engines in {self.folder} were built by {built['name']} {built['version']} on {built['device']}; "
                    f"this machine has {self._backend.version()} on {self._backend.device()}: rebuild them here"
                )
        return self._backend

    def _runner(self, kind: str) -> Runner:
        with self._lock:
            if kind not in self._runners:
                graph = self.manifest["graphs"][kind]
                profiles = [Profile.of(b) for b in self.manifest["buckets"] if b["graph"] == kind]
                engine_files = [self.folder / f["path"] for f in graph["engine"]["files"]]
                backend = self._engine_backend()
                self._runners[kind] = backend.load(self.folder / graph["files"][0]["path"], engine_files, profiles,
                                                   read=self._reader(graph))
            return self._runners[kind]

    def _reader(self, graph: dict[str, Any]):
        """Engines are loaded lazily, long after load() checked the files: hand the backend a reader whose
        bytes are checked against the manifest once read, so a file changed in between is caught, not run.
        The ort backend reads the graph and its shared weights through it and keeps the checked bytes."""
        if not self._verify:
            return None
        entries = {self.folder / f["path"]: f for f in graph["files"] + graph["engine"]["files"]}

        def read(path: Path) -> bytes:
            if Path(path) not in entries:
                raise ManifestError(f"{path} is not one of the files {self.folder / 'manifest.json'} lists for this graph; "
                                    "rebuild the folder with hilo-export build")
            return read_verified(self.folder, entries[Path(path)])
        return read


def _tensor(value: Any, spec: dict[str, Any], name: str, device: torch.device) -> torch.Tensor:
    """``value`` as the engine reads it: on ``device``, in the manifest's dtype, contiguous; a tensor
    that already is stays itself (no copy), a numpy array is wrapped (zero-copy) and moved."""
    tensor = value if isinstance(value, torch.Tensor) else from_numpy(np.ascontiguousarray(np.asarray(value)))
    if list(tensor.shape) != list(spec["shape"]):
        raise RuntimeInputError(
            f"{name} has shape {list(tensor.shape)}, the engines expect {spec['shape']} "
            "(engines are built for one resolution, batch and text length: see hilo-export inspect)"
        )
    return tensor.detach().to(device=device, dtype=TORCH_DTYPES[spec["dtype"]]).contiguous()
