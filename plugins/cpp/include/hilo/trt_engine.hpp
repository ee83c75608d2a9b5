// Runs the TensorRT engine of a built folder, one bucket at a time. Built only where
// TensorRT is found (see CMakeLists.txt); everything else lives in hilo/manifest.hpp.
//
// One engine serves several buckets through its optimization profiles (profile i fixes the
// k_kept axis to bucket i's size). enqueue() selects the bucket's profile, sets every input
// shape from the manifest, binds the caller's device buffers and calls enqueueV3. An
// execution context is not reentrant: use one TrtEngine per thread or stream.
#pragma once

#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "hilo/manifest.hpp"

namespace hilo {

// Prints TensorRT's warnings and errors to stderr.
class StderrLogger : public nvinfer1::ILogger {
 public:
  explicit StderrLogger(Severity threshold = Severity::kWARNING) : threshold_(threshold) {}
  void log(Severity severity, const char* message) noexcept override;

 private:
  Severity threshold_;
};

class TrtEngine {
 public:
  // Deserializes the engine of `graph` ("hilo" or "full") from the manifest's folder and
  // checks its inputs, outputs and profiles against the manifest.
  TrtEngine(const Manifest& manifest, const std::string& graph, nvinfer1::ILogger& logger);
  ~TrtEngine();
  TrtEngine(const TrtEngine&) = delete;
  TrtEngine& operator=(const TrtEngine&) = delete;

  const std::string& graph() const { return graph_; }
  // Names of the engine's inputs and outputs, as in the manifest.
  const std::vector<std::string>& input_names() const { return inputs_; }
  const std::vector<std::string>& output_names() const { return outputs_; }

  // Runs `bucket` on `stream` with a keep list of `kept` tokens (in [bucket.kept_min, bucket.kept]:
  // the plan's own length). `buffers` maps every input and output name to device memory holding
  // (or receiving) the manifest's shapes in its dtype, keep_indices at [batch, kept]. Returns after
  // enqueueing: synchronize the stream before reading outputs. Throws Error on misuse.
  void enqueue(const Bucket& bucket, int64_t kept, const std::map<std::string, void*>& buffers, cudaStream_t stream);

 private:
  std::string graph_;
  std::vector<std::string> inputs_, outputs_;
  int current_profile_ = -1;
  // destroyed in reverse order: context, engine, runtime
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
};

// The manifest's dtype name of a TensorRT type ("float32" for kFLOAT); "?" when unknown.
const char* dtype_name(nvinfer1::DataType type);

}  // namespace hilo
