// manifest.json reading and the bucket/plan logic of hilo/manifest.hpp.

#include "hilo/manifest.hpp"

#include <fstream>
#include <sstream>

#include "hilo/json.hpp"

namespace hilo {

namespace {

using json::Value;

const char* kRebuild = "; rebuild the folder with hilo-export build";

// Typed access to one manifest field; `where` is its JSON path, for messages.
class Field {
 public:
  Field(const Value& value, std::string where, const std::string& file) : value_(value), where_(std::move(where)), file_(file) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(file_ + ": " + where_ + " " + what + kRebuild);
  }

  Field at(const std::string& key) const {
    if (!value_.is_object()) fail(std::string("must be an object, not ") + Value::type_name(value_.type()));
    const Value* member = value_.find(key);
    if (member == nullptr) Field(value_, where_ + "." + key, file_).fail("is missing");
    return Field(*member, where_ + "." + key, file_);
  }

  bool has(const std::string& key) const { return value_.is_object() && value_.find(key) != nullptr; }

  std::vector<Field> items() const {
    if (!value_.is_array()) fail(std::string("must be an array, not ") + Value::type_name(value_.type()));
    std::vector<Field> out;
    for (size_t i = 0; i < value_.items().size(); ++i) {
      out.emplace_back(value_.items()[i], where_ + "[" + std::to_string(i) + "]", file_);
    }
    return out;
  }

  int64_t integer() const {
    if (!value_.is_int()) fail(std::string("must be an integer, not ") + describe());
    return value_.as_int();
  }

  int64_t positive() const {
    int64_t v = integer();
    if (v <= 0) fail("must be positive, got " + std::to_string(v));
    return v;
  }

  double number() const {
    if (!value_.is_number()) fail(std::string("must be a number, not ") + describe());
    return value_.as_double();
  }

  const std::string& string() const {
    if (!value_.is_string()) fail(std::string("must be a string, not ") + describe());
    return value_.as_string();
  }

  const Value& raw() const { return value_; }
  const std::string& where() const { return where_; }

 private:
  std::string describe() const {
    if (value_.is_number()) return "the number " + std::to_string(value_.as_double());
    return Value::type_name(value_.type());
  }

  const Value& value_;
  std::string where_;
  const std::string& file_;
};

std::vector<FileEntry> read_files(const Field& list) {
  std::vector<FileEntry> out;
  for (const Field& item : list.items()) {
    FileEntry entry;
    entry.path = item.at("path").string();
    if (entry.path.empty() || entry.path.find('/') != std::string::npos || entry.path.find('\\') != std::string::npos ||
        entry.path == "." || entry.path == "..") {
      item.at("path").fail("must be a plain file name inside the folder, got '" + entry.path + "'");
    }
    entry.bytes = item.at("bytes").integer();
    out.push_back(entry);
  }
  return out;
}

std::vector<TensorSpec> read_tensors(const Field& list) {
  std::vector<TensorSpec> out;
  for (const Field& item : list.items()) {
    TensorSpec spec;
    spec.name = item.at("name").string();
    spec.dtype = item.at("dtype").string();
    dtype_size(spec.dtype);  // a known type, or Error
    for (const Field& dim : item.at("shape").items()) {
      if (!dim.raw().is_int()) dim.fail("must be a static size in a bucket's shapes (the manifest resolves k_kept)");
      if (dim.raw().as_int() < 0) dim.fail("must not be negative");
      spec.shape.push_back(dim.raw().as_int());
    }
    out.push_back(spec);
  }
  return out;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::string();
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) throw Error("cannot read " + path);
  return buffer.str();
}

bool file_exists(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return static_cast<bool>(in);
}

int64_t file_size(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return -1;
  return static_cast<int64_t>(in.tellg());
}

std::string join(const std::string& folder, const std::string& name) {
  if (folder.empty()) return name;
  return folder.back() == '/' ? folder + name : folder + "/" + name;
}

}  // namespace

size_t dtype_size(const std::string& dtype) {
  if (dtype == "float32" || dtype == "int32") return 4;
  if (dtype == "float16" || dtype == "bfloat16") return 2;
  if (dtype == "int64" || dtype == "float64") return 8;
  if (dtype == "uint8" || dtype == "int8" || dtype == "bool") return 1;
  throw Error("unknown tensor dtype '" + dtype + "' in the manifest" + kRebuild);
}

int64_t volume(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const TensorSpec& Bucket::input(const std::string& wanted) const {
  for (const TensorSpec& spec : inputs) {
    if (spec.name == wanted) return spec;
  }
  throw Error("bucket " + name + " has no input named '" + wanted + "'");
}

Manifest Manifest::load(const std::string& folder) {
  const std::string path = join(folder, "manifest.json");
  if (!file_exists(path)) {
    throw Error(folder + " holds no manifest.json: build it first (hilo-export build --model ... --out " + folder + ")");
  }
  return parse(read_text(path), folder);
}

Manifest Manifest::parse(const std::string& text, const std::string& folder) {
  const std::string file = join(folder, "manifest.json");
  Value document;
  try {
    document = json::parse(text);
  } catch (const json::ParseError& err) {
    throw Error(file + " is not valid JSON (" + err.what() + ")" + kRebuild);
  }
  Field root(document, "manifest", file);
  if (!document.is_object()) root.fail("must be a JSON object");
  const Value* version = document.find("schema_version");
  if (version == nullptr || !version->is_int() || version->as_int() != kSchemaVersion) {
    std::string found = version == nullptr ? "none" : (version->is_int() ? std::to_string(version->as_int()) : "?");
    throw Error(file + " has manifest schema " + found + ", this reader reads schema " + std::to_string(kSchemaVersion) +
                "; rebuild the folder with a matching hilo-export, or use the C++ library of that version");
  }

  Manifest m;
  m.folder_ = folder;
  std::vector<Field> grid = root.at("grid").items();
  if (grid.size() != 2) root.at("grid").fail("must be [height, width] in tokens");
  m.grid_h_ = grid[0].positive();
  m.grid_w_ = grid[1].positive();
  std::vector<Field> resolution = root.at("resolution").items();
  if (resolution.size() != 2) root.at("resolution").fail("must be [width, height] in pixels");
  m.width_ = resolution[0].positive();
  m.height_ = resolution[1].positive();
  m.token_size_ = root.at("token_size").positive();
  m.batch_ = root.at("batch").positive();
  m.text_len_ = root.at("text_len").positive();
  m.precision_ = root.at("precision").string();
  Field backend = root.at("backend");
  m.backend_ = backend.at("name").string();
  m.backend_version_ = backend.at("version").string();
  m.backend_device_ = backend.at("device").string();

  Field graphs = root.at("graphs");
  if (!graphs.raw().is_object()) graphs.fail("must be an object");
  for (const std::string& kind : graphs.raw().keys()) {
    Field g = graphs.at(kind);
    Graph graph;
    graph.kind = kind;
    graph.files = read_files(g.at("files"));
    Field engine = g.at("engine");
    graph.engine_files = read_files(engine.at("files"));
    for (const Field& p : engine.at("profiles").items()) graph.profiles.push_back(p.string());
    m.graphs_.push_back(graph);
  }

  const int64_t n_tokens = m.n_tokens();
  std::vector<Field> buckets = root.at("buckets").items();
  if (buckets.empty()) root.at("buckets").fail("must list at least the full bucket");
  for (size_t i = 0; i < buckets.size(); ++i) {
    const Field& b = buckets[i];
    Bucket bucket;
    bucket.index = static_cast<int>(i);
    bucket.name = b.at("name").string();
    bucket.fraction = b.at("fraction").number();
    bucket.capacity = b.at("capacity").positive();
    bucket.n_lowfreq = b.at("n_lowfreq").integer();
    bucket.kept = b.at("kept").positive();
    bucket.kept_min = b.at("kept_min").positive();
    bucket.graph = b.at("graph").string();
    bucket.inputs = read_tensors(b.at("inputs"));
    bucket.outputs = read_tensors(b.at("outputs"));
    if (bucket.n_lowfreq < 0 || bucket.kept + bucket.n_lowfreq != bucket.capacity) {
      b.fail("has kept " + std::to_string(bucket.kept) + " + low-frequency " + std::to_string(bucket.n_lowfreq) +
             " != capacity " + std::to_string(bucket.capacity));
    }
    if (bucket.kept > n_tokens) b.at("kept").fail("exceeds the grid's " + std::to_string(n_tokens) + " tokens");
    if (bucket.kept_min > bucket.kept) b.at("kept_min").fail("exceeds kept " + std::to_string(bucket.kept));
    for (const Bucket& seen : m.buckets_) {
      if (seen.name == bucket.name) b.at("name").fail("repeats bucket " + bucket.name);
    }
    const Graph& graph = m.graph(bucket.graph);
    bucket.profile = -1;
    for (size_t p = 0; p < graph.profiles.size(); ++p) {
      if (graph.profiles[p] == bucket.name) bucket.profile = static_cast<int>(p);
    }
    if (bucket.profile < 0) b.fail("has no optimization profile in graph " + bucket.graph);
    m.buckets_.push_back(bucket);
  }
  const Bucket& last = m.buckets_.back();
  if (!last.is_full() || last.kept != n_tokens) {
    root.at("buckets").fail("must end with the full bucket keeping all " + std::to_string(n_tokens) + " tokens");
  }
  return m;
}

const Bucket& Manifest::bucket(const std::string& name) const {
  for (const Bucket& b : buckets_) {
    if (b.name == name) return b;
  }
  std::string names;
  for (const Bucket& b : buckets_) names += (names.empty() ? "" : ", ") + b.name;
  throw Error("no bucket named '" + name + "' in " + folder_ + " (it has " + names + ")");
}

const Bucket& Manifest::bucket_at(int64_t index) const {
  if (index < 0 || index >= static_cast<int64_t>(buckets_.size())) {
    throw Error("bucket index " + std::to_string(index) + " is outside the table of " + std::to_string(buckets_.size()) +
                " buckets in " + folder_ + "; the planner model must come from the same build as the engines");
  }
  return buckets_[static_cast<size_t>(index)];
}

const Graph& Manifest::graph(const std::string& kind) const {
  for (const Graph& g : graphs_) {
    if (g.kind == kind) return g;
  }
  throw Error(join(folder_, "manifest.json") + ": no graph named '" + kind + "'" + kRebuild);
}

const Bucket& Manifest::bucket_for_kept(int64_t kept) const {
  for (const Bucket& b : buckets_) {
    if (b.holds(kept)) return b;
  }
  std::string sizes;
  for (const Bucket& b : buckets_) {
    sizes += (sizes.empty() ? "" : ", ") + b.name + "=" +
             (b.kept_min == b.kept ? "" : std::to_string(b.kept_min) + "..") + std::to_string(b.kept);
  }
  throw Error("no bucket keeps " + std::to_string(kept) + " tokens (buckets: " + sizes +
              "); plan with this folder's planner so K matches a bucket");
}

const Bucket& Manifest::check_plan(int64_t bucket_index, const int64_t* keep, size_t count) const {
  const Bucket& b = bucket_at(bucket_index);
  if (!b.holds(static_cast<int64_t>(count))) {
    const std::string range = b.kept_min == b.kept ? "exactly " + std::to_string(b.kept)
                                                   : std::to_string(b.kept_min) + " to " + std::to_string(b.kept);
    throw Error("keep_indices has " + std::to_string(count) + " entries but bucket " + b.name + " keeps " + range +
                "; the bucket index and keep_indices must come from the same plan");
  }
  if (count > 0 && keep == nullptr) throw Error("keep_indices is a null pointer");
  const int64_t n = n_tokens();
  std::vector<bool> seen(static_cast<size_t>(n), false);
  for (size_t i = 0; i < count; ++i) {
    int64_t t = keep[i];
    if (t < 0 || t >= n) {
      throw Error("keep_indices[" + std::to_string(i) + "] = " + std::to_string(t) + " is outside the token grid [0, " +
                  std::to_string(n) + "); the plan was made for another resolution or token size");
    }
    if (seen[static_cast<size_t>(t)]) {
      throw Error("keep_indices[" + std::to_string(i) + "] = " + std::to_string(t) +
                  " repeats a token; each kept token must appear once (scattering twice is undefined)");
    }
    seen[static_cast<size_t>(t)] = true;
  }
  return b;
}

std::vector<int64_t> Manifest::keep_indices_input(int64_t bucket_index, const std::vector<int64_t>& keep) const {
  check_plan(bucket_index, keep);
  std::vector<int64_t> out;
  out.reserve(keep.size() * static_cast<size_t>(batch_));
  for (int64_t row = 0; row < batch_; ++row) out.insert(out.end(), keep.begin(), keep.end());
  return out;
}

std::string Manifest::engine_path(const Bucket& bucket) const {
  const Graph& g = graph(bucket.graph);
  if (g.engine_files.empty()) {
    throw Error(folder_ + " was built with backend " + backend_ + ", which writes no engine file; rebuild it with " +
                "hilo-export build --backend trt to run it with TensorRT");
  }
  const FileEntry& entry = g.engine_files.front();
  const std::string path = join(folder_, entry.path);
  const int64_t size = file_size(path);
  if (size < 0) throw Error(path + " is missing" + kRebuild);
  if (size != entry.bytes) {
    throw Error(path + " has " + std::to_string(size) + " bytes, the manifest says " + std::to_string(entry.bytes) + kRebuild);
  }
  return path;
}

}  // namespace hilo
