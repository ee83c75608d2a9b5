// hilo_run_engine: run a built folder's TensorRT engines from C++, bucket by bucket.
//
//   hilo_run_engine FOLDER                 every bucket on zero inputs, keep = first K tokens
//   hilo_run_engine FOLDER --feeds DIR     inputs from DIR/<bucket>/<name>.bin (raw, the
//                                          manifest's dtype and shape); outputs written to
//                                          DIR/<bucket>/<name>.out.bin
//
// scripts/compare_cpp_engine.py writes such feeds and compares the outputs with Python's.

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <vector>

#include "hilo/manifest.hpp"
#include "hilo/trt_engine.hpp"

namespace {

void cuda_check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw hilo::Error(std::string(what) + ": " + cudaGetErrorString(status));
}

struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  explicit DeviceBuffer(size_t n) : bytes(n) { cuda_check(cudaMalloc(&ptr, n > 0 ? n : 1), "cudaMalloc"); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

size_t bytes_of(const hilo::TensorSpec& spec) {
  return static_cast<size_t>(hilo::volume(spec.shape)) * hilo::dtype_size(spec.dtype);
}

std::vector<char> host_input(const hilo::Manifest& m, const hilo::Bucket& b, const hilo::TensorSpec& spec,
                             const std::string& feeds) {
  std::vector<char> data(bytes_of(spec), 0);
  if (!feeds.empty()) {
    const std::string path = feeds + "/" + b.name + "/" + spec.name + ".bin";
    std::ifstream in(path, std::ios::binary);
    if (!in) throw hilo::Error("missing feed " + path);
    in.read(data.data(), static_cast<std::streamsize>(data.size()));
    if (in.gcount() != static_cast<std::streamsize>(data.size()) || in.peek() != EOF) {
      throw hilo::Error(path + " must hold exactly " + std::to_string(data.size()) + " bytes");
    }
  } else if (spec.name == "keep_indices") {
    std::vector<int64_t> keep(static_cast<size_t>(b.kept));
    for (size_t i = 0; i < keep.size(); ++i) keep[i] = static_cast<int64_t>(i);
    std::vector<int64_t> rows = m.keep_indices_input(b.index, keep);
    std::memcpy(data.data(), rows.data(), data.size());
  }
  if (spec.name == "keep_indices") {  // the plan check a server does before every run
    const int64_t* rows = reinterpret_cast<const int64_t*>(data.data());
    for (int64_t row = 0; row < m.batch(); ++row) m.check_plan(b.index, rows + row * b.kept, static_cast<size_t>(b.kept));
  }
  return data;
}

void run_bucket(const hilo::Manifest& m, hilo::TrtEngine& engine, const hilo::Bucket& b, const std::string& feeds,
                cudaStream_t stream) {
  std::map<std::string, void*> addresses;
  std::vector<std::unique_ptr<DeviceBuffer>> owned;
  for (const hilo::TensorSpec& spec : b.inputs) {
    std::vector<char> host = host_input(m, b, spec, feeds);
    owned.push_back(std::make_unique<DeviceBuffer>(host.size()));
    cuda_check(cudaMemcpy(owned.back()->ptr, host.data(), host.size(), cudaMemcpyHostToDevice), "upload");
    addresses[spec.name] = owned.back()->ptr;
  }
  for (const hilo::TensorSpec& spec : b.outputs) {
    owned.push_back(std::make_unique<DeviceBuffer>(bytes_of(spec)));
    addresses[spec.name] = owned.back()->ptr;
  }
  engine.enqueue(b, b.kept, addresses, stream);
  cuda_check(cudaStreamSynchronize(stream), "running the engine");
  for (const hilo::TensorSpec& spec : b.outputs) {
    std::vector<char> host(bytes_of(spec));
    cuda_check(cudaMemcpy(host.data(), addresses[spec.name], host.size(), cudaMemcpyDeviceToHost), "download");
    std::cout << "  " << b.name << " " << spec.name << " (" << spec.dtype << ", " << hilo::volume(spec.shape) << " values)";
    if (spec.dtype == "float32") {
      const float* v = reinterpret_cast<const float*>(host.data());
      double sum = 0, peak = 0;
      for (int64_t i = 0; i < hilo::volume(spec.shape); ++i) {
        sum += v[i];
        peak = std::fmax(peak, std::fabs(v[i]));
      }
      std::cout << ": sum " << sum << ", max |x| " << peak;
    }
    std::cout << "\n";
    if (!feeds.empty()) {
      const std::string path = feeds + "/" + b.name + "/" + spec.name + ".out.bin";
      std::ofstream out(path, std::ios::binary);
      out.write(host.data(), static_cast<std::streamsize>(host.size()));
      if (!out) throw hilo::Error("cannot write " + path);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 && !(argc == 4 && std::string(argv[2]) == "--feeds")) {
    std::cerr << "usage: hilo_run_engine FOLDER [--feeds DIR]\n";
    return 64;
  }
  try {
    const hilo::Manifest m = hilo::Manifest::load(argv[1]);
    const std::string feeds = argc == 4 ? argv[3] : "";
    hilo::StderrLogger logger;
    cudaStream_t stream;
    cuda_check(cudaStreamCreate(&stream), "cudaStreamCreate");
    std::map<std::string, std::unique_ptr<hilo::TrtEngine>> engines;  // one per graph
    for (const hilo::Bucket& b : m.buckets()) {
      auto& engine = engines[b.graph];
      if (!engine) engine = std::make_unique<hilo::TrtEngine>(m, b.graph, logger);
      run_bucket(m, *engine, b, feeds, stream);
    }
    cudaStreamDestroy(stream);
    std::cout << "ran " << m.buckets().size() << " buckets of " << argv[1] << "\n";
  } catch (const hilo::Error& err) {
    std::cerr << "error: " << err.what() << "\n";
    return 1;
  }
  return 0;
}
