#include "src/fleet/etcd_client.h"

#include <charconv>
#include <nlohmann/json.hpp>
#include <utility>

namespace iptkit::fleet {
namespace {

using Json = nlohmann::json;

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string Base64(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v =
        (static_cast<uint8_t>(in[i]) << 16) | (static_cast<uint8_t>(in[i + 1]) << 8) | static_cast<uint8_t>(in[i + 2]);
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += kB64[v & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = static_cast<uint8_t>(in[i]) << 16;
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = (static_cast<uint8_t>(in[i]) << 16) | (static_cast<uint8_t>(in[i + 1]) << 8);
    out += kB64[v >> 18];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

Result<std::string> Unbase64(std::string_view in) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    int v = val(c);
    if (v < 0) return Status::Internal("etcd sent bad base64");
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

// grpc-gateway writes int64 as a JSON string; accept a number too. Absent = 0.
int64_t Int(const Json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end()) return 0;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_string()) {
    const std::string& s = it->get_ref<const std::string&>();
    int64_t v = 0;
    std::from_chars(s.data(), s.data() + s.size(), v);
    return v;
  }
  return 0;
}

std::string Str(const Json& j, const char* name) {
  auto it = j.find(name);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

Result<KeyValue> ParseKv(const Json& j) {
  KeyValue kv;
  IPTKIT_ASSIGN_OR_RETURN(kv.key, Unbase64(Str(j, "key")));
  IPTKIT_ASSIGN_OR_RETURN(kv.value, Unbase64(Str(j, "value")));
  kv.create_revision = Int(j, "create_revision");
  kv.mod_revision = Int(j, "mod_revision");
  kv.version = Int(j, "version");
  kv.lease = Int(j, "lease");
  return kv;
}

// gRPC status codes (google.golang.org/grpc/codes) as etcd's gateway reports them.
Status FromGrpc(int code, const std::string& message) {
  std::string m = "etcd: " + message;
  // etcd 3.4 reports a missing or refused login as InvalidArgument.
  if (message.find("authentication failed") != std::string::npos ||
      message.find("user name is empty") != std::string::npos ||
      message.find("user name not found") != std::string::npos) {
    return Status::PermissionDenied(m);
  }
  switch (code) {
    case 3:  // InvalidArgument
      return Status::InvalidArgument(m);
    case 5:  // NotFound
      return Status::NotFound(m);
    case 6:  // AlreadyExists
      return Status::AlreadyExists(m);
    case 7:   // PermissionDenied
    case 16:  // Unauthenticated
      return Status::PermissionDenied(m);
    case 9:  // FailedPrecondition
      return Status::FailedPrecondition(m);
    case 11:  // OutOfRange: "mvcc: required revision has been compacted" / "is a future revision"
      return Status::FailedPrecondition(m).WithReason(message.find("compacted") != std::string::npos ? "compacted"
                                                                                                     : "future");
    case 10:  // Aborted
      return Status::Aborted(m);
    case 4:   // DeadlineExceeded
    case 14:  // Unavailable
      return Status::Unavailable(m);
    default:
      return Status::Internal(m + " (gRPC code " + std::to_string(code) + ")");
  }
}

bool IsInvalidToken(int code, const std::string& message) {
  return code == 16 && message.find("invalid auth token") != std::string::npos;
}

const char* TargetName(TxnCompare::Target t) {
  switch (t) {
    case TxnCompare::Target::kVersion:
      return "VERSION";
    case TxnCompare::Target::kCreate:
      return "CREATE";
    case TxnCompare::Target::kMod:
      return "MOD";
    case TxnCompare::Target::kValue:
      return "VALUE";
  }
  return "MOD";
}

const char* ResultName(TxnCompare::Result r) {
  switch (r) {
    case TxnCompare::Result::kEqual:
      return "EQUAL";
    case TxnCompare::Result::kGreater:
      return "GREATER";
    case TxnCompare::Result::kLess:
      return "LESS";
    case TxnCompare::Result::kNotEqual:
      return "NOT_EQUAL";
  }
  return "EQUAL";
}

Json OpJson(const TxnOp& op) {
  if (op.kind == TxnOp::Kind::kPut) {
    Json put = {{"key", Base64(op.key)}, {"value", Base64(op.value)}};
    if (op.lease != 0) put["lease"] = std::to_string(op.lease);
    return {{"request_put", put}};
  }
  Json del = {{"key", Base64(op.key)}};
  if (!op.range_end.empty()) del["range_end"] = Base64(op.range_end);
  return {{"request_delete_range", del}};
}

// Thrown nowhere: nlohmann's parse without exceptions.
Result<Json> ParseJson(const std::string& text, std::string_view what) {
  Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::Internal("etcd: unparsable answer to " + std::string(what) + ": " + text.substr(0, 200));
  }
  return j;
}

}  // namespace

std::string PrefixEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    if (static_cast<uint8_t>(end.back()) < 0xff) {
      end.back() = static_cast<char>(static_cast<uint8_t>(end.back()) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

Result<std::unique_ptr<EtcdClient>> EtcdClient::Create(EtcdOptions options) {
  if (options.endpoints.empty()) return Status::InvalidArgument("etcd: no endpoint given");
  std::unique_ptr<EtcdClient> c(new EtcdClient());
  for (const std::string& url : options.endpoints) {
    IPTKIT_ASSIGN_OR_RETURN(Endpoint ep, ParseEndpoint(url));
    c->endpoints_.push_back(std::move(ep));
  }
  IPTKIT_ASSIGN_OR_RETURN(c->http_, HttpClient::Create(options.tls));
  c->options_ = std::move(options);
  return c;
}

EtcdClient::~EtcdClient() = default;

std::string EtcdClient::Token() {
  std::lock_guard<std::mutex> lock(mu_);
  return token_;
}

Result<std::string> EtcdClient::CallOnce(std::string_view path, const std::string& body, const std::string& token) {
  size_t first;
  {
    std::lock_guard<std::mutex> lock(mu_);
    first = preferred_;
  }
  Headers headers;
  if (!token.empty()) headers.emplace_back("Authorization", token);
  Status last;
  for (size_t i = 0; i < endpoints_.size(); ++i) {
    size_t idx = (first + i) % endpoints_.size();
    auto deadline = Clock::now() + options_.request_timeout;
    Result<HttpResponse> r =
        http_->Post(endpoints_[idx], path, body, headers, deadline, &interrupter_, options_.max_response_bytes);
    if (!r.ok()) {
      last = r.status();
      if (interrupter_.fired()) return last;
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      preferred_ = idx;
    }
    if (r->status == 200) return std::move(r->body);
    Json j = Json::parse(r->body, nullptr, false);
    if (j.is_object() && j.contains("code")) {
      std::string message = Str(j, "message");
      if (message.empty()) message = Str(j, "error");
      Status s = FromGrpc(static_cast<int>(Int(j, "code")), message);
      if (IsInvalidToken(static_cast<int>(Int(j, "code")), message)) s = s.WithReason("invalid_token");
      return s;
    }
    return Status::Unavailable("etcd " + endpoints_[idx].ToString() + std::string(path) + ": HTTP " +
                               std::to_string(r->status) + ": " + r->body.substr(0, 200));
  }
  return last;
}

Status EtcdClient::Authenticate() {
  Json req = {{"name", options_.user}, {"password", options_.password}};
  IPTKIT_ASSIGN_OR_RETURN(std::string body, CallOnce("/v3/auth/authenticate", req.dump(), ""));
  IPTKIT_ASSIGN_OR_RETURN(Json j, ParseJson(body, "authenticate"));
  std::string token = Str(j, "token");
  if (token.empty()) return Status::PermissionDenied("etcd: authentication as " + options_.user + " gave no token");
  std::lock_guard<std::mutex> lock(mu_);
  token_ = std::move(token);
  return Status::Ok();
}

Result<std::string> EtcdClient::Call(std::string_view path, const std::string& body) {
  if (options_.user.empty()) return CallOnce(path, body, "");
  std::string token = Token();
  if (token.empty()) {
    IPTKIT_RETURN_IF_ERROR(Authenticate());
    token = Token();
  }
  Result<std::string> r = CallOnce(path, body, token);
  if (!r.ok() && r.status().details().reason == "invalid_token") {
    IPTKIT_RETURN_IF_ERROR(Authenticate());
    r = CallOnce(path, body, Token());
  }
  return r;
}

Result<RangeResult> EtcdClient::Range(std::string_view key, std::string_view range_end, int64_t revision,
                                      int64_t limit) {
  Json req = {{"key", Base64(key)}};
  if (!range_end.empty()) req["range_end"] = Base64(range_end);
  if (revision > 0) req["revision"] = std::to_string(revision);
  if (limit > 0) req["limit"] = std::to_string(limit);
  IPTKIT_ASSIGN_OR_RETURN(std::string body, Call("/v3/kv/range", req.dump()));
  IPTKIT_ASSIGN_OR_RETURN(Json j, ParseJson(body, "range"));
  RangeResult out;
  out.revision = j.contains("header") ? Int(j["header"], "revision") : 0;
  out.count = Int(j, "count");
  out.more = j.value("more", false);
  if (auto it = j.find("kvs"); it != j.end() && it->is_array()) {
    for (const Json& kv : *it) {
      IPTKIT_ASSIGN_OR_RETURN(KeyValue parsed, ParseKv(kv));
      out.kvs.push_back(std::move(parsed));
    }
  }
  return out;
}

Result<int64_t> EtcdClient::Put(std::string_view key, std::string_view value, int64_t lease) {
  Json req = {{"key", Base64(key)}, {"value", Base64(value)}};
  if (lease != 0) req["lease"] = std::to_string(lease);
  IPTKIT_ASSIGN_OR_RETURN(std::string body, Call("/v3/kv/put", req.dump()));
  IPTKIT_ASSIGN_OR_RETURN(Json j, ParseJson(body, "put"));
  return j.contains("header") ? Int(j["header"], "revision") : 0;
}

Result<int64_t> EtcdClient::Delete(std::string_view key, std::string_view range_end) {
  Json req = {{"key", Base64(key)}};
  if (!range_end.empty()) req["range_end"] = Base64(range_end);
  IPTKIT_ASSIGN_OR_RETURN(std::string body, Call("/v3/kv/deleterange", req.dump()));
  IPTKIT_ASSIGN_OR_RETURN(Json j, ParseJson(body, "deleterange"));
  return j.contains("header") ? Int(j["header"], "revision") : 0;
}

Result<TxnResult> EtcdClient::Txn(const TxnRequest& request) {
  Json compare = Json::array();
  for (const TxnCompare& c : request.compare) {
    Json cj = {{"key", Base64(c.key)}, {"target", TargetName(c.target)}, {"result", ResultName(c.result)}};
    switch (c.target) {
      case TxnCompare::Target::kVersion:
        cj["version"] = std::to_string(c.number);
        break;
      case TxnCompare::Target::kCreate:
        cj["create_revision"] = std::to_string(c.number);
        break;
      case TxnCompare::Target::kMod:
        cj["mod_revision"] = std::to_string(c.number);
        break;
      case TxnCompare::Target::kValue:
        cj["value"] = Base64(c.value);
        break;
    }
    compare.push_back(std::move(cj));
  }
  Json success = Json::array();
  for (const TxnOp& op : request.success) success.push_back(OpJson(op));
  Json failure = Json::array();
  for (const TxnOp& op : request.failure) failure.push_back(OpJson(op));
  Json req = {{"compare", compare}, {"success", success}, {"failure", failure}};
  IPTKIT_ASSIGN_OR_RETURN(std::string body, Call("/v3/kv/txn", req.dump()));
  IPTKIT_ASSIGN_OR_RETURN(Json j, ParseJson(body, "txn"));
  TxnResult out;
  out.succeeded = j.value("succeeded", false);
  out.revision = j.contains("header") ? Int(j["header"], "revision") : 0;
  return out;
}

Result<int64_t> EtcdClient::LeaseGrant(int64_t ttl_seconds) {
  Json req = {{"TTL", std::to_string(ttl_seconds)}};
  IPTKIT_ASSIGN_OR_RETURN(std::string body, Call("/v3/lease/grant", req.dump()));
  IPTKIT_ASSIGN_OR_RETURN(Json j, ParseJson(body, "lease grant"));
  if (!Str(j, "error").empty()) return Status::Unavailable("etcd: lease grant: " + Str(j, "error"));
  int64_t id = Int(j, "ID");
  if (id == 0) return Status::Internal("etcd: lease grant returned no ID");
  return id;
}

Result<int64_t> EtcdClient::LeaseKeepAlive(int64_t id) {
  Json req = {{"ID", std::to_string(id)}};
  IPTKIT_ASSIGN_OR_RETURN(std::string body, Call("/v3/lease/keepalive", req.dump()));
  // A stream of one message: {"result":{...,"TTL":"10"}} (or {"error":{...}}), then the end of the stream.
  std::string first = body.substr(0, body.find('\n'));
  IPTKIT_ASSIGN_OR_RETURN(Json j, ParseJson(first, "lease keepalive"));
  if (auto e = j.find("error"); e != j.end() && e->is_object()) {
    return FromGrpc(static_cast<int>(Int(*e, "grpc_code")), Str(*e, "message"));
  }
  Json result = j.value("result", Json::object());
  int64_t ttl = Int(result, "TTL");
  if (ttl <= 0) return Status::NotFound("etcd: lease " + std::to_string(id) + " expired or revoked");
  return ttl;
}

Status EtcdClient::LeaseRevoke(int64_t id) {
  Json req = {{"ID", std::to_string(id)}};
  return Call("/v3/lease/revoke", req.dump()).status();
}

Status EtcdClient::Compact(int64_t revision) {
  Json req = {{"revision", std::to_string(revision)}, {"physical", true}};
  return Call("/v3/kv/compaction", req.dump()).status();
}

Result<std::unique_ptr<WatchStream>> EtcdClient::Watch(std::string_view key, std::string_view range_end,
                                                       int64_t start_revision) {
  Json create = {{"key", Base64(key)}};
  if (!range_end.empty()) create["range_end"] = Base64(range_end);
  if (start_revision > 0) create["start_revision"] = std::to_string(start_revision);
  std::string body = Json{{"create_request", create}}.dump();
  for (int attempt = 0;; ++attempt) {
    if (!options_.user.empty() && Token().empty()) IPTKIT_RETURN_IF_ERROR(Authenticate());
    Headers headers;
    std::string token = Token();
    if (!token.empty()) headers.emplace_back("Authorization", token);
    size_t first;
    {
      std::lock_guard<std::mutex> lock(mu_);
      first = preferred_;
    }
    Status last;
    std::unique_ptr<WatchStream> watch;
    for (size_t i = 0; i < endpoints_.size() && watch == nullptr; ++i) {
      size_t idx = (first + i) % endpoints_.size();
      auto opened = http_->OpenStream(endpoints_[idx], "/v3/watch", body, headers,
                                      Clock::now() + options_.request_timeout, &interrupter_);
      if (!opened.ok()) {
        last = opened.status();
        if (interrupter_.fired()) return last;
        continue;
      }
      if ((*opened)->status() != 200) {
        std::string text = (*opened)->ReadAll(64 << 10, Clock::now() + options_.request_timeout).value_or("");
        return Status::Unavailable("etcd " + endpoints_[idx].ToString() + "/v3/watch: HTTP " +
                                   std::to_string((*opened)->status()) + ": " + text.substr(0, 200));
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        preferred_ = idx;
      }
      watch.reset(new WatchStream());
      watch->stream_ = std::move(opened).value();
      watch->max_message_ = options_.max_watch_message_bytes;
    }
    if (watch == nullptr) return last;
    // The first message confirms the watch (or says why not).
    // etcd 3.4 refuses a watch with `created` and `canceled` together (an expired token looks like "permission
    // denied" there: the stream carries no auth error), so a refusal is retried once with a fresh token.
    Result<WatchStream::Message> m = watch->Next();
    if (m.ok() && m->created && !m->canceled) return watch;
    Status s = m.ok() ? Status::Internal("etcd: a watch answered without confirming it") : m.status();
    if (m.ok() && m->canceled) {
      s = m->compact_revision > 0 ? Status::FailedPrecondition("etcd: watch start revision " +
                                                               std::to_string(start_revision) + " is compacted")
                                        .WithReason("compacted")
                                  : Status::PermissionDenied("etcd: watch refused: " + m->cancel_reason);
    }
    if (attempt == 0 && (s.details().reason == "invalid_token" ||
                         (!options_.user.empty() && s.code() == StatusCode::kPermissionDenied))) {
      IPTKIT_RETURN_IF_ERROR(Authenticate());
      continue;
    }
    return s;
  }
}

Result<WatchStream::Message> WatchStream::Next() {
  for (;;) {
    size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      if (line.find_first_not_of(" \r\t") == std::string::npos) continue;
      IPTKIT_ASSIGN_OR_RETURN(Json j, ParseJson(line, "watch"));
      if (auto e = j.find("error"); e != j.end() && e->is_object()) {
        int code = static_cast<int>(Int(*e, "grpc_code"));
        std::string message = Str(*e, "message");
        Status s = FromGrpc(code, message);
        if (IsInvalidToken(code, message)) s = s.WithReason("invalid_token");
        return s;
      }
      Json r = j.value("result", Json::object());
      Message m;
      if (auto h = r.find("header"); h != r.end()) m.revision = Int(*h, "revision");
      m.created = r.value("created", false);
      m.canceled = r.value("canceled", false);
      m.compact_revision = Int(r, "compact_revision");
      m.cancel_reason = Str(r, "cancel_reason");
      if (auto ev = r.find("events"); ev != r.end() && ev->is_array()) {
        for (const Json& e : *ev) {
          WatchEvent event;
          event.type = Str(e, "type") == "DELETE" ? WatchEvent::Type::kDelete : WatchEvent::Type::kPut;
          IPTKIT_ASSIGN_OR_RETURN(event.kv, ParseKv(e.value("kv", Json::object())));
          m.events.push_back(std::move(event));
        }
      }
      return m;
    }
    if (buffer_.size() > max_message_) {
      return Status::Unavailable("etcd: a watch message larger than " + std::to_string(max_message_) + " bytes");
    }
    IPTKIT_ASSIGN_OR_RETURN(bool more, stream_->Next(&buffer_, Clock::time_point::max()));
    if (!more) return Status::Unavailable("etcd: the watch stream ended");
  }
}

}  // namespace iptkit::fleet
