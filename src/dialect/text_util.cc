#include "src/dialect/text_util.h"

namespace iptkit::dialect {

void AppendSaveCounters(std::string& out, uint64_t packets, uint64_t bytes) {
  out += '[';
  out += std::to_string(packets);
  out += ':';
  out += std::to_string(bytes);
  out += ']';
}

size_t FindForbiddenByte(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (IsForbiddenByte(s[i])) return i;
  }
  return std::string_view::npos;
}

std::string DescribeForbiddenByte(char c) {
  switch (c) {
    case '\n':
      return "a newline";
    case '\r':
      return "a carriage return";
    default:
      return "a NUL byte";
  }
}

bool IsSaveStringBare(std::string_view value) {
  if (value.empty()) return false;
  for (char c : value) {
    bool bare = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!bare) return false;
  }
  return true;
}

void AppendSaveString(std::string& out, std::string_view value, bool force_quote) {
  if (!force_quote && IsSaveStringBare(value)) {
    out.append(value);
    return;
  }
  out.push_back('"');
  for (char c : value) {
    if (c == '"' || c == '\\' || c == '\'') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
}

void AppendDoubleQuoted(std::string& out, std::string_view value) {
  out.push_back('"');
  for (char c : value) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
}

bool IsHeaderOptionToken(std::string_view token) {
  static constexpr std::string_view kTokens[] = {
      "-s",
      "-d",
      "-i",
      "-o",
      "-p",
      "-f",
      "-m",
      "-j",
      "-g",
      "-c",
      "--source",
      "--src",
      "--destination",
      "--dst",
      "--in-interface",
      "--out-interface",
      "--protocol",
      "--fragment",
      "--match",
      "--jump",
      "--goto",
      "--set-counters",
  };
  for (std::string_view t : kTokens) {
    if (token == t) return true;
  }
  return false;
}

bool LooksLikeOption(std::string_view token) {
  return token.size() > 1 && token[0] == '-' && !(token[1] >= '0' && token[1] <= '9');
}

}  // namespace iptkit::dialect
