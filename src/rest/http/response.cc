#include "src/rest/http/response.h"

#include <cstdio>

namespace iptkit::rest::http {
namespace {

void AppendHeader(std::string* out, std::string_view name, std::string_view value) {
  out->append(name);
  out->append(": ");
  for (char c : value) out->push_back(c == '\r' || c == '\n' ? ' ' : c);
  out->append("\r\n");
}

void AppendStatusAndHeaders(std::string* out, const HttpResponse& r) {
  out->append("HTTP/1.1 ");
  out->append(std::to_string(r.status));
  out->push_back(' ');
  out->append(ReasonPhrase(r.status));
  out->append("\r\n");
  if (r.status != 204 && r.status != 304) AppendHeader(out, "Content-Type", r.content_type);
  for (const auto& [name, value] : r.headers) AppendHeader(out, name, value);
}

std::string_view CodeFor(int status) {
  switch (status) {
    case 408:
      return "request_timeout";
    case 413:
      return "payload_too_large";
    case 414:
      return "uri_too_long";
    case 417:
      return "expectation_failed";
    case 431:
      return "header_fields_too_large";
    case 500:
      return "internal";
    case 501:
      return "not_implemented";
    case 503:
      return "unavailable";
    case 505:
      return "http_version_not_supported";
    default:
      return "bad_request";
  }
}

}  // namespace

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 412:
      return "Precondition Failed";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 415:
      return "Unsupported Media Type";
    case 417:
      return "Expectation Failed";
    case 422:
      return "Unprocessable Content";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

std::string SerializeResponse(const HttpResponse& r, const Framing& framing) {
  std::string out;
  out.reserve(256 + (framing.head_only ? 0 : r.body.size()));
  AppendStatusAndHeaders(&out, r);
  if (r.status != 204 && r.status != 304) AppendHeader(&out, "Content-Length", std::to_string(r.body.size()));
  if (!framing.keep_alive) {
    AppendHeader(&out, "Connection", "close");
  } else if (framing.http10) {
    AppendHeader(&out, "Connection", "keep-alive");
  }
  out.append("\r\n");
  if (!framing.head_only && r.status != 204 && r.status != 304) out.append(r.body);
  return out;
}

std::string SerializeStreamHead(const HttpResponse& r, bool http10) {
  std::string out;
  AppendStatusAndHeaders(&out, r);
  if (!http10) AppendHeader(&out, "Transfer-Encoding", "chunked");
  // The stream ends only when the connection does.
  AppendHeader(&out, "Connection", "close");
  out.append("\r\n");
  return out;
}

std::string Chunk(std::string_view data) {
  char size[24];
  std::snprintf(size, sizeof(size), "%zx\r\n", data.size());
  std::string out = size;
  out.append(data);
  out.append("\r\n");
  return out;
}

HttpResponse ProblemResponse(int status, const std::string& message, const std::string& request_id) {
  const std::string id = request_id.empty() ? Api::RequestId("") : request_id;
  HttpResponse r;
  r.status = status;
  HttpError e = MakeError(status, std::string(CodeFor(status)), message);
  if (status == 503) e.retry_after_seconds = 1;
  r.body = ErrorBody(e, id);
  r.headers.emplace_back("X-Request-Id", id);
  r.headers.emplace_back("Cache-Control", "no-store");
  if (status == 503) r.headers.emplace_back("Retry-After", "1");
  return r;
}

}  // namespace iptkit::rest::http
