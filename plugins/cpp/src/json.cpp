// The JSON reader declared in hilo/json.hpp.

#include "hilo/json.hpp"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <locale>
#include <sstream>

namespace hilo {
namespace json {

namespace {
constexpr int kMaxDepth = 200;
}

class Parser {
 public:
  explicit Parser(const std::string& text) : text_(text) {}

  Value document() {
    skip_space();
    Value value = parse_value(0);
    skip_space();
    if (pos_ != text_.size()) fail("unexpected text after the JSON value");
    return value;
  }

 private:
  const std::string& text_;
  size_t pos_ = 0;

  [[noreturn]] void fail(const std::string& what) const {
    size_t line = 1, column = 1;
    for (size_t i = 0; i < pos_ && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    throw ParseError("invalid JSON at line " + std::to_string(line) + ", column " + std::to_string(column) + ": " +
                     what);
  }

  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return at_end() ? '\0' : text_[pos_]; }

  void skip_space() {
    while (!at_end() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  void expect_word(const char* word) {
    for (const char* c = word; *c; ++c) {
      if (peek() != *c) fail(std::string("expected '") + word + "'");
      ++pos_;
    }
  }

  Value parse_value(int depth) {
    if (depth > kMaxDepth) fail("nesting deeper than " + std::to_string(kMaxDepth) + " levels");
    Value value;
    switch (peek()) {
      case '{': parse_object(value, depth); break;
      case '[': parse_array(value, depth); break;
      case '"':
        value.type_ = Value::Type::String;
        value.string_ = parse_string();
        break;
      case 't':
        expect_word("true");
        value.type_ = Value::Type::Bool;
        value.bool_ = true;
        break;
      case 'f':
        expect_word("false");
        value.type_ = Value::Type::Bool;
        break;
      case 'n': expect_word("null"); break;
      // Python's json writes non-finite floats this way, and manifests come from Python
      case 'N':
        expect_word("NaN");
        value.type_ = Value::Type::Number;
        value.number_ = std::nan("");
        break;
      case 'I':
        expect_word("Infinity");
        value.type_ = Value::Type::Number;
        value.number_ = HUGE_VAL;
        break;
      case '\0':
        if (at_end()) fail("the text ends where a value was expected");
        fail("unexpected character");
      default:
        if (peek() == '-' && pos_ + 1 < text_.size() && text_[pos_ + 1] == 'I') {
          ++pos_;
          expect_word("Infinity");
          value.type_ = Value::Type::Number;
          value.number_ = -HUGE_VAL;
        } else if (peek() == '-' || (peek() >= '0' && peek() <= '9')) {
          parse_number(value);
        } else {
          fail(std::string("unexpected character '") + peek() + "'");
        }
    }
    return value;
  }

  void parse_object(Value& value, int depth) {
    value.type_ = Value::Type::Object;
    parse_items('}', "an object", [&] {
      if (peek() != '"') fail("expected a quoted key");
      value.keys_.push_back(parse_string());
      skip_space();
      if (peek() != ':') fail("expected ':' after a key");
      ++pos_;
      skip_space();
      value.items_.push_back(parse_value(depth + 1));
    });
  }

  void parse_array(Value& value, int depth) {
    value.type_ = Value::Type::Array;
    parse_items(']', "an array", [&] { value.items_.push_back(parse_value(depth + 1)); });
  }

  // The comma-separated body of an object or array, from its opening bracket to `close`.
  template <typename ParseItem>
  void parse_items(char close, const char* what, ParseItem parse_item) {
    ++pos_;  // '{' or '['
    skip_space();
    if (peek() == close) {
      ++pos_;
      return;
    }
    while (true) {
      skip_space();
      parse_item();
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == close) {
        ++pos_;
        return;
      }
      fail(std::string("expected ',' or '") + close + "' in " + what);
    }
  }

  unsigned hex4() {
    unsigned code = 0;
    for (int i = 0; i < 4; ++i) {
      char c = peek();
      code <<= 4;
      if (c >= '0' && c <= '9') {
        code |= unsigned(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        code |= unsigned(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        code |= unsigned(c - 'A' + 10);
      } else {
        fail("\\u needs four hex digits");
      }
      ++pos_;
    }
    return code;
  }

  static void append_utf8(std::string& out, unsigned code) {
    if (code < 0x80) {
      out += char(code);
    } else if (code < 0x800) {
      out += char(0xC0 | (code >> 6));
      out += char(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
      out += char(0xE0 | (code >> 12));
      out += char(0x80 | ((code >> 6) & 0x3F));
      out += char(0x80 | (code & 0x3F));
    } else {
      out += char(0xF0 | (code >> 18));
      out += char(0x80 | ((code >> 12) & 0x3F));
      out += char(0x80 | ((code >> 6) & 0x3F));
      out += char(0x80 | (code & 0x3F));
    }
  }

  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      if (at_end()) fail("unterminated string");
      char c = text_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail("control character inside a string");
      if (c != '\\') {
        out += c;  // UTF-8 passes through byte by byte
        continue;
      }
      char e = peek();
      ++pos_;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned code = hex4();
          if (code >= 0xD800 && code <= 0xDBFF) {  // a surrogate pair spells one code point
            if (peek() != '\\') fail("lone high surrogate in \\u escape");
            ++pos_;
            if (peek() != 'u') fail("lone high surrogate in \\u escape");
            ++pos_;
            unsigned low = hex4();
            if (low < 0xDC00 || low > 0xDFFF) fail("invalid low surrogate in \\u escape");
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          } else if (code >= 0xDC00 && code <= 0xDFFF) {
            fail("lone low surrogate in \\u escape");
          }
          append_utf8(out, code);
          break;
        }
        default: fail("unknown escape in a string");
      }
    }
  }

  void parse_number(Value& value) {
    size_t start = pos_;
    bool integral = true;
    if (peek() == '-') ++pos_;
    if (peek() == '0') {
      ++pos_;
    } else if (peek() >= '1' && peek() <= '9') {
      while (peek() >= '0' && peek() <= '9') ++pos_;
    } else {
      fail("a number needs digits");
    }
    if (peek() == '.') {
      integral = false;
      ++pos_;
      if (!(peek() >= '0' && peek() <= '9')) fail("a number needs digits after '.'");
      while (peek() >= '0' && peek() <= '9') ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      integral = false;
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!(peek() >= '0' && peek() <= '9')) fail("a number needs digits in its exponent");
      while (peek() >= '0' && peek() <= '9') ++pos_;
    }
    const std::string token = text_.substr(start, pos_ - start);
    value.type_ = Value::Type::Number;
    // the classic locale: strtod would read "0.3" as 0 in a program that set a German locale
    std::istringstream in(token);
    in.imbue(std::locale::classic());
    in >> value.number_;
    if (in.fail()) value.number_ = token[0] == '-' ? -HUGE_VAL : HUGE_VAL;  // beyond double's range
    if (integral) {
      errno = 0;
      long long parsed = std::strtoll(token.c_str(), nullptr, 10);
      // integers beyond int64 stay numbers, but not exact integers
      value.is_int_ = errno != ERANGE;
      value.int_ = static_cast<int64_t>(parsed);
    }
  }
};

Value parse(const std::string& text) { return Parser(text).document(); }

}  // namespace json
}  // namespace hilo
