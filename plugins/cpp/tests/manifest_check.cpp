// Test driver for the manifest/bucket library, run by tests/test_cpp.py.
//
//   manifest_check GOLDEN.json   compare with golden answers the Python runtime wrote
//   manifest_check --load DIR    load DIR/manifest.json and print its table (errors: exit 2)
//
// GOLDEN.json names the folder and lists expected bucket tables, bucket choices, plan
// checks and error messages; every mismatch is printed and the exit status is 1.

#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "hilo/json.hpp"
#include "hilo/manifest.hpp"

namespace {

using hilo::json::Value;

int checks = 0;
int failures = 0;

void expect(bool ok, const std::string& what) {
  ++checks;
  if (!ok) {
    ++failures;
    std::cout << "MISMATCH: " << what << "\n";
  }
}

const Value& member(const Value& object, const std::string& key) {
  const Value* v = object.find(key);
  if (v == nullptr) throw std::runtime_error("golden file lacks '" + key + "'");
  return *v;
}

std::vector<int64_t> ints(const Value& array) {
  std::vector<int64_t> out;
  for (const Value& v : array.items()) out.push_back(v.as_int());
  return out;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

void check_table(const hilo::Manifest& m, const Value& golden) {
  const Value& table = member(golden, "table");
  expect(m.buckets().size() == table.items().size(),
         "bucket count " + std::to_string(m.buckets().size()) + " vs " + std::to_string(table.items().size()));
  for (size_t i = 0; i < table.items().size() && i < m.buckets().size(); ++i) {
    const Value& want = table.items()[i];
    const hilo::Bucket& got = m.buckets()[i];
    const std::string at = "bucket " + std::to_string(i) + " ";
    expect(got.index == static_cast<int>(i), at + "index");
    expect(got.name == member(want, "name").as_string(), at + "name " + got.name);
    expect(got.fraction == member(want, "fraction").as_double(), at + "fraction");
    expect(got.capacity == member(want, "capacity").as_int(), at + "capacity " + std::to_string(got.capacity));
    expect(got.n_lowfreq == member(want, "n_lowfreq").as_int(), at + "n_lowfreq");
    expect(got.kept == member(want, "kept").as_int(), at + "kept " + std::to_string(got.kept));
    expect(got.kept_min == member(want, "kept_min").as_int(), at + "kept_min " + std::to_string(got.kept_min));
    expect(got.graph == member(want, "graph").as_string(), at + "graph");
    expect(got.profile == member(want, "profile").as_int(), at + "profile " + std::to_string(got.profile));
    const Value& inputs = member(want, "inputs");
    expect(got.inputs.size() == inputs.items().size(), at + "input count");
    for (size_t j = 0; j < inputs.items().size() && j < got.inputs.size(); ++j) {
      const Value& spec = inputs.items()[j];
      expect(got.inputs[j].name == member(spec, "name").as_string(), at + "input name " + got.inputs[j].name);
      expect(got.inputs[j].dtype == member(spec, "dtype").as_string(), at + "input dtype " + got.inputs[j].name);
      expect(got.inputs[j].shape == ints(member(spec, "shape")),
             at + "input shape " + got.inputs[j].name + shape_text(got.inputs[j].shape));
    }
  }
  expect(m.n_tokens() == member(golden, "n_tokens").as_int(), "n_tokens");
  expect(m.batch() == member(golden, "batch").as_int(), "batch");
}

void check_choices(const hilo::Manifest& m, const Value& golden) {
  for (const hilo::Bucket& b : m.buckets()) {  // both ends of every bucket's range
    expect(m.bucket_for_kept(b.kept).name == b.name, "bucket_for_kept(" + std::to_string(b.kept) + ")");
    expect(m.bucket_for_kept(b.kept_min).name == b.name, "bucket_for_kept(" + std::to_string(b.kept_min) + ")");
  }
}

void check_plans(const hilo::Manifest& m, const Value& golden) {
  for (const Value& p : member(golden, "plans").items()) {
    const int64_t index = member(p, "bucket_index").as_int();
    const std::vector<int64_t> keep = ints(member(p, "keep"));
    const std::string& want = member(p, "bucket").as_string();
    try {
      expect(m.check_plan(index, keep).name == want, "check_plan bucket " + want);
      std::vector<int64_t> input = m.keep_indices_input(index, keep);
      expect(input.size() == keep.size() * static_cast<size_t>(m.batch()), "keep_indices_input size");
    } catch (const hilo::Error& err) {
      expect(false, std::string("a Python plan was rejected: ") + err.what());
    }
  }
}

void check_errors(const hilo::Manifest& m, const Value& golden) {
  for (const Value& e : member(golden, "errors").items()) {
    const std::string& kind = member(e, "call").as_string();
    const std::string& want = member(e, "message").as_string();
    std::string got;
    try {
      if (kind == "check_plan") {
        m.check_plan(member(e, "bucket_index").as_int(), ints(member(e, "keep")));
      } else if (kind == "bucket") {
        m.bucket(member(e, "name").as_string());
      } else if (kind == "bucket_for_kept") {
        m.bucket_for_kept(member(e, "kept").as_int());
      } else if (kind == "engine_path") {
        m.engine_path(m.bucket(member(e, "name").as_string()));
      } else {
        throw std::runtime_error("unknown call in golden file: " + kind);
      }
    } catch (const hilo::Error& err) {
      got = err.what();
    }
    expect(!got.empty() && got.find(want) != std::string::npos,
           kind + ": expected an error containing '" + want + "', got '" + got + "'");
  }
}

int load_and_print(const std::string& folder) {
  try {
    hilo::Manifest m = hilo::Manifest::load(folder);
    std::cout << folder << ": " << m.width() << "x" << m.height() << " px, grid " << m.grid_height() << "x"
              << m.grid_width() << ", batch " << m.batch() << ", backend " << m.backend() << "\n";
    for (const hilo::Bucket& b : m.buckets()) {
      std::cout << "  " << b.index << " " << b.name << " capacity " << b.capacity << " kept " << b.kept << " graph "
                << b.graph << " profile " << b.profile << "\n";
    }
    return 0;
  } catch (const hilo::Error& err) {
    std::cerr << "error: " << err.what() << "\n";
    return 2;
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--load") return load_and_print(argv[2]);
  if (argc != 2) {
    std::cerr << "usage: manifest_check GOLDEN.json | manifest_check --load FOLDER\n";
    return 64;
  }
  try {
    std::ifstream in(argv[1], std::ios::binary);
    if (!in) throw std::runtime_error(std::string("cannot open ") + argv[1]);
    std::stringstream text;
    text << in.rdbuf();
    const Value golden = hilo::json::parse(text.str());
    const hilo::Manifest m = hilo::Manifest::load(member(golden, "folder").as_string());
    check_table(m, golden);
    check_choices(m, golden);
    check_plans(m, golden);
    check_errors(m, golden);
  } catch (const std::exception& err) {
    std::cout << "FAILED: " << err.what() << "\n";
    return 1;
  }
  std::cout << checks << " checks, " << failures << " mismatches\n";
  return failures == 0 && checks > 0 ? 0 : 1;
}
