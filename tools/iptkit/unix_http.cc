#include "tools/iptkit/unix_http.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <optional>

#include "src/base/unique_fd.h"

namespace iptkit::cli {
namespace {

using base::UniqueFd;

bool IEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  }
  return true;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::optional<size_t> ParseDecimal(std::string_view s) {
  if (s.empty() || s.size() > 18) return std::nullopt;
  size_t n = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<size_t>(c - '0');
  }
  return n;
}

std::optional<size_t> ParseHex(std::string_view s) {
  if (s.empty() || s.size() > 15) return std::nullopt;
  size_t n = 0;
  for (char c : s) {
    int v = (c >= '0' && c <= '9')   ? c - '0'
            : (c >= 'a' && c <= 'f') ? c - 'a' + 10
            : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                     : -1;
    if (v < 0) return std::nullopt;
    n = n * 16 + static_cast<size_t>(v);
  }
  return n;
}

// Decodes a chunked body starting at `body`; nullopt while incomplete, an error when malformed.
Result<std::optional<std::string>> DecodeChunked(std::string_view body) {
  std::string out;
  size_t pos = 0;
  for (;;) {
    size_t eol = body.find("\r\n", pos);
    if (eol == std::string_view::npos) return std::optional<std::string>();
    std::string_view size_line = body.substr(pos, eol - pos);
    size_line = Trim(size_line.substr(0, size_line.find(';')));
    std::optional<size_t> size = ParseHex(size_line);
    if (!size) return Status::Unavailable("malformed chunk size '" + std::string(size_line) + "' in iptkitd's answer");
    pos = eol + 2;
    if (*size == 0) {
      // Trailer fields up to an empty line.
      for (;;) {
        size_t end = body.find("\r\n", pos);
        if (end == std::string_view::npos) return std::optional<std::string>();
        if (end == pos) return std::optional<std::string>(std::move(out));
        pos = end + 2;
      }
    }
    if (body.size() < pos + *size + 2) return std::optional<std::string>();
    out.append(body.substr(pos, *size));
    if (body.substr(pos + *size, 2) != "\r\n") return Status::Unavailable("malformed chunk in iptkitd's answer");
    pos += *size + 2;
  }
}

Status WaitFor(int fd, short events, std::chrono::milliseconds timeout, const std::string& what) {
  pollfd p{fd, events, 0};
  for (;;) {
    int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
    if (n > 0) return Status::Ok();
    if (n == 0)
      return Status::Unavailable("iptkitd did not " + what + " within " + std::to_string(timeout.count()) + " ms");
    if (errno != EINTR) return Status::Unavailable("poll: " + std::string(std::strerror(errno)));
  }
}

}  // namespace

Result<HttpAnswer> ParseHttpAnswer(std::string_view raw, bool at_eof, bool* complete) {
  *complete = false;
  size_t head_end = raw.find("\r\n\r\n");
  if (head_end == std::string_view::npos) {
    if (at_eof) return Status::Unavailable("iptkitd closed the connection before a complete answer");
    return HttpAnswer{};
  }
  std::string_view head = raw.substr(0, head_end);
  std::string_view status_line = head.substr(0, head.find("\r\n"));
  // "HTTP/1.1 200 OK"
  if (status_line.substr(0, 5) != "HTTP/" || status_line.size() < 12 || status_line[8] != ' ') {
    return Status::Unavailable("iptkitd's answer does not start with an HTTP status line: '" +
                               std::string(status_line.substr(0, 80)) + "'");
  }
  std::optional<size_t> code = ParseDecimal(status_line.substr(9, 3));
  if (!code || *code < 100 || *code > 599) {
    return Status::Unavailable("bad HTTP status in iptkitd's answer: '" + std::string(status_line.substr(0, 80)) + "'");
  }
  std::optional<size_t> content_length;
  bool chunked = false;
  size_t pos = status_line.size() + 2;
  while (pos < head.size()) {
    size_t eol = head.find("\r\n", pos);
    std::string_view line = head.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
    pos = eol == std::string_view::npos ? head.size() : eol + 2;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view name = line.substr(0, colon);
    std::string_view value = Trim(line.substr(colon + 1));
    if (IEquals(name, "Content-Length")) {
      content_length = ParseDecimal(value);
      if (!content_length) return Status::Unavailable("bad Content-Length in iptkitd's answer");
    } else if (IEquals(name, "Transfer-Encoding")) {
      chunked = IEquals(value, "chunked");
    }
  }
  std::string_view body = raw.substr(head_end + 4);
  HttpAnswer answer;
  answer.status = static_cast<int>(*code);
  if (chunked) {
    IPTKIT_ASSIGN_OR_RETURN(std::optional<std::string> decoded, DecodeChunked(body));
    if (!decoded) {
      if (at_eof) return Status::Unavailable("iptkitd's chunked answer ended early");
      return HttpAnswer{};
    }
    answer.body = std::move(*decoded);
  } else if (content_length) {
    if (body.size() < *content_length) {
      if (at_eof) return Status::Unavailable("iptkitd's answer ended early");
      return HttpAnswer{};
    }
    answer.body = std::string(body.substr(0, *content_length));
  } else if (answer.status == 204 || answer.status == 304) {
    // No body by definition.
  } else {
    if (!at_eof) return HttpAnswer{};
    answer.body = std::string(body);
  }
  *complete = true;
  return answer;
}

Result<UniqueFd> UnixHttpClient::Connect() const {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path_.empty() || socket_path_.size() >= sizeof(addr.sun_path)) {
    return Status::InvalidArgument("unix socket path '" + socket_path_ + "' is empty or too long");
  }
  std::memcpy(addr.sun_path, socket_path_.data(), socket_path_.size());
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return Status::Unavailable("socket: " + std::string(std::strerror(errno)));
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno != EINPROGRESS && errno != EAGAIN) {
      return Status::Unavailable("connect: " + std::string(std::strerror(errno)));
    }
    IPTKIT_RETURN_IF_ERROR(WaitFor(fd.get(), POLLOUT, timeout_, "accept the connection"));
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return Status::Unavailable("connect: " + std::string(std::strerror(err)));
  }
  return fd;
}

Status UnixHttpClient::StreamEvents(std::string_view target, const std::function<bool(std::string_view)>& on_data,
                                    const std::atomic<bool>& stop, std::atomic<bool>* opened) const {
  IPTKIT_ASSIGN_OR_RETURN(UniqueFd fd, Connect());
  std::string request = "GET " + std::string(target) +
                        " HTTP/1.1\r\nHost: iptkitd\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n";
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      IPTKIT_RETURN_IF_ERROR(WaitFor(fd.get(), POLLOUT, timeout_, "take the request"));
    } else {
      return Status::Unavailable("sending to iptkitd: " + std::string(std::strerror(errno)));
    }
  }
  std::string raw;       // bytes not yet taken apart
  std::string body;      // decoded body not yet split into lines
  bool in_body = false;  // the header was read
  bool chunked = false;
  char buf[16384];
  while (!stop.load()) {
    pollfd p{fd.get(), POLLIN, 0};
    int ready = ::poll(&p, 1, 100);
    if (ready < 0 && errno != EINTR) return Status::Unavailable("poll: " + std::string(std::strerror(errno)));
    if (ready <= 0) continue;
    ssize_t n = ::recv(fd.get(), buf, sizeof(buf), 0);
    if (n == 0) return Status::Ok();
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return Status::Unavailable("reading iptkitd's events: " + std::string(std::strerror(errno)));
    }
    raw.append(buf, static_cast<size_t>(n));
    if (!in_body) {
      const size_t end = raw.find("\r\n\r\n");
      if (end == std::string::npos) continue;
      const std::string_view head(raw.data(), end);
      if (head.substr(0, 12) != "HTTP/1.1 200" && head.substr(0, 12) != "HTTP/1.0 200") {
        return Status::Unavailable("iptkitd's events: " + std::string(head.substr(0, head.find('\r'))));
      }
      size_t pos = head.find("\r\n");
      while (pos != std::string_view::npos && pos < head.size()) {
        size_t next = head.find("\r\n", pos + 2);
        std::string_view line = head.substr(pos + 2, next == std::string_view::npos ? head.npos : next - pos - 2);
        size_t colon = line.find(':');
        if (colon != std::string_view::npos && IEquals(Trim(line.substr(0, colon)), "transfer-encoding") &&
            IEquals(Trim(line.substr(colon + 1)), "chunked")) {
          chunked = true;
        }
        pos = next;
      }
      raw.erase(0, end + 4);
      in_body = true;
      if (opened != nullptr) *opened = true;
    }
    if (chunked) {
      for (;;) {
        const size_t eol = raw.find("\r\n");
        if (eol == std::string::npos) break;
        std::optional<size_t> size =
            ParseHex(Trim(std::string_view(raw).substr(0, raw.find(';') < eol ? raw.find(';') : eol)));
        if (!size) return Status::Unavailable("malformed chunk in iptkitd's events");
        if (*size == 0) return Status::Ok();
        if (raw.size() < eol + 2 + *size + 2) break;
        body.append(raw, eol + 2, *size);
        raw.erase(0, eol + 2 + *size + 2);
      }
    } else {
      body += raw;
      raw.clear();
    }
    for (size_t nl = body.find('\n'); nl != std::string::npos; nl = body.find('\n')) {
      std::string_view line(body.data(), nl);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.substr(0, 5) == "data:") {
        std::string_view data = line.substr(5);
        if (!data.empty() && data.front() == ' ') data.remove_prefix(1);
        if (!on_data(data)) return Status::Ok();
      }
      body.erase(0, nl + 1);
    }
  }
  return Status::Ok();
}

Result<HttpAnswer> UnixHttpClient::Send(std::string_view method, std::string_view target, std::string_view json_body,
                                        size_t max_answer_bytes, std::string_view content_type) const {
  IPTKIT_ASSIGN_OR_RETURN(UniqueFd fd, Connect());
  std::string request;
  request.reserve(256 + json_body.size());
  request.append(method).append(" ").append(target).append(" HTTP/1.1\r\nHost: iptkitd\r\nConnection: close\r\n");
  if (!json_body.empty()) request.append("Content-Type: ").append(content_type).append("\r\n");
  if (!json_body.empty() || method == "POST" || method == "PUT") {
    request.append("Content-Length: ").append(std::to_string(json_body.size())).append("\r\n");
  }
  request.append("\r\n").append(json_body);

  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      IPTKIT_RETURN_IF_ERROR(WaitFor(fd.get(), POLLOUT, timeout_, "take the request"));
    } else {
      // The daemon may answer early (e.g. 413) and close; read that answer below.
      break;
    }
  }

  // The daemon closes the connection after its answer ("Connection: close"), so the end of the stream is the usual
  // end of the answer. An answer is also parsed early when the bytes read double, which keeps parsing linear in the
  // answer's size and still ends a read whose framing is complete.
  std::string raw;
  size_t next_parse_at = 0;
  char buf[65536];
  for (;;) {
    ssize_t n = ::recv(fd.get(), buf, sizeof(buf), 0);
    if (n > 0) {
      raw.append(buf, static_cast<size_t>(n));
      if (raw.size() > max_answer_bytes) {
        return Status::Unavailable("iptkitd's answer is larger than " + std::to_string(max_answer_bytes) + " bytes");
      }
      if (raw.size() < next_parse_at) continue;
      next_parse_at = raw.size() * 2;
      bool complete = false;
      IPTKIT_ASSIGN_OR_RETURN(HttpAnswer answer, ParseHttpAnswer(raw, false, &complete));
      if (complete) return answer;
    } else if (n == 0) {
      bool complete = false;
      return ParseHttpAnswer(raw, true, &complete);
    } else if (errno == EAGAIN || errno == EINTR) {
      IPTKIT_RETURN_IF_ERROR(WaitFor(fd.get(), POLLIN, timeout_, "answer"));
    } else if (errno == ECONNRESET && !raw.empty()) {
      bool complete = false;
      return ParseHttpAnswer(raw, true, &complete);
    } else {
      return Status::Unavailable("reading iptkitd's answer: " + std::string(std::strerror(errno)));
    }
  }
}

}  // namespace iptkit::cli
