"""``HiLoRuntime``: plan with a built folder's settings and run the matching bucket's engine."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import HiLoError
from ..folder.backends import Backend, Profile, Runner, get_backend
from ..folder.dtypes import from_numpy, to_numpy
from ..folder.manifest import ManifestError, all_files, check_graphs, read_manifest, read_verified, verify_files
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
        """One denoising step on the plan's bucket; returns the full-grid output as a torch tensor."""
        bucket = self._bucket_for(plan)
        expected = {v["name"]: v for v in bucket["inputs"]}
        batch = self.manifest["batch"]
        feeds = {}
        for name, value in inputs.items():
            if name not in expected or name in ("keep_indices", "fill"):
                raise RuntimeInputError(f"unexpected input {name!r}; the engines take {sorted(expected)} (plan= and fill= apart)")
            feeds[name] = _array(value, expected[name], name)
        missing = set(expected) - set(feeds) - {"keep_indices", "fill"}
        if missing:
            raise RuntimeInputError(f"missing inputs {sorted(missing)}")
        keep = plan.keep_indices.numpy()  # exact sizing: the plan's own length, inside the bucket's range
        feeds["keep_indices"] = np.ascontiguousarray(np.broadcast_to(keep, (batch, keep.shape[0])))
        fill_spec = expected["fill"]
        feeds["fill"] = np.zeros(fill_spec["shape"], fill_spec["dtype"]) if fill is None else _array(fill, fill_spec, "fill")

        outputs = self.run_bucket(bucket["name"], feeds)
        output = outputs["output"]
        if fill is None and bucket["n_lowfreq"]:
            # no fill given: tokens without a prediction take their block's low-frequency one
            dropped = np.ones(plan.n_tokens, bool)
            dropped[plan.keep_indices.numpy()] = False
            block = plan.lowfreq.block_of_token().numpy()
            output[:, dropped] = outputs["lowfreq_output"][:, block[dropped]]
        return from_numpy(output)

    def run_bucket(self, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one bucket's engine on raw engine inputs (names and shapes as in the manifest)."""
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
            self._backend = choice if hasattr(choice, "load") else get_backend(choice or self.manifest["backend"]["name"])
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


def _array(value: Any, spec: dict[str, Any], name: str) -> np.ndarray:
    array = to_numpy(value) if isinstance(value, torch.Tensor) else np.asarray(value)
    if list(array.shape) != list(spec["shape"]):
        raise RuntimeInputError(
            f"{name} has shape {list(array.shape)}, the engines expect {spec['shape']} "
            "(engines are built for one resolution, batch and text length: see hilo-export inspect)"
        )
    return np.ascontiguousarray(array.astype(spec["dtype"], copy=False))
