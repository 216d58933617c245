// QEMU's JSON reader, qobject/json-lexer.c, json-streamer.c and
// json-parser.c as of 7.2, folded into one pass: the lexer's states, the
// streamer's bracket counting that decides where a value ends, and a parser
// driven one token at a time that reports the error QEMU's recursive-descent
// parser would report first, in QEMU's words.
#include <charconv>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <locale.h>

#include <fmt/format.h>

#include <vmpod/qmp/qmp_protocol.h>

#include "qemu_compat.h"

namespace vmpod::qmp {
namespace {

enum class Token {
  kLeftBrace,
  kRightBrace,
  kLeftBracket,
  kRightBracket,
  kColon,
  kComma,
  kString,
  kInteger,
  kFloat,
  kKeyword,
};

bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

// QEMU's cvt4hex(): four hex digits at text[at], or -1.
int64_t hex4(std::string_view text, size_t at) {
  int64_t value = 0;
  for (size_t i = at; i < at + 4; ++i) {
    if (i >= text.size()) return -1;
    char c = text[i];
    int digit = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

// QEMU's parse_string(): token is a whole string token, quotes included.
tl::expected<std::string, std::string> decode_string(std::string_view token) {
  const char quote = token.front();
  std::string out;
  size_t i = 1;
  while (token[i] != quote) {
    if (token[i] != '\\') {
      size_t length = 0;
      int64_t cp = mod_utf8_codepoint(token.substr(i), &length);
      if (cp < 0) return tl::unexpected<std::string>("invalid UTF-8 sequence in string");
      append_utf8(out, cp);
      i += length;
      continue;
    }
    const size_t escape = i;
    i += 2;
    switch (token[escape + 1]) {
      case '"': out += '"'; break;
      case '\'': out += '\''; break;
      case '\\': out += '\\'; break;
      case '/': out += '/'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'u': {
        int64_t cp = hex4(token, i);
        i += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF && i + 1 < token.size() && token[i] == '\\' &&
            token[i + 1] == 'u') {
          int64_t trailing = hex4(token, i + 2);
          if (trailing >= 0xDC00 && trailing <= 0xDFFF) {
            cp = 0x10000 + ((cp & 0x3FF) << 10) + (trailing & 0x3FF);
            i += 6;
          } else {
            cp = -1;
          }
        }
        if (!is_valid_codepoint(cp)) {
          // QEMU prints the escape with "%.*s", so a short one shows up to
          // the token's end, closing quote included.
          return tl::unexpected<std::string>(fmt::format(
              "{} is not a valid Unicode character", token.substr(escape, i - escape)));
        }
        append_utf8(out, cp);
        break;
      }
      default: return tl::unexpected<std::string>("invalid escape sequence in string");
    }
  }
  return out;
}

// QEMU's strtod() runs in the C locale; so does this, whatever the process's.
locale_t c_locale() {
  static const locale_t locale = ::newlocale(LC_ALL_MASK, "C", locale_t{});
  return locale;
}

// QEMU's parse_literal(): int64 if it fits, else uint64, else double.
nlohmann::json decode_number(Token type, const std::string& text) {
  if (type == Token::kInteger) {
    const char* end = text.data() + text.size();
    int64_t signed_value = 0;
    if (std::from_chars(text.data(), end, signed_value).ec == std::errc()) return signed_value;
    uint64_t unsigned_value = 0;
    if (text.front() != '-' && std::from_chars(text.data(), end, unsigned_value).ec == std::errc()) {
      return unsigned_value;
    }
  }
  return ::strtod_l(text.c_str(), nullptr, c_locale());
}

// QEMU's json-parser.c turned inside out: instead of recursing over a
// complete token list it takes the tokens as they come, keeping the open
// containers on a stack, and stops at the error the recursive parser would
// have reported first.
class Parser {
 public:
  void take(Token type, const std::string& text) {
    if (error_) return;
    if (frames_.empty()) return value(type, text, false);
    Frame& top = frames_.back();
    switch (top.expect) {
      case Expect::kFirstKey:
        if (type == Token::kRightBrace) return close();
        return value(type, text, true);
      case Expect::kKey: return value(type, text, true);
      case Expect::kColon:
        if (type != Token::kColon) return fail("missing : in object pair");
        top.expect = Expect::kValue;
        return;
      case Expect::kFirstElement:
        if (type == Token::kRightBracket) return close();
        return value(type, text, false);
      case Expect::kValue: return value(type, text, false);
      case Expect::kCommaOrEnd:
        if (top.object) {
          if (type == Token::kRightBrace) return close();
          if (type != Token::kComma) return fail("expected separator in dict");
          top.expect = Expect::kKey;
          return;
        }
        if (type == Token::kRightBracket) return close();
        if (type != Token::kComma) return fail("expected separator in list");
        top.expect = Expect::kValue;
        return;
    }
  }

  const std::optional<std::string>& error() const { return error_; }
  // Once the streamer has seen the value's brackets balance without an
  // error, the value is complete: the stack mirrors the bracket counts.
  nlohmann::json take_result() { return std::move(*result_); }

  void reset() {
    frames_.clear();
    result_.reset();
    error_.reset();
  }

 private:
  enum class Expect { kFirstKey, kKey, kColon, kFirstElement, kValue, kCommaOrEnd };
  struct Frame {
    bool object;
    Expect expect;
    nlohmann::json container;
    std::string key;  // of the pair whose value is being parsed
    // In a pair's key position: QEMU parses the whole container before it
    // notices that it is not a string.
    bool is_key;
  };

  void fail(std::string message) {
    error_ = std::move(message);
    frames_.clear();
  }

  // A token where QEMU's parse_value() runs; as_key for a pair's key.
  void value(Token type, const std::string& text, bool as_key) {
    switch (type) {
      case Token::kLeftBrace:
        frames_.push_back(Frame{true, Expect::kFirstKey, nlohmann::json::object(), {}, as_key});
        return;
      case Token::kLeftBracket:
        frames_.push_back(Frame{false, Expect::kFirstElement, nlohmann::json::array(), {}, as_key});
        return;
      case Token::kString: {
        auto decoded = decode_string(text);
        if (!decoded) return fail(std::move(decoded.error()));
        if (!as_key) return deliver(std::move(*decoded));
        frames_.back().key = std::move(*decoded);
        frames_.back().expect = Expect::kColon;
        return;
      }
      case Token::kInteger:
      case Token::kFloat:
        if (as_key) return fail("key is not a string in object");
        return deliver(decode_number(type, text));
      case Token::kKeyword: {
        nlohmann::json keyword;
        if (text == "true") {
          keyword = true;
        } else if (text == "false") {
          keyword = false;
        } else if (text != "null") {
          return fail(fmt::format("invalid keyword '{}'", text));
        }
        if (as_key) return fail("key is not a string in object");
        return deliver(std::move(keyword));
      }
      default: return fail("expecting value");
    }
  }

  void close() {
    Frame frame = std::move(frames_.back());
    frames_.pop_back();
    if (frame.is_key) return fail("key is not a string in object");
    deliver(std::move(frame.container));
  }

  // A complete value in a value position.
  void deliver(nlohmann::json value) {
    if (frames_.empty()) {
      result_ = std::move(value);
      return;
    }
    Frame& top = frames_.back();
    if (top.object) {
      // After the value, as QEMU: {"a":1,"a":} is "expecting value".
      auto& members = top.container.get_ref<nlohmann::json::object_t&>();
      if (!members.emplace(std::move(top.key), std::move(value)).second) {
        return fail("duplicate key");
      }
    } else {
      top.container.push_back(std::move(value));
    }
    top.expect = Expect::kCommaOrEnd;
  }

  std::vector<Frame> frames_;
  std::optional<nlohmann::json> result_;
  std::optional<std::string> error_;
};

}  // namespace

struct JsonStreamer::State {
  // QEMU's lexer states (json-lexer.c); kRecovery skips after an error.
  enum class Lex {
    kStart,
    kString,
    kStringEscape,
    kZero,
    kNumber,
    kNegative,
    kMantissaStart,
    kMantissa,
    kExponentStart,
    kExponentSign,
    kExponent,
    kKeyword,
    kRecovery,
  };

  explicit State(size_t max) : max_value_bytes(max) {}

  void feed_byte(unsigned char c);
  void append(unsigned char c) {
    // Only a token of a value already refused can get this long; its text
    // matters only for a "stray" message.
    if (token.size() < max_value_bytes) token += static_cast<char>(c);
  }
  void emit(Token type);
  void lexical_error();
  void refuse(std::string desc);
  void end_value();

  const size_t max_value_bytes;
  std::vector<JsonInput>* out = nullptr;
  Lex lex = Lex::kStart;
  char quote = '"';
  std::string token;
  // json-streamer.c's counts: a value ends when neither is positive or
  // either is negative (a stray closer ends it at once, as an error).
  int64_t braces = 0;
  int64_t brackets = 0;
  bool in_value = false;
  size_t value_bytes = 0;
  // Refused for a limit already: the rest of the value goes unparsed.
  bool discarding = false;
  Parser parser;
};

void JsonStreamer::State::emit(Token type) {
  switch (type) {
    case Token::kLeftBrace: ++braces; break;
    case Token::kRightBrace: --braces; break;
    case Token::kLeftBracket: ++brackets; break;
    case Token::kRightBracket: --brackets; break;
    default: break;
  }
  if (!discarding && braces + brackets > kMaxNesting) refuse("JSON nesting depth limit exceeded");
  if (!discarding) parser.take(type, token);
  token.clear();
  if ((braces > 0 || brackets > 0) && braces >= 0 && brackets >= 0) return;
  end_value();
}

void JsonStreamer::State::end_value() {
  if (!discarding) {
    if (parser.error()) {
      out->push_back(JsonParseError{"JSON parse error, " + *parser.error()});
    } else {
      out->push_back(parser.take_result());
    }
  }
  braces = brackets = 0;
  in_value = false;
  value_bytes = 0;
  discarding = false;
  parser.reset();
}

void JsonStreamer::State::refuse(std::string desc) {
  out->push_back(JsonParseError{std::move(desc)});
  discarding = true;
  parser.reset();
}

void JsonStreamer::State::lexical_error() {
  // QEMU formats the token with "%s": it ends at a NUL byte.
  out->push_back(JsonParseError{
      fmt::format("JSON parse error, stray '{}'", std::string_view(token).substr(0, token.find('\0')))});
  token.clear();
  braces = brackets = 0;
  in_value = false;
  value_bytes = 0;
  discarding = false;
  parser.reset();
  lex = Lex::kRecovery;
}

void JsonStreamer::State::feed_byte(unsigned char c) {
  if (in_value && ++value_bytes > max_value_bytes && !discarding) {
    refuse("JSON token size limit exceeded");
  }
  // A byte that ends a number or keyword is looked at again in kStart.
  for (;;) {
    switch (lex) {
      case Lex::kStart:
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') return;
        if (!in_value) {
          in_value = true;
          value_bytes = 1;
        }
        append(c);
        switch (c) {
          case '{': return emit(Token::kLeftBrace);
          case '}': return emit(Token::kRightBrace);
          case '[': return emit(Token::kLeftBracket);
          case ']': return emit(Token::kRightBracket);
          case ':': return emit(Token::kColon);
          case ',': return emit(Token::kComma);
          case '"':
          case '\'':
            quote = static_cast<char>(c);
            lex = Lex::kString;
            return;
          case '0': lex = Lex::kZero; return;
          case '-': lex = Lex::kNegative; return;
          default:
            if (c >= '1' && c <= '9') {
              lex = Lex::kNumber;
            } else if (c >= 'a' && c <= 'z') {
              lex = Lex::kKeyword;
            } else {
              lexical_error();
            }
            return;
        }
      case Lex::kString:
        append(c);
        if (c == static_cast<unsigned char>(quote)) {
          lex = Lex::kStart;
          return emit(Token::kString);
        }
        if (c == '\\') {
          lex = Lex::kStringEscape;
        } else if (c < 0x20 || c > 0xFD) {
          lexical_error();
        }
        return;
      case Lex::kStringEscape:
        // Any escape lexes; the parser refuses the ones JSON lacks.
        append(c);
        if (c < 0x20 || c > 0xFD) return lexical_error();
        lex = Lex::kString;
        return;
      case Lex::kZero:
        if (c == '.' || is_digit(c)) {
          append(c);
          if (c != '.') return lexical_error();  // a leading zero
          lex = Lex::kMantissaStart;
          return;
        }
        lex = Lex::kStart;
        emit(Token::kInteger);
        continue;
      case Lex::kNumber:
        if (is_digit(c) || c == '.' || c == 'e' || c == 'E') {
          append(c);
          if (c == '.') lex = Lex::kMantissaStart;
          if (c == 'e' || c == 'E') lex = Lex::kExponentStart;
          return;
        }
        lex = Lex::kStart;
        emit(Token::kInteger);
        continue;
      case Lex::kNegative:
        append(c);
        if (c == '0') {
          lex = Lex::kZero;
        } else if (c >= '1' && c <= '9') {
          lex = Lex::kNumber;
        } else {
          lexical_error();
        }
        return;
      case Lex::kMantissaStart:
        append(c);
        if (!is_digit(c)) return lexical_error();
        lex = Lex::kMantissa;
        return;
      case Lex::kMantissa:
        if (is_digit(c) || c == 'e' || c == 'E') {
          append(c);
          if (!is_digit(c)) lex = Lex::kExponentStart;
          return;
        }
        lex = Lex::kStart;
        emit(Token::kFloat);
        continue;
      case Lex::kExponentStart:
        append(c);
        if (c == '+' || c == '-') {
          lex = Lex::kExponentSign;
        } else if (is_digit(c)) {
          lex = Lex::kExponent;
        } else {
          lexical_error();
        }
        return;
      case Lex::kExponentSign:
        append(c);
        if (!is_digit(c)) return lexical_error();
        lex = Lex::kExponent;
        return;
      case Lex::kExponent:
        if (is_digit(c)) return append(c);
        lex = Lex::kStart;
        emit(Token::kFloat);
        continue;
      case Lex::kKeyword:
        if (c >= 'a' && c <= 'z') return append(c);
        lex = Lex::kStart;
        emit(Token::kKeyword);
        continue;
      case Lex::kRecovery:
        // Structural and control characters (but tab) and the bytes 0xFE
        // and 0xFF end the recovery and are lexed again.
        if (c == '\t' || (c >= 0x20 && c <= 0xFD && c != '{' && c != '}' && c != '[' && c != ']' &&
                          c != ':' && c != ',')) {
          return;
        }
        lex = Lex::kStart;
        continue;
    }
  }
}

JsonStreamer::JsonStreamer(size_t max_value_bytes)
    : state_(std::make_unique<State>(max_value_bytes)) {}
JsonStreamer::~JsonStreamer() = default;
JsonStreamer::JsonStreamer(JsonStreamer&&) noexcept = default;
JsonStreamer& JsonStreamer::operator=(JsonStreamer&&) noexcept = default;

void JsonStreamer::feed(std::string_view bytes, std::vector<JsonInput>& out) {
  state_->out = &out;
  for (char c : bytes) state_->feed_byte(static_cast<unsigned char>(c));
  state_->out = nullptr;
}

}  // namespace vmpod::qmp
