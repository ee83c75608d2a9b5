"""Triton Python-backend (BLS) model ``hilo_edit_step``: thin glue around router.py.

hilo-export triton copies this file, router.py and routing.json into the model's version
folder. Everything the step does lives in router.py (tested without a server); this file
only turns Triton requests into numpy arrays and model calls into BLS requests.
"""

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

# router.py lies beside this file; the Python backend's stub need not put this folder on the path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from router import ROUTING_FILE, RequestError, Router


class TritonPythonModel:
    def initialize(self, args):
        self.router = Router.load(Path(__file__).with_name(ROUTING_FILE))
        config = json.loads(args["model_config"])
        self.input_names = [spec["name"] for spec in config["input"]]
        self.output_names = [spec["name"] for spec in config["output"]]
        # with max_batch_size > 0 every input carries a leading request-row axis
        self.batched = config.get("max_batch_size", 0) > 0

    def execute(self, requests):
        responses = []
        for request in requests:
            inputs = {}
            for name in self.input_names:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                if tensor is not None:  # only the optional fill may be absent
                    inputs[name] = tensor.as_numpy()
            try:
                step = self.router.step_rows if self.batched else self.router.step
                result = step(inputs, self._run_model)
            except RequestError as err:  # the client's mistake: say so, keep serving the others
                responses.append(_error(str(err)))
                continue
            except Exception as err:  # noqa: BLE001 - a failed model call fails this request only
                responses.append(_error(f"hilo_edit_step failed: {err}"))
                continue
            outputs = [pb_utils.Tensor(name, np.ascontiguousarray(result[name])) for name in self.output_names]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses

    def _run_model(self, model_name, feeds, output_names):
        request = pb_utils.InferenceRequest(
            model_name=model_name,
            requested_output_names=list(output_names),
            inputs=[pb_utils.Tensor(name, value) for name, value in feeds.items()],
            # results come back to this process as numpy, wherever the model ran
            preferred_memory=pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0),
        )
        response = request.exec()
        if response.has_error():
            raise pb_utils.TritonModelException(f"{model_name}: {response.error().message()}")
        return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in output_names}


def _error(message):
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
