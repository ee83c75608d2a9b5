"""The hilo TensorRT plugins (plugins/tensorrt/hilo_trt) without TensorRT or a GPU.

Tested here: shape and type inference, the launch grids and index math (a NumPy walk over
every program of the grid, mirroring the kernels line by line, against torch), the PTX
parameter fitting of AOT launches, the registration's signatures, and the build wiring of
``--plugins``. Where Triton is installed the real kernels also run on the CPU
(TRITON_INTERPRET=1) and compile to PTX for sm_90; scripts/check_plugin_kernels.py runs
them on a GPU.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hilo_export.folder import BackendError
from hilo_export.folder.backends.trt import hilo_plugins, plugin_digest
from hilo_export.model import token_gather, token_scatter

hilo_trt = hilo_plugins()
from hilo_trt import layout  # importable once hilo_plugins() found the package

HAS_TRITON = importlib.util.find_spec("triton") is not None
NO_TRITON = "triton is not installed (pip install 'hilo-export[kernels]'); its kernels then run on the CPU here"
SHAPES = [(1, 240, 16, 70), (2, 37, 300, 37), (3, 50, 5, 1), (1, 17, 64, 16), (2, 300, 3, 129)]  # B, N, C, K


def _case(b, n, c, k, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    data = torch.randn(b, n, c, generator=g).to(dtype)
    indices = torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(b)])
    updates = torch.randn(b, k, c, generator=g).to(dtype)
    return data, indices, updates


# ------------------------------------------------------------------ NumPy walk over the grid


def emulate_gather(data: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Every program of token_gather_kernel, as layout.gather_launch lays out the grid."""
    b_, n, c = data.shape
    k = indices.shape[1]
    launch = layout.gather_launch(data.shape, indices.shape)
    block = launch["constexprs"]["BLOCK_C"]
    flat, idx = data.reshape(-1), indices.reshape(-1)
    out = np.full(b_ * k * c, np.nan, data.dtype)  # NaN: a program that never writes shows up
    gx, gy, _ = launch["grid"]
    for row in range(gx):
        for cb in range(gy):
            cols = cb * block + np.arange(block)
            b = row // k
            token = idx[row]
            readable = c if 0 <= token < n else 0
            mask = cols < readable
            values = np.zeros(block, data.dtype)
            values[mask] = flat[(b * n + token) * c + cols[mask]]
            store = cols < c
            out[row * c + cols[store]] = values[store]
    return out.reshape(b_, k, c)


def emulate_scatter(base: np.ndarray, indices: np.ndarray, updates: np.ndarray) -> np.ndarray:
    """Every program of token_scatter_kernel, as layout.scatter_launch lays out the grid."""
    _, n, c = base.shape
    k = indices.shape[1]
    launch = layout.scatter_launch(base.shape, indices.shape)
    bn, bk, bc = (launch["constexprs"][x] for x in ("BLOCK_N", "BLOCK_K", "BLOCK_C"))
    out = np.full(base.size, np.nan, base.dtype)
    gx, gy, _ = launch["grid"]
    n_blocks = -(-n // bn)
    for pid in range(gx):
        b, rows = pid // n_blocks, (pid % n_blocks) * bn + np.arange(bn)
        source = np.full(bn, -1)
        for k0 in range(0, k, bk):
            ks = k0 + np.arange(bk)
            idx = np.where(ks < k, indices[b, np.minimum(ks, k - 1)], -1)
            hit = (idx[None, :] == rows[:, None]) & (ks < k)[None, :]
            source = np.maximum(source, np.where(hit, ks[None, :], -1).max(axis=1))
        for cb in range(gy):
            cols = cb * bc + np.arange(bc)
            for r in range(bn):
                if rows[r] >= n:
                    continue
                inside = cols < c
                row = updates[b, source[r]] if source[r] >= 0 else base[b, rows[r]]
                out[(b * n + rows[r]) * c + cols[inside]] = row[cols[inside]]
    return out.reshape(base.shape)


@pytest.mark.parametrize(("b", "n", "c", "k"), SHAPES)
def test_grid_and_index_math_match_torch(b, n, c, k):
    data, indices, updates = _case(b, n, c, k)
    gathered = emulate_gather(data.numpy(), indices.numpy())
    np.testing.assert_array_equal(gathered, token_gather(data, indices).numpy())
    scattered = emulate_scatter(data.numpy(), indices.numpy(), updates.numpy())
    np.testing.assert_array_equal(scattered, token_scatter(data, indices, updates).numpy())


def test_scatter_takes_the_last_repeated_index_and_skips_out_of_range():
    base = np.arange(5 * 3, dtype=np.float32).reshape(1, 5, 3)
    indices = np.array([[2, 7, 2, -1]])  # 2 twice, then indices outside [0, 5)
    updates = -np.arange(1, 5, dtype=np.float32)[None, :, None].repeat(3, axis=2)
    expected = base.copy()
    expected[0, 2] = updates[0, 2]  # the last write of row 2 wins, as in ONNX Runtime's ScatterElements
    np.testing.assert_array_equal(emulate_scatter(base, indices, updates), expected)


def test_gather_reads_zeros_for_indices_outside_the_grid():
    data = np.ones((1, 4, 3), np.float32)
    out = emulate_gather(data, np.array([[1, 4, -1]]))
    np.testing.assert_array_equal(out[0], [[1, 1, 1], [0, 0, 0], [0, 0, 0]])


# ------------------------------------------------------------------ shapes, types, symbolic sizes


class Sym:
    """A stand-in for TensorRT's shape expressions: records arithmetic, refuses int()."""

    def __init__(self, text):
        self.text = str(text)

    def _op(self, op, other):
        return Sym(f"({self.text}{op}{other.text if isinstance(other, Sym) else other})")

    def __add__(self, other):
        return self._op("+", other)

    def __mul__(self, other):
        return self._op("*", other)

    def __floordiv__(self, other):
        return self._op("//", other)

    def __int__(self):
        raise TypeError("a symbolic size has no value at build time")

    __index__ = __int__


def test_shapes_and_launches_work_on_symbolic_sizes():
    b, n, c, k = Sym("B"), Sym("N"), Sym("C"), Sym("K")
    assert [s.text for s in layout.gather_output_shape((b, n, c), (b, k))] == ["B", "K", "C"]
    assert [s.text for s in layout.scatter_output_shape((b, n, c), (b, k), (b, k, c))] == ["B", "N", "C"]
    gather = layout.gather_launch((b, n, c), (b, k))
    assert gather["grid"][0].text == "(B*K)" and gather["grid"][1].text == f"((C+{layout.GATHER_BLOCK_C - 1})//{layout.GATHER_BLOCK_C})"
    assert [s.text for s in gather["scalars"]] == ["N", "K", "C"]
    scatter = layout.scatter_launch((b, n, c), (b, k))
    assert scatter["grid"][0].text == f"(B*((N+{layout.SCATTER_BLOCK_N - 1})//{layout.SCATTER_BLOCK_N}))"


def test_shape_and_type_errors_name_what_was_expected():
    with pytest.raises(layout.PluginShapeError, match=r"takes data\[B, N, C\], indices\[B, K\]; got inputs of rank \(3, 3\)"):
        layout.gather_output_shape((1, 2, 3), (1, 2, 3))
    with pytest.raises(layout.PluginShapeError, match="needs int64 indices, got INT32"):
        layout.check_types(layout.GATHER, ["FP32", "INT32"])
    with pytest.raises(layout.PluginShapeError, match="data of one type"):
        layout.check_types(layout.SCATTER, ["FP16", "INT64", "FP32"])
    layout.check_types(layout.SCATTER, ["BF16", "INT64", "BF16"])  # accepted
    with pytest.raises(layout.PluginShapeError, match="does not fit the kernels' int32"):
        layout.check_int32(N=2**31)


def test_signatures_follow_the_aot_calling_convention():
    # TensorRT passes input pointers, then the int32 scalars, then output pointers
    gather = layout.triton_signature(layout.GATHER, "FP16")
    assert list(gather.items()) == [("data", "*fp16"), ("indices", "*i64"), ("N", "i32"), ("K", "i32"), ("C", "i32"),
                                    ("out", "*fp16"), ("BLOCK_C", "constexpr")]
    scatter = layout.triton_signature(layout.SCATTER, "BF16")
    assert [v for v in scatter.values() if v != "constexpr"] == ["*bf16", "*i64", "*bf16", "i32", "i32", "i32", "*bf16"]
    assert layout.autotune_types(layout.SCATTER) == "FP32|FP16|BF16, INT64, FP32|FP16|BF16, FP32|FP16|BF16"


# ------------------------------------------------------------------ PTX for AOT launches

PTX = """
.visible .entry k(
\t.param .u64 .ptr .global .align 1 k_param_0,
\t.param .u32 k_param_1,
\t.param .u64 .ptr .global .align 1 k_param_2,
\t.param .u64 .ptr .global .align 1 k_param_3
)
{
\tld.param.b64 \t%rd1, [k_param_0];
\tld.param.b32 \t%r1, [k_param_1];
\tld.param.b64 \t%rd2, [k_param_2];
\tret;
}
"""


def test_unused_hidden_parameters_are_dropped():
    fitted = layout.fit_ptx_params(PTX, "k", 3)
    assert layout.ptx_params(fitted, "k") == ["k_param_0", "k_param_1", "k_param_2"]
    assert "k_param_2\n)" in fitted and "ld.param.b64 \t%rd2, [k_param_2];" in fitted
    assert layout.fit_ptx_params(PTX, "k", 4) == PTX


def test_used_hidden_parameters_and_short_lists_are_refused():
    used = PTX.replace("\tret;", "\tld.param.b64 \t%rd3, [k_param_3];\n\tret;")
    with pytest.raises(layout.PluginShapeError, match="reads hidden Triton parameters"):
        layout.fit_ptx_params(used, "k", 3)
    with pytest.raises(layout.PluginShapeError, match="takes 4 parameters, the plugin passes 5"):
        layout.fit_ptx_params(PTX, "k", 5)
    with pytest.raises(layout.PluginShapeError, match="no .entry other"):
        layout.ptx_params(PTX, "other")


# ------------------------------------------------------------------ registration and build wiring


def test_registration_signatures_are_what_tensorrt_validates():
    """TensorRT checks these functions' parameter names and real (not string) annotations."""
    source = Path(hilo_trt.__file__).with_name("registration.py").read_text()
    tree = ast.parse(source)
    assert not any(isinstance(node, ast.ImportFrom) and node.module == "__future__" for node in tree.body)
    functions = {f.name: [a.arg for a in f.args.args] for f in tree.body if isinstance(f, ast.FunctionDef)}
    assert functions["_gather_desc"] == ["data", "indices"]
    assert functions["_gather_aot"] == ["data", "indices", "outputs", "tactic"]
    assert functions["_scatter_desc"] == ["base", "indices", "updates"]
    assert functions["_scatter_aot"] == ["base", "indices", "updates", "outputs", "tactic"]
    for f in tree.body:
        if isinstance(f, ast.FunctionDef) and f.name.startswith(("_gather", "_scatter")):
            assert f.returns is not None, f"{f.name} needs a return annotation"


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_register_says_what_is_missing():
    with pytest.raises(hilo_trt.PluginUnavailable, match="need tensorrt"):
        hilo_trt.register()


def test_plugins_flag_needs_the_tensorrt_backend():
    from hilo_export.folder import get_backend

    with pytest.raises(BackendError, match="--plugins .* needs --backend trt"):
        get_backend("ort", plugins=True)


def test_cli_build_plugins_refuses_clearly(tmp_path):
    from click.testing import CliRunner

    from hilo_export.cli import main

    result = CliRunner().invoke(main, ["build", "--backend", "ort", "--plugins", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "needs --backend trt" in result.output


def test_engine_key_covers_the_plugins():
    from hilo_export.export.cache import engine_key as _engine_key
    from hilo_export.folder import Profile

    args = ("sha", [Profile("s", 70)], "fp16", "trt", "10.9", "H100 sm_90")
    assert _engine_key(*args) != _engine_key(*args, plugin_digest())
    assert len(plugin_digest()) == 64


# ------------------------------------------------------------------ the real kernels, where Triton is installed


# Triton decides interpreter or GPU when it is first imported (its own reductions are jitted
# then), so the interpreted run gets a fresh process with TRITON_INTERPRET=1 from the start.
INTERPRETED = """
import torch
from hilo_export.folder.backends.trt import hilo_plugins
from hilo_export.model import token_gather, token_scatter
hilo_plugins()  # puts plugins/tensorrt on the path when hilo_trt is not installed
import hilo_trt.kernels as kernels
g = torch.Generator().manual_seed(0)
for b, n, c, k in SHAPES:
    for dtype in (torch.float32, torch.float16):
        data = torch.randn(b, n, c, generator=g).to(dtype)
        indices = torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(b)])
        updates = torch.randn(b, k, c, generator=g).to(dtype)
        same = (torch.equal(kernels.token_gather(data, indices), token_gather(data, indices))
                and torch.equal(kernels.token_scatter(data, indices, updates), token_scatter(data, indices, updates)))
        print(b, n, c, k, dtype, "equal" if same else "DIFFERENT")
"""


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON)
def test_triton_kernels_on_the_cpu_interpreter():
    import os
    import subprocess

    code = f"SHAPES = {SHAPES[:3]!r}\n" + INTERPRETED
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 6 and all(line.endswith("equal") for line in lines), result.stdout


@pytest.mark.skipif(not HAS_TRITON, reason=NO_TRITON)
@pytest.mark.parametrize("op", [layout.GATHER, layout.SCATTER])
def test_kernels_compile_to_ptx_a_tensorrt_launch_fits(monkeypatch, op):
    import triton
    from triton.backends.compiler import GPUTarget

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("TRITON_DEFAULT_FP_FUSION", "1")
    sys.modules.pop("hilo_trt.kernels", None)
    kernels = importlib.import_module("hilo_trt.kernels")
    fn = kernels.token_gather_kernel if op == layout.GATHER else kernels.token_scatter_kernel
    launch = layout.gather_launch((1, 8, 8), (1, 4)) if op == layout.GATHER else layout.scatter_launch((1, 8, 8), (1, 4))
    source = triton.compiler.ASTSource(fn=fn, signature=layout.triton_signature(op, "BF16"), constexprs=launch["constexprs"])
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": layout.NUM_WARPS})
    n_args = (3 if op == layout.GATHER else 4) + len(launch["scalars"])
    ptx = layout.fit_ptx_params(compiled.asm["ptx"], compiled.metadata.name, n_args)
    assert len(layout.ptx_params(ptx, compiled.metadata.name)) == n_args
