// A small, strict JSON reader: enough for manifest.json and test files, nothing vendored.
//
// Strict RFC 8259 (no comments, no trailing commas) plus the NaN and Infinity that Python's
// json module writes for non-finite floats; errors name the line and column. Numbers keep an exact int64 when they are written as integers, so token counts
// and indices never pass through a double. Nesting is capped so a hostile file cannot
// exhaust the stack.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace hilo {
namespace json {

class ParseError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Value {
 public:
  enum class Type { Null, Bool, Number, String, Array, Object };

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::Null; }
  bool is_bool() const { return type_ == Type::Bool; }
  bool is_number() const { return type_ == Type::Number; }
  bool is_int() const { return type_ == Type::Number && is_int_; }
  bool is_string() const { return type_ == Type::String; }
  bool is_array() const { return type_ == Type::Array; }
  bool is_object() const { return type_ == Type::Object; }

  bool as_bool() const { return bool_; }
  double as_double() const { return number_; }
  int64_t as_int() const { return int_; }
  const std::string& as_string() const { return string_; }
  const std::vector<Value>& items() const { return items_; }  // array elements or object values
  const std::vector<std::string>& keys() const { return keys_; }  // object keys, in file order

  // Object member or nullptr; the last of duplicate keys wins, as in Python's json.
  const Value* find(const std::string& key) const {
    for (size_t i = keys_.size(); i-- > 0;) {
      if (keys_[i] == key) return &items_[i];
    }
    return nullptr;
  }

  static const char* type_name(Type type) {
    switch (type) {
      case Type::Null: return "null";
      case Type::Bool: return "a boolean";
      case Type::Number: return "a number";
      case Type::String: return "a string";
      case Type::Array: return "an array";
      case Type::Object: return "an object";
    }
    return "?";
  }

 private:
  friend class Parser;
  Type type_ = Type::Null;
  bool bool_ = false;
  bool is_int_ = false;
  double number_ = 0.0;
  int64_t int_ = 0;
  std::string string_;
  std::vector<Value> items_;
  std::vector<std::string> keys_;
};

Value parse(const std::string& text);  // throws ParseError

}  // namespace json
}  // namespace hilo
