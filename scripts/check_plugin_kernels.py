"""Check the hilo TensorRT plugins' Triton kernels on a GPU against torch; no TensorRT needed.

    python scripts/check_plugin_kernels.py [--no-aot]

1. Launches hilo_trt's gather and scatter kernels through Triton on several shapes (Flux-
   sized ones included), for fp32, fp16 and bf16, with sorted and unsorted indices, and
   compares with torch.gather / Tensor.scatter. Both ops only copy values, so the expected
   error is exactly 0.
2. Checks the defined edge cases: a repeated index in scatter takes the last update, an
   index outside [0, N) gathers zeros and scatters nothing.
3. (with CuPy, unless --no-aot) Launches the kernels the way a TensorRT AOT plugin does:
   the PTX that registration.py hands to TensorRT (compiled for this GPU, hidden Triton
   parameters dropped), loaded by the CUDA driver and called with exactly TensorRT's
   argument list (input pointers, int32 sizes, output pointers).

Prints the maximum error of every case and exits 1 on any mismatch, 2 when CUDA or Triton
is missing.
"""

from __future__ import annotations

import argparse
import sys

SHAPES = [  # B, N, C, K
    (1, 4096, 3072, 1232),  # Flux 1024 px: hidden states into the s bucket
    (1, 4096, 64, 3480),  # Flux output channels, l bucket
    (2, 240, 16, 70),  # tiny-flux test grid, batch 2
    (1, 1024, 3072, 1),
    (3, 37, 300, 37),  # K == N, channels not a multiple of any block
    (1, 16384, 64, 9000),  # 2048 px grid: many index blocks per scatter program
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-aot", action="store_true", help="skip the TensorRT-style PTX launch (step 3)")
    args = parser.parse_args()
    try:
        import torch
        import triton
    except ImportError as err:
        print(f"needs torch and triton: {err}")
        return 2
    if not torch.cuda.is_available():
        print("needs a CUDA GPU (torch.cuda.is_available() is False)")
        return 2
    from hilo_export.folder.backends.trt import hilo_plugins

    hilo_plugins()
    from hilo_trt import kernels

    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    failures = check_against_torch(torch, kernels) + check_edge_cases(torch, kernels)
    if not args.no_aot:
        failures += check_aot_launch(torch)
    print("all kernels match torch" if failures == 0 else f"{failures} mismatching cases")
    return 1 if failures else 0


def _cases(torch, dtype):
    g = torch.Generator(device="cuda").manual_seed(0)
    for b, n, c, k in SHAPES:
        data = torch.randn(b, n, c, generator=g, device="cuda").to(dtype)
        updates = torch.randn(b, k, c, generator=g, device="cuda").to(dtype)
        unsorted = torch.stack([torch.randperm(n, generator=g, device="cuda")[:k] for _ in range(b)])
        for order, indices in (("sorted", unsorted.sort(dim=1).values), ("unsorted", unsorted)):
            yield (b, n, c, k), order, data, indices.contiguous(), updates


def _report(name: str, error: float) -> int:
    print(f"  {name}: max |error| {error:.3g}{'' if error == 0 else '  MISMATCH'}")
    return int(error != 0)


def check_against_torch(torch, kernels) -> int:
    failures = 0
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        print(f"{dtype}:")
        for shape, order, data, indices, updates in _cases(torch, dtype):
            index = indices.unsqueeze(-1).expand(-1, -1, data.shape[-1])
            gathered = kernels.token_gather(data, indices)
            scattered = kernels.token_scatter(data, indices, updates)
            torch.cuda.synchronize()
            gather_error = (gathered.float() - torch.gather(data, 1, index).float()).abs().max().item()
            scatter_error = (scattered.float() - data.scatter(1, index, updates).float()).abs().max().item()
            failures += _report(f"gather  B,N,C,K={shape} {order}", gather_error)
            failures += _report(f"scatter B,N,C,K={shape} {order}", scatter_error)
    return failures


def check_edge_cases(torch, kernels) -> int:
    print("edge cases:")
    base = torch.arange(6 * 4, dtype=torch.float32, device="cuda").reshape(1, 6, 4)
    indices = torch.tensor([[2, 9, 2, -1]], device="cuda")  # 2 twice, 9 and -1 outside the grid
    updates = -torch.arange(1, 5, dtype=torch.float32, device="cuda")[None, :, None].expand(1, 4, 4).contiguous()
    expected = base.clone()
    expected[0, 2] = updates[0, 2]  # the last update of row 2 wins
    failures = _report("scatter: repeated index takes the last update, outside indices write nothing",
                       (kernels.token_scatter(base, indices, updates) - expected).abs().max().item())
    gathered = kernels.token_gather(base, indices)
    expected = torch.stack([base[0, 2], torch.zeros(4, device="cuda"), base[0, 2], torch.zeros(4, device="cuda")])[None]
    failures += _report("gather: outside indices read zeros", (gathered - expected).abs().max().item())
    return failures


def check_aot_launch(torch) -> int:
    """The PTX and launch TensorRT would use, run through the CUDA driver with CuPy."""
    try:
        import cupy
    except ImportError:
        print("TensorRT-style PTX launch: skipped (CuPy is not installed; pip install cupy-cuda12x)")
        return 0
    import triton
    from hilo_trt import kernels, layout

    print("TensorRT-style PTX launch (driver-loaded PTX, TensorRT's argument list):")

    import numpy as np

    def pointer(tensor):  # a device address passed by value, as TensorRT passes its buffers
        return np.uint64(tensor.data_ptr())

    def launch(op, fn, dtype_name, plan, tensors, out):
        signature = layout.triton_signature(op, dtype_name)
        compiled = triton.compile(triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=plan["constexprs"]),
                                  options={"num_warps": layout.NUM_WARPS})
        name = compiled.metadata.name
        ptx = layout.fit_ptx_params(compiled.asm["ptx"], name, len(tensors) + len(plan["scalars"]) + 1)
        module = cupy.cuda.function.Module()
        module.load(ptx.encode())
        arguments = [pointer(t) for t in tensors] + [np.int32(s) for s in plan["scalars"]] + [pointer(out)]
        torch.cuda.synchronize()
        module.get_function(name)(tuple(int(g) for g in plan["grid"]), (compiled.metadata.num_warps * 32, 1, 1),
                                  tuple(arguments), shared_mem=compiled.metadata.shared)
        cupy.cuda.Device().synchronize()
        return out

    failures = 0
    names = {torch.float32: "FP32", torch.float16: "FP16", torch.bfloat16: "BF16"}
    for dtype, dtype_name in names.items():
        for shape, order, data, indices, updates in _cases(torch, dtype):
            if order != "unsorted":
                continue
            b, _, c, k = shape
            index = indices.unsqueeze(-1).expand(-1, -1, c)
            out = launch(layout.GATHER, kernels.token_gather_kernel, dtype_name,
                         layout.gather_launch(data.shape, indices.shape), [data, indices],
                         torch.empty(b, k, c, dtype=dtype, device="cuda"))
            failures += _report(f"AOT gather  {dtype_name} B,N,C,K={shape}",
                                (out.float() - torch.gather(data, 1, index).float()).abs().max().item())
            out = launch(layout.SCATTER, kernels.token_scatter_kernel, dtype_name,
                         layout.scatter_launch(data.shape, indices.shape), [data, indices, updates], torch.empty_like(data))
            failures += _report(f"AOT scatter {dtype_name} B,N,C,K={shape}",
                                (out.float() - data.scatter(1, index, updates).float()).abs().max().item())
    return failures


if __name__ == "__main__":
    sys.exit(main())
