"""``hilo-export triton``: a Triton Inference Server model repository from a built folder.

    REPO/planner/          onnxruntime, CPU: the build's ONNX planner (planning/onnx_planner.py)
    REPO/dit_hilo/         the HiLo graph: every bucket but full
    REPO/dit_full/         the full graph
    REPO/hilo_edit_step/   Python backend (BLS): planner -> DiT of the planned bucket -> full grid

DiT models are ``onnxruntime`` models of the exported ONNX files (the ``hilo`` functions are
inside them: no custom op library), or ``tensorrt_plan`` models of the folder's TensorRT
engines. A TensorRT engine holds one optimization profile per bucket; its model lists every
profile in ``instance_group.profile`` (Triton uses only profile 0 otherwise) and Triton picks
the profile whose shapes fit the request: bucket profiles cover disjoint ``k_kept`` ranges
(exact sizing: (previous bucket's size, its size]; padded: exactly its size), so the routing is
unambiguous. One model per graph rather than per bucket keeps
one copy of the weights on the GPU (README, Serving with Triton).

Every ``config.pbtxt`` is written from plain data, then parsed with Triton's own schema
(``tritonclient.grpc.model_config_pb2.ModelConfig``) and its inputs and outputs compared with
the ONNX files and the manifest. The repository is assembled beside ``--out`` and moved into
place only once it validates.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..files import glob_escape
from ..folder.manifest import all_files, check_graphs, entry_path, read_manifest, value_info, verify_files
from ..planning.buckets import FULL
from . import router as router_module
from .configs import (
    INSTALL_HINT,
    PLANNER,
    STEP,
    VERSION,
    TritonRepoError,
    dit_model,
    model_configs,
    planner_entry,
    routing,
    step_io,
    tensor_config,
    to_pbtxt,
)

log = logging.getLogger(__name__)

# ------------------------------------------------------------------ writing


def write_repository(folder: Path, out: Path, backend: str | None = None, max_batch: int = 0, force: bool = False,
                     progress: Callable[[str], None] = log.info) -> Path:
    """Write and validate the repository for ``folder`` at ``out``; returns ``out``.

    Nothing is written outside ``out`` (and its staging folder beside it): every file the manifest
    names is confined to ``folder`` and keeps its name relative to its model version folder."""
    # absolute: "--out ." has no name to stage beside, and the checks below compare real locations
    folder, out = Path(folder).resolve(), Path(out).resolve()
    try:
        _check_out(folder, out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with _locked(out):
            return _write_repository(folder, out, backend, max_batch, force, progress)
    except OSError as err:
        where = err.filename or out
        raise TritonRepoError(f"cannot write the repository at {out} ({err.strerror}: {where}); choose a writable --out") from None


def _write_repository(folder: Path, out: Path, backend: str | None, max_batch: int, force: bool,
                      progress: Callable[[str], None]) -> Path:
    manifest = read_manifest(folder)
    # a torch folder carries the same ONNX graphs: Triton serves those with onnxruntime
    backend = backend or {"torch": "ort"}.get(manifest["backend"]["name"], manifest["backend"]["name"])
    if backend == "trt" and manifest["backend"]["name"] != "trt":
        raise TritonRepoError(
            f"{folder} holds {manifest['backend']['name']} engines, no TensorRT ones: build them on the serving GPU "
            "(hilo-export build --backend trt, with the TensorRT of your Triton container), or use --backend ort"
        )
    if out.exists() and any(out.iterdir()):
        if not force:
            raise TritonRepoError(f"{out} exists and is not empty; choose another --out, or pass --force to replace it")
        _check_ours(out)
    configs = model_configs(manifest, backend, max_batch)
    progress(f"checking {folder} against its manifest")
    verify_files(folder, all_files(manifest))  # each file once: the graphs share one weights file
    check_graphs(folder, manifest)  # the graphs are the ones described, reading only their own files

    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", suffix=".partial", dir=out.parent))
    try:
        _link(entry_path(folder, manifest["planner_model"]["files"][0]), staging / PLANNER / VERSION / "model.onnx")
        for kind, graph in manifest["graphs"].items():
            version = staging / dit_model(kind) / VERSION
            if backend == "trt":
                _link(entry_path(folder, graph["engine"]["files"][0]), version / "model.plan")
            else:
                onnx_file, *data = graph["files"]
                _link(entry_path(folder, onnx_file), version / "model.onnx")
                for entry in data:  # external weights keep the name the ONNX file refers to
                    _link(entry_path(folder, entry), version / entry["path"])
        step = staging / STEP / VERSION
        step.mkdir(parents=True)
        serving = Path(router_module.__file__).parent
        shutil.copyfile(serving / "router.py", step / "router.py")
        shutil.copyfile(serving / "model.py", step / "model.py")
        (step / router_module.ROUTING_FILE).write_text(json.dumps(routing(manifest), indent=1) + "\n")
        for name, config in configs.items():
            (staging / name / "config.pbtxt").write_text(to_pbtxt(config) + "\n")
        progress("validating every config.pbtxt with Triton's model config schema")
        validate_repository(staging, manifest, backend)
        _replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    progress(f"wrote {out}: {', '.join(sorted(configs))}")
    return out


def _check_out(folder: Path, out: Path) -> None:
    """--out must be apart from the engine folder: replacing it (--force) would delete the engines."""
    if out == folder or out.is_relative_to(folder) or folder.is_relative_to(out):
        relation = "is" if out == folder else "is inside" if out.is_relative_to(folder) else "contains"
        raise TritonRepoError(f"--out {out} {relation} the engine folder {folder}; choose a folder outside it "
                              "(the repository links the engine files, it does not need to sit beside them)")


def _check_ours(out: Path) -> None:
    """--force replaces only what this command writes (nothing but its model folders): never a folder
    that holds anything else."""
    ours = {PLANNER, STEP, *(dit_model(kind) for kind in ("hilo", FULL))}
    foreign = sorted(p.name for p in out.iterdir() if p.name not in ours or not p.is_dir())
    if foreign:
        raise TritonRepoError(f"{out} holds files hilo-export triton did not write ({', '.join(foreign[:3])}); --force "
                              "replaces only a repository it wrote: choose another --out, or empty it yourself")


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """One triton run per folder of repositories at a time (a lock on --out's parent folder itself: no
    lock file is left behind); under it, staging folders beside --out are leftovers of killed runs
    (they may hold full copies of the weights when hard links failed): removed."""
    import fcntl

    fd = os.open(out.parent, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TritonRepoError(f"another hilo-export triton is writing in {out.parent}; wait for it to finish, "
                                  "or choose an --out elsewhere") from None
        for leftover in out.parent.glob(f".{glob_escape(out.name)}-*"):
            if leftover.is_dir() and leftover.suffix in (".partial", ".old") and not leftover.is_symlink():
                log.info("removing %s, left by a killed hilo-export triton", leftover)
                shutil.rmtree(leftover, ignore_errors=True)
        yield
    finally:
        os.close(fd)  # releases the lock


def _link(source: Path, target: Path) -> None:
    """Hard link (engine files are content-addressed and never rewritten in place), else a copy
    with the source's permission bits: the repository never widens who may read an engine."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
        shutil.copymode(source, target)


def _replace(staging: Path, out: Path) -> None:
    # mkdtemp makes a private folder: open the folders we made; files keep their own modes (a
    # hard link shares its inode with the engine file, so chmod-ing it would change the engine's)
    for path in staging.rglob("*"):
        if path.is_dir():
            os.chmod(path, 0o755)
    os.chmod(staging, 0o755)
    if not out.exists():
        os.replace(staging, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}-", suffix=".old", dir=out.parent))
    os.replace(out, old / out.name)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------ validation


def parse_config(path: Path):
    """A config.pbtxt parsed with Triton's schema (unknown fields and bad values are errors)."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except (ImportError, RuntimeError) as err:  # tritonclient without grpc raises RuntimeError
        raise TritonRepoError(f"validating Triton configs needs tritonclient's model_config_pb2: {INSTALL_HINT}") from err
    try:
        return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    except text_format.ParseError as err:
        raise TritonRepoError(f"{path} does not parse as a Triton ModelConfig: {err}") from None


def validate_repository(repo: Path, manifest: dict[str, Any], backend: str) -> list[str]:
    """Parse every config.pbtxt with Triton's schema and compare its inputs and outputs with the
    model files (ONNX) and the manifest; returns the model names. Raises TritonRepoError."""
    import onnx

    repo = Path(repo)
    expected = {PLANNER, STEP, *(dit_model(kind) for kind in manifest["graphs"])}
    found = {p.name for p in repo.iterdir() if p.is_dir()}
    if found != expected:
        raise TritonRepoError(f"{repo} holds models {sorted(found)}, expected {sorted(expected)}")
    planner = planner_entry(manifest)
    for name in sorted(expected):
        config = parse_config(repo / name / "config.pbtxt")
        where = f"{repo / name / 'config.pbtxt'}"
        if config.name != name:
            raise TritonRepoError(f"{where}: name {config.name!r} differs from its folder {name!r}")
        version = repo / name / VERSION
        if name == STEP:
            _expect(where, config, "python", None, [version / "model.py", version / "router.py", version / router_module.ROUTING_FILE])
            io = step_io(manifest)
            _same_io(where, config, io["inputs"], io["outputs"], "the manifest's engine inputs and the planner")
            continue
        if name == PLANNER:
            _expect(where, config, "onnxruntime", None, [version / "model.onnx"])
            _same_io(where, config, planner["inputs"], planner["outputs"], "the manifest")
            _same_io(where, config, *_onnx_io(onnx, version / "model.onnx"), "model.onnx")
            continue
        graph = manifest["graphs"][name.removeprefix("dit_")]
        if backend == "trt":
            _expect(where, config, "", "tensorrt_plan", [version / "model.plan"])
            profiles = sorted(int(p) for group in config.instance_group for p in group.profile)
            if profiles != list(range(len(graph["engine"]["profiles"]))):
                raise TritonRepoError(
                    f"{where}: instance_group lists profiles {profiles}, the engine has "
                    f"{len(graph['engine']['profiles'])} (one per bucket: {graph['engine']['profiles']}); list every one"
                )
        else:
            _expect(where, config, "onnxruntime", None, [version / "model.onnx"])
            _same_io(where, config, *_onnx_io(onnx, version / "model.onnx"), "model.onnx")
        _same_io(where, config, graph["inputs"], graph["outputs"], "the manifest")
    return sorted(expected)


def _expect(where: str, config, backend: str, platform: str | None, files: list[Path]) -> None:
    if config.backend != backend or (platform is not None and config.platform != platform):
        raise TritonRepoError(f"{where}: backend {config.backend!r} platform {config.platform!r}, expected {backend or platform!r}")
    if config.max_batch_size and backend != "python":
        raise TritonRepoError(f"{where}: max_batch_size must be 0 (engine shapes include their batch axis)")
    for path in files:
        if not path.is_file():
            raise TritonRepoError(f"{path} is missing; regenerate the repository with hilo-export triton")


def _same_io(where: str, config, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]], source: str) -> None:
    from tritonclient.grpc import model_config_pb2

    def described(entries) -> list[tuple]:
        return [
            (e.name, model_config_pb2.DataType.Name(e.data_type), list(e.dims), bool(getattr(e, "optional", False)))
            for e in entries
        ]

    def wanted(values) -> list[tuple]:
        return [(t["name"], t["data_type"], t["dims"], t.get("optional", False)) for t in (tensor_config(v, v.get("optional", False)) for v in values)]

    for kind, got, want in (("input", config.input, inputs), ("output", config.output, outputs)):
        if described(got) != wanted(want):
            raise TritonRepoError(f"{where}: {kind}s {described(got)} do not match {source}: {wanted(want)}")


def _onnx_io(onnx, path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    proto = onnx.load(str(path), load_external_data=False)
    return [value_info(v) for v in proto.graph.input], [value_info(v) for v in proto.graph.output]
