// TensorRT 10 runner of hilo/trt_engine.hpp.

#include "hilo/trt_engine.hpp"

#include <fstream>
#include <iostream>
#include <iterator>

namespace hilo {

namespace {

std::vector<char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open " + path);
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string dims_text(const nvinfer1::Dims& dims) {
  std::string s = "[";
  for (int32_t i = 0; i < dims.nbDims; ++i) s += (i ? "," : "") + std::to_string(dims.d[i]);
  return s + "]";
}

}  // namespace

void StderrLogger::log(Severity severity, const char* message) noexcept {
  if (severity <= threshold_) std::cerr << "[TensorRT] " << message << "\n";
}

const char* dtype_name(nvinfer1::DataType type) {
  switch (type) {
    case nvinfer1::DataType::kFLOAT: return "float32";
    case nvinfer1::DataType::kHALF: return "float16";
    case nvinfer1::DataType::kBF16: return "bfloat16";
    case nvinfer1::DataType::kINT64: return "int64";
    case nvinfer1::DataType::kINT32: return "int32";
    case nvinfer1::DataType::kINT8: return "int8";
    case nvinfer1::DataType::kUINT8: return "uint8";
    case nvinfer1::DataType::kBOOL: return "bool";
    default: return "?";
  }
}

TrtEngine::TrtEngine(const Manifest& manifest, const std::string& graph, nvinfer1::ILogger& logger) : graph_(graph) {
  const Graph& spec = manifest.graph(graph);
  if (spec.profiles.empty()) throw Error("graph " + graph + " serves no bucket");
  const Bucket& first = manifest.bucket(spec.profiles.front());
  const std::string path = manifest.engine_path(first);  // also checks the file's size
  const std::vector<char> blob = read_file(path);

  runtime_.reset(nvinfer1::createInferRuntime(logger));
  if (!runtime_) throw Error("TensorRT could not create a runtime (is the CUDA driver usable?)");
  engine_.reset(runtime_->deserializeCudaEngine(blob.data(), blob.size()));
  if (!engine_) {
    throw Error("TensorRT could not load " + path + ": it was built by " + manifest.backend_version() + " on " +
                manifest.backend_device() + "; an engine runs only with that TensorRT version and GPU, so rebuild it here");
  }
  context_.reset(engine_->createExecutionContext());
  if (!context_) throw Error("TensorRT could not create an execution context for " + path + " (out of GPU memory?)");

  const int32_t profiles = engine_->getNbOptimizationProfiles();
  if (profiles != static_cast<int32_t>(spec.profiles.size())) {
    throw Error(path + " has " + std::to_string(profiles) + " optimization profiles, the manifest lists " +
                std::to_string(spec.profiles.size()) + "; rebuild the folder");
  }
  // The engine's tensors must be the manifest's, with the same types: the caller sizes its
  // buffers from the manifest.
  for (int32_t i = 0; i < engine_->getNbIOTensors(); ++i) {
    const char* name = engine_->getIOTensorName(i);
    const bool is_input = engine_->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT;
    const std::vector<TensorSpec>& specs = is_input ? first.inputs : first.outputs;
    const TensorSpec* match = nullptr;
    for (const TensorSpec& s : specs) {
      if (s.name == name) match = &s;
    }
    if (match == nullptr) {
      throw Error(path + " has " + (is_input ? "input " : "output ") + name + ", which the manifest does not list; rebuild the folder");
    }
    const std::string type = dtype_name(engine_->getTensorDataType(name));
    if (type != match->dtype) {
      throw Error(path + ": " + name + " is " + type + " in the engine but " + match->dtype + " in the manifest; rebuild the folder");
    }
    (is_input ? inputs_ : outputs_).push_back(name);
  }
  if (inputs_.size() != first.inputs.size() || outputs_.size() != first.outputs.size()) {
    throw Error(path + " does not have the manifest's inputs and outputs; rebuild the folder");
  }
}

TrtEngine::~TrtEngine() = default;

void TrtEngine::enqueue(const Bucket& bucket, int64_t kept, const std::map<std::string, void*>& buffers,
                        cudaStream_t stream) {
  if (bucket.graph != graph_) {
    throw Error("bucket " + bucket.name + " runs on the " + bucket.graph + " engine, not on " + graph_ +
                "; keep one TrtEngine per graph and pick it with bucket.graph");
  }
  if (!bucket.holds(kept)) {
    throw Error("bucket " + bucket.name + " runs " + std::to_string(bucket.kept_min) + " to " + std::to_string(bucket.kept) +
                " kept tokens, not " + std::to_string(kept) + "; pick the bucket with Manifest::check_plan");
  }
  auto address = [&](const std::string& name) {
    auto it = buffers.find(name);
    if (it == buffers.end() || it->second == nullptr) {
      throw Error("no device buffer for " + name + " (bucket " + bucket.name + " needs every input and output)");
    }
    return it->second;
  };

  // The profile must be selected before input shapes are set: shapes are checked against it.
  if (bucket.profile != current_profile_) {
    if (!context_->setOptimizationProfileAsync(bucket.profile, stream)) {
      throw Error("TensorRT refused optimization profile " + std::to_string(bucket.profile) + " for bucket " + bucket.name);
    }
    current_profile_ = bucket.profile;
  }
  for (const TensorSpec& spec : bucket.inputs) {
    nvinfer1::Dims dims{};
    if (spec.shape.size() > static_cast<size_t>(nvinfer1::Dims::MAX_DIMS)) throw Error(spec.name + " has too many dimensions");
    dims.nbDims = static_cast<int32_t>(spec.shape.size());
    for (size_t i = 0; i < spec.shape.size(); ++i) dims.d[i] = spec.shape[i];
    if (spec.name == kKeepIndices) dims.d[dims.nbDims - 1] = kept;  // the profile spans the bucket's range
    if (!context_->setInputShape(spec.name.c_str(), dims)) {
      throw Error("TensorRT rejected shape " + dims_text(dims) + " for " + spec.name + " in bucket " + bucket.name +
                  " (profile " + std::to_string(bucket.profile) + "); the engine and manifest disagree, rebuild the folder");
    }
    if (!context_->setTensorAddress(spec.name.c_str(), address(spec.name))) {
      throw Error("TensorRT rejected the address of " + spec.name);
    }
  }
  for (const TensorSpec& spec : bucket.outputs) {
    const nvinfer1::Dims dims = context_->getTensorShape(spec.name.c_str());
    const std::vector<int64_t> got(dims.d, dims.d + (dims.nbDims > 0 ? dims.nbDims : 0));
    if (got != spec.shape) {
      throw Error(spec.name + " comes out as " + dims_text(dims) + " but the manifest says otherwise for bucket " + bucket.name);
    }
    if (!context_->setTensorAddress(spec.name.c_str(), address(spec.name))) {
      throw Error("TensorRT rejected the address of " + spec.name);
    }
  }
  if (!context_->enqueueV3(stream)) throw Error("TensorRT failed to enqueue bucket " + bucket.name + " (see its log)");
}

}  // namespace hilo
