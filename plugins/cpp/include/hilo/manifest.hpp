// A built engine folder's manifest.json, its bucket table, and the plan checks a C++ caller
// needs before feeding an engine: which bucket a request runs on and whether the planner's
// keep_indices fit it. Mirrors hilo_export/runtime/runtime.py and planning/plan.py; tests compare the two.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace hilo {

// Every error a caller can cause; the message says what to change.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

constexpr int kSchemaVersion = 2;  // hilo_export/manifest.py SCHEMA_VERSION
constexpr const char* kFullBucket = "full";
constexpr const char* kKeepIndices = "keep_indices";  // the one engine input on the k_kept axis: [batch, k_kept]

struct TensorSpec {
  std::string name;
  std::string dtype;           // numpy spelling: float32, float16, bfloat16, int64
  std::vector<int64_t> shape;  // a bucket's shapes are all static
};

struct FileEntry {
  std::string path;  // relative to the folder
  int64_t bytes = 0;
};

struct Bucket {
  int index = 0;  // position in the table: the planner model's `bucket` output
  std::string name;
  double fraction = 0.0;
  int64_t capacity = 0;   // sequence length: kept + low-frequency tokens
  int64_t n_lowfreq = 0;  // low-frequency tokens (0 for full)
  int64_t kept = 0;       // full-resolution tokens of the bucket's longest plan (its capacity's)
  int64_t kept_min = 0;   // its shortest plan: the previous bucket's kept + 1 in exact sizing, kept in padded
  std::string graph;      // "hilo" or "full": which engine serves it
  int profile = 0;        // its optimization profile in that engine
  std::vector<TensorSpec> inputs;  // shapes at `kept`; keep_indices runs at the plan's own length
  std::vector<TensorSpec> outputs;

  bool is_full() const { return name == kFullBucket; }
  bool holds(int64_t n) const { return kept_min <= n && n <= kept; }
  const TensorSpec& input(const std::string& name) const;  // throws Error when absent
};

struct Graph {
  std::string kind;
  std::vector<FileEntry> files;         // the ONNX file (and its external data)
  std::vector<FileEntry> engine_files;  // serialized engine(s); empty for ONNX Runtime builds
  std::vector<std::string> profiles;    // bucket name of each optimization profile, in order
};

class Manifest {
 public:
  // Reads `folder`/manifest.json. Throws Error naming the file and the fix.
  static Manifest load(const std::string& folder);
  // Parses manifest text; `folder` only serves paths and messages.
  static Manifest parse(const std::string& text, const std::string& folder = ".");

  const std::string& folder() const { return folder_; }
  const std::vector<Bucket>& buckets() const { return buckets_; }
  const Bucket& bucket(const std::string& name) const;
  const Bucket& bucket_at(int64_t index) const;  // the planner model's `bucket` output
  const Graph& graph(const std::string& kind) const;

  int64_t grid_height() const { return grid_h_; }
  int64_t grid_width() const { return grid_w_; }
  int64_t n_tokens() const { return grid_h_ * grid_w_; }
  int64_t width() const { return width_; }
  int64_t height() const { return height_; }
  int64_t token_size() const { return token_size_; }
  int64_t batch() const { return batch_; }
  int64_t text_len() const { return text_len_; }
  const std::string& precision() const { return precision_; }
  const std::string& backend() const { return backend_; }
  const std::string& backend_version() const { return backend_version_; }
  const std::string& backend_device() const { return backend_device_; }

  // There is no bucket choice here: the planner model (planner-*.onnx, the folder's
  // planner_model) outputs the bucket index; check it and keep_indices with check_plan.
  // The bucket a keep list of length `kept` belongs to: the one whose [kept_min, kept] holds it
  // (bucket ranges do not overlap, so K fixes the bucket).
  const Bucket& bucket_for_kept(int64_t kept) const;

  // Checks the planner's outputs against the table: the bucket index exists, keep_indices
  // has between that bucket's `kept_min` and `kept` entries (exactly `kept` when padded), each a
  // distinct token of the grid. Returns the bucket; throws Error otherwise.
  const Bucket& check_plan(int64_t bucket_index, const int64_t* keep, size_t count) const;
  const Bucket& check_plan(int64_t bucket_index, const std::vector<int64_t>& keep) const {
    return check_plan(bucket_index, keep.data(), keep.size());
  }
  // The engine's keep_indices input for a checked plan: the list repeated for every batch row.
  std::vector<int64_t> keep_indices_input(int64_t bucket_index, const std::vector<int64_t>& keep) const;

  // Absolute path of the engine file that serves `bucket`; throws Error when the folder has
  // none (an ONNX Runtime build) or the file is missing or has the wrong size.
  std::string engine_path(const Bucket& bucket) const;

 private:
  std::string folder_;
  std::vector<Bucket> buckets_;
  std::vector<Graph> graphs_;
  int64_t grid_h_ = 0, grid_w_ = 0, width_ = 0, height_ = 0, token_size_ = 0, batch_ = 0, text_len_ = 0;
  std::string precision_, backend_, backend_version_, backend_device_;
};

// Bytes of one element of a manifest dtype (float32 -> 4); throws Error for unknown names.
size_t dtype_size(const std::string& dtype);
// Number of elements of a static shape.
int64_t volume(const std::vector<int64_t>& shape);

}  // namespace hilo
