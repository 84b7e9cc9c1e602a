#include "src/rest/http/request_parser.h"

#include <algorithm>
#include <vector>

namespace iptkit::rest::http {
namespace {

// RFC 9110 5.6.2: tchar.
bool IsTokenChar(unsigned char c) {
  if (c >= '0' && c <= '9') return true;
  if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
      return true;
    default:
      return false;
  }
}

bool IsToken(std::string_view s) {
  return !s.empty() &&
         std::all_of(s.begin(), s.end(), [](char c) { return IsTokenChar(static_cast<unsigned char>(c)); });
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view TrimBlanks(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

HttpProblem Problem(int status, std::string message) { return HttpProblem{status, std::move(message)}; }

// The comma-separated elements of a field value, trimmed and lower-cased; empty elements dropped.
std::vector<std::string> ListElements(std::string_view value) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= value.size()) {
    size_t comma = value.find(',', start);
    if (comma == std::string_view::npos) comma = value.size();
    std::string_view item = TrimBlanks(value.substr(start, comma - start));
    if (!item.empty()) out.push_back(Lower(item));
    start = comma + 1;
  }
  return out;
}

// A line of the head without its line end; nullopt for a bare CR inside it.
std::optional<std::string_view> StripLineEnd(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.find('\r') != std::string_view::npos) return std::nullopt;
  return line;
}

std::optional<HttpProblem> ParseRequestLine(std::string_view line, RequestHead* out) {
  const size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return Problem(400, "malformed request line: expected 'METHOD /path HTTP/1.1'");
  const size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return Problem(400, "malformed request line: expected 'METHOD /path HTTP/1.1'");
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (!IsToken(method)) return Problem(400, "malformed request line: the method is not a token");
  if (target.empty()) return Problem(400, "malformed request line: no request target (or two blanks in a row)");
  // HTTP-version = "HTTP/" DIGIT "." DIGIT; anything after it (another blank, a word) is malformed.
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || !std::isdigit(static_cast<unsigned char>(version[5])) ||
      version[6] != '.' || !std::isdigit(static_cast<unsigned char>(version[7]))) {
    return Problem(400, "malformed request line: expected 'HTTP/1.1' after the target");
  }
  if (version[5] != '1' || (version[7] != '0' && version[7] != '1')) {
    return Problem(505, "HTTP version " + std::string(version.substr(5)) + " is not supported: use HTTP/1.1");
  }
  if (target.front() != '/') {
    return Problem(400, "the request target must be a path ('/v1/...'), not '" +
                            std::string(target.substr(0, std::min<size_t>(target.size(), 64))) + "'");
  }
  for (char ch : target) {
    const auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c >= 0x7f) return Problem(400, "the request target holds a byte that must be percent-encoded");
  }
  out->method = std::string(method);
  out->target = std::string(target);
  out->minor_version = version[7] - '0';
  const size_t q = target.find('?');
  out->path = PercentDecode(target.substr(0, q), /*plus_as_space=*/false);
  if (out->path.find('\0') != std::string::npos) return Problem(400, "the path holds an encoded NUL byte (%00)");
  out->query.clear();
  if (q != std::string_view::npos) {
    std::string_view rest = target.substr(q + 1);
    // A fragment is never sent by clients; if one is, it is not part of the query.
    rest = rest.substr(0, rest.find('#'));
    size_t start = 0;
    while (start <= rest.size()) {
      size_t amp = rest.find('&', start);
      if (amp == std::string_view::npos) amp = rest.size();
      std::string_view pair = rest.substr(start, amp - start);
      if (!pair.empty()) {
        const size_t eq = pair.find('=');
        std::string key = PercentDecode(pair.substr(0, eq), true);
        std::string value = eq == std::string_view::npos ? "" : PercentDecode(pair.substr(eq + 1), true);
        out->query.emplace(std::move(key), std::move(value));
      }
      start = amp + 1;
    }
  }
  return std::nullopt;
}

}  // namespace

std::string RequestHead::Header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? "" : it->second;
}

std::string PercentDecode(std::string_view text, bool plus_as_space) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%' && i + 2 < text.size()) {
      const int hi = HexValue(text[i + 1]);
      const int lo = HexValue(text[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        continue;
      }
    }
    out += (plus_as_space && c == '+') ? ' ' : c;
  }
  return out;
}

size_t FindHeadEnd(std::string_view buffer, size_t from) {
  // The blank line is "\n\n", "\n\r\n" (CRLF lines, or LF lines); start early enough to see one that straddles
  // the previous end of the buffer.
  size_t i = from > 2 ? from - 2 : 0;
  for (;;) {
    i = buffer.find('\n', i);
    if (i == std::string_view::npos) return std::string_view::npos;
    if (i + 1 < buffer.size() && buffer[i + 1] == '\n') return i + 2;
    if (i + 2 < buffer.size() && buffer[i + 1] == '\r' && buffer[i + 2] == '\n') return i + 3;
    ++i;
  }
}

std::optional<HttpProblem> CheckPartialHead(std::string_view buffer, const ParseLimits& limits) {
  const size_t first_lf = buffer.find('\n');
  if (first_lf == std::string_view::npos) {
    if (buffer.size() > limits.max_line_bytes) {
      return Problem(414, "the request line is longer than " + std::to_string(limits.max_line_bytes) + " bytes");
    }
    return std::nullopt;
  }
  if (first_lf > limits.max_line_bytes) {
    return Problem(414, "the request line is longer than " + std::to_string(limits.max_line_bytes) + " bytes");
  }
  if (buffer.size() > limits.max_head_bytes) {
    return Problem(431, "the request head (request line and header fields) is larger than " +
                            std::to_string(limits.max_head_bytes) + " bytes");
  }
  const size_t last_lf = buffer.rfind('\n');
  if (buffer.size() - last_lf - 1 > limits.max_line_bytes) {
    return Problem(431, "a header field is longer than " + std::to_string(limits.max_line_bytes) + " bytes");
  }
  return std::nullopt;
}

std::optional<HttpProblem> ParseHead(std::string_view head, const ParseLimits& limits, RequestHead* out) {
  *out = RequestHead{};
  if (head.size() > limits.max_head_bytes) {
    return Problem(431, "the request head (request line and header fields) is larger than " +
                            std::to_string(limits.max_head_bytes) + " bytes");
  }
  size_t pos = 0;
  auto next_line = [&]() -> std::string_view {
    size_t lf = head.find('\n', pos);
    if (lf == std::string_view::npos) lf = head.size();
    std::string_view line = head.substr(pos, lf - pos);
    pos = lf + 1;
    return line;
  };
  std::optional<std::string_view> request_line = StripLineEnd(next_line());
  if (!request_line) return Problem(400, "a bare CR in the request line");
  if (request_line->size() > limits.max_line_bytes) {
    return Problem(414, "the request line is longer than " + std::to_string(limits.max_line_bytes) + " bytes");
  }
  if (std::optional<HttpProblem> p = ParseRequestLine(*request_line, out)) return p;

  size_t fields = 0;
  for (;;) {
    if (pos >= head.size()) return Problem(400, "the request head does not end with a blank line");
    std::optional<std::string_view> line = StripLineEnd(next_line());
    if (!line) return Problem(400, "a bare CR in a header field");
    if (line->empty()) break;
    if (line->size() > limits.max_line_bytes) {
      return Problem(431, "a header field is longer than " + std::to_string(limits.max_line_bytes) + " bytes");
    }
    if (++fields > limits.max_headers) {
      return Problem(431, "more than " + std::to_string(limits.max_headers) + " header fields");
    }
    if (line->front() == ' ' || line->front() == '\t') {
      return Problem(400, "a header field continues on the next line (obsolete line folding)");
    }
    const size_t colon = line->find(':');
    if (colon == std::string_view::npos) {
      return Problem(400, "a header field without ':' ('" +
                              std::string(line->substr(0, std::min<size_t>(line->size(), 40))) + "')");
    }
    const std::string_view name = line->substr(0, colon);
    if (!IsToken(name)) {
      return Problem(400, "malformed header field name '" +
                              std::string(name.substr(0, std::min<size_t>(40, name.size()))) +
                              "' (no blanks before the ':')");
    }
    const std::string_view value = TrimBlanks(line->substr(colon + 1));
    for (char ch : value) {
      const auto c = static_cast<unsigned char>(ch);
      if ((c < 0x20 && c != '\t') || c == 0x7f) {
        return Problem(400, "the value of header field '" + std::string(name) + "' holds a control character");
      }
    }
    out->headers.emplace(Lower(name), std::string(value));
  }

  // Body framing (RFC 9112 6.3).
  std::vector<std::string> codings;
  for (auto [it, end] = out->headers.equal_range("transfer-encoding"); it != end; ++it) {
    for (std::string& c : ListElements(it->second)) codings.push_back(std::move(c));
  }
  const bool has_te = out->headers.count("transfer-encoding") > 0;
  const bool has_cl = out->headers.count("content-length") > 0;
  if (has_te && has_cl) return Problem(400, "both Transfer-Encoding and Content-Length: send one of them");
  if (has_te) {
    if (codings.size() != 1 || codings[0] != "chunked") {
      return Problem(501, "the only transfer coding served is 'chunked'");
    }
    out->framing = RequestHead::Framing::kChunked;
  } else if (has_cl) {
    std::optional<uint64_t> length;
    for (auto [it, end] = out->headers.equal_range("content-length"); it != end; ++it) {
      const std::string& v = it->second;
      if (v.empty() || v.size() > 18 || !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return Problem(400, "Content-Length must be a decimal number of at most 18 digits, not '" +
                                v.substr(0, std::min<size_t>(v.size(), 40)) + "'");
      }
      const uint64_t n = std::stoull(v);
      if (length && *length != n) return Problem(400, "several Content-Length fields disagree");
      length = n;
    }
    out->framing = RequestHead::Framing::kLength;
    out->content_length = *length;
  }

  out->keep_alive = out->minor_version >= 1;
  for (auto [it, end] = out->headers.equal_range("connection"); it != end; ++it) {
    for (const std::string& option : ListElements(it->second)) {
      if (option == "close") out->keep_alive = false;
      if (option == "keep-alive" && out->minor_version == 0) out->keep_alive = true;
    }
  }
  if (auto it = out->headers.find("expect"); it != out->headers.end()) {
    if (Lower(it->second) != "100-continue") {
      return Problem(417, "the only expectation served is 'Expect: 100-continue'");
    }
    out->expect_continue = out->minor_version >= 1;
  }
  return std::nullopt;
}

// ---- BodyDecoder ----

BodyDecoder BodyDecoder::For(const RequestHead& head, const ParseLimits& limits) {
  BodyDecoder d;
  d.limits_ = limits;
  switch (head.framing) {
    case RequestHead::Framing::kNone:
      d.state_ = State::kDone;
      break;
    case RequestHead::Framing::kLength:
      d.remaining_ = head.content_length;
      d.state_ = head.content_length == 0 ? State::kDone : State::kLength;
      break;
    case RequestHead::Framing::kChunked:
      d.state_ = State::kChunkSize;
      break;
  }
  return d;
}

size_t BodyDecoder::Feed(std::string_view in, std::string* body, size_t limit, std::optional<HttpProblem>* problem) {
  auto fail = [&](int status, std::string message) -> size_t {
    state_ = State::kFailed;
    *problem = HttpProblem{status, std::move(message)};
    return 0;
  };
  auto too_large = [&](uint64_t total) {
    return fail(413, "the request body has " + (state_ == State::kLength ? std::string() : std::string("at least ")) +
                         std::to_string(total) + " bytes; the limit is " + std::to_string(limit));
  };
  // One line (chunk size or trailer) is collected in line_; true once it is complete (without its line end).
  size_t used = 0;
  auto take_line = [&](bool* complete) -> bool {
    const size_t lf = in.find('\n', used);
    const size_t end = lf == std::string_view::npos ? in.size() : lf;
    if (line_.size() + (end - used) > limits_.max_line_bytes) return false;
    line_.append(in.substr(used, end - used));
    used = lf == std::string_view::npos ? in.size() : lf + 1;
    *complete = lf != std::string_view::npos;
    if (*complete && !line_.empty() && line_.back() == '\r') line_.pop_back();
    return true;
  };

  if (state_ == State::kFailed) return 0;
  if (state_ == State::kLength && received_ + remaining_ > limit) return too_large(received_ + remaining_);
  while (used < in.size() && state_ != State::kDone) {
    switch (state_) {
      case State::kLength: {
        if (received_ + remaining_ > limit) return too_large(received_ + remaining_);
        const size_t take = static_cast<size_t>(std::min<uint64_t>(remaining_, in.size() - used));
        body->append(in.substr(used, take));
        used += take;
        received_ += take;
        remaining_ -= take;
        if (remaining_ == 0) state_ = State::kDone;
        break;
      }
      case State::kChunkSize: {
        bool complete = false;
        if (!take_line(&complete)) {
          return fail(400, "a chunk-size line is longer than " + std::to_string(limits_.max_line_bytes) + " bytes");
        }
        if (!complete) break;
        std::string_view line = line_;
        size_t digits = 0;
        uint64_t size = 0;
        while (digits < line.size() && HexValue(line[digits]) >= 0) {
          if (digits == 16) return fail(400, "a chunk size has more than 16 hex digits");
          size = size * 16 + static_cast<uint64_t>(HexValue(line[digits]));
          ++digits;
        }
        std::string_view rest = TrimBlanks(line.substr(digits));
        if (digits == 0 || (!rest.empty() && rest.front() != ';') || line_.find('\r') != std::string::npos) {
          return fail(400, "malformed chunk size '" + line_.substr(0, std::min<size_t>(line_.size(), 40)) +
                               "' (expected hex digits)");
        }
        line_.clear();
        if (size == 0) {
          state_ = State::kTrailer;
          break;
        }
        if (size > limit || received_ + size > limit) return too_large(received_ + size);
        remaining_ = size;
        state_ = State::kChunkData;
        break;
      }
      case State::kChunkData: {
        const size_t take = static_cast<size_t>(std::min<uint64_t>(remaining_, in.size() - used));
        body->append(in.substr(used, take));
        used += take;
        received_ += take;
        remaining_ -= take;
        if (remaining_ == 0) state_ = State::kChunkDataEnd;
        break;
      }
      case State::kChunkDataEnd: {
        const char c = in[used++];
        if (c == '\r' && line_.empty()) {
          line_ = "\r";
        } else if (c == '\n') {
          line_.clear();
          state_ = State::kChunkSize;
        } else {
          return fail(400, "chunk data is longer than its chunk size (no CRLF after it)");
        }
        break;
      }
      case State::kTrailer: {
        bool complete = false;
        if (!take_line(&complete)) {
          return fail(431, "a trailer field is longer than " + std::to_string(limits_.max_line_bytes) + " bytes");
        }
        if (!complete) break;
        if (line_.empty()) {
          state_ = State::kDone;
          break;
        }
        trailer_bytes_ += line_.size();
        if (++trailers_ > limits_.max_headers || trailer_bytes_ > limits_.max_head_bytes) {
          return fail(431, "the trailer fields are larger than the header limits");
        }
        const size_t colon = line_.find(':');
        if (colon == std::string::npos || !IsToken(std::string_view(line_).substr(0, colon)) ||
            line_.find('\r') != std::string::npos) {
          return fail(400, "a malformed trailer field after the last chunk");
        }
        line_.clear();  // trailer fields are not used
        break;
      }
      case State::kDone:
      case State::kFailed:
        break;
    }
  }
  return used;
}

}  // namespace iptkit::rest::http
