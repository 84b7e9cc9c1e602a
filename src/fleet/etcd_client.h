// EtcdClient: etcd v3 through its JSON gateway (`POST /v3/...`, etcd 3.4 and later): Range (optionally at a
// revision), Put, Delete, Txn, leases (grant, keep-alive, revoke), Compact, and WatchStream (one watch per HTTP
// stream, NDJSON). Keys and values are bytes (base64 on the wire); revisions are int64 (strings on the wire).
//
// Endpoints: tried in order, from the one that answered last; a request fails over to the next endpoint when one
// cannot be reached. Auth: with a user, the client authenticates (`/v3/auth/authenticate`) before its first
// request and again whenever etcd answers "invalid auth token" (simple tokens expire after --auth-token-ttl), then
// repeats the request once. TLS: https:// endpoints, a CA file, a client certificate.
// Errors: Unavailable when no endpoint answers (or the deadline passed, or Interrupt); the gRPC code of etcd's
// answer otherwise (PermissionDenied, InvalidArgument, FailedPrecondition for a compacted revision (OutOfRange),
// NotFound for an expired lease), with etcd's message.
// Memory: every response is bounded (max_response_bytes; a watch message by max_watch_message_bytes).
// Thread-safety: all methods may be called from several threads at once; Interrupt wakes all of them.
//
//   IPTKIT_ASSIGN_OR_RETURN(auto etcd, EtcdClient::Create({.endpoints = {"http://127.0.0.1:2379"}}));
//   IPTKIT_ASSIGN_OR_RETURN(int64_t rev, etcd->Put("/p/groups/web/.group", "1"));
//   IPTKIT_ASSIGN_OR_RETURN(RangeResult r, etcd->Range("/p/groups/web/", PrefixEnd("/p/groups/web/")));
#ifndef IPTKIT_SRC_FLEET_ETCD_CLIENT_H_
#define IPTKIT_SRC_FLEET_ETCD_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "iptkit/status.h"
#include "src/fleet/http_client.h"

namespace iptkit::fleet {

struct EtcdOptions {
  std::vector<std::string> endpoints;  // http(s)://HOST:PORT; at least one
  std::string user;                    // "" = no auth
  std::string password;
  TlsFiles tls;
  std::chrono::milliseconds request_timeout = std::chrono::seconds(5);  // per unary request and endpoint
  size_t max_response_bytes = size_t{64} << 20;
  size_t max_watch_message_bytes = size_t{16} << 20;
};

struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  int64_t version = 0;
  int64_t lease = 0;
  friend bool operator==(const KeyValue&, const KeyValue&) = default;
};

struct RangeResult {
  int64_t revision = 0;  // the store's revision the answer is of (header.revision)
  std::vector<KeyValue> kvs;
  int64_t count = 0;
  bool more = false;
};

// The smallest key after every key that starts with `prefix` (etcd's range_end for a prefix).
std::string PrefixEnd(std::string_view prefix);

// One compare of a Txn: key's `target` compared with `value` (MOD/CREATE/VERSION: a revision or version; VALUE).
struct TxnCompare {
  enum class Target { kVersion, kCreate, kMod, kValue };
  enum class Result { kEqual, kGreater, kLess, kNotEqual };
  std::string key;
  Target target = Target::kMod;
  Result result = Result::kEqual;
  int64_t number = 0;
  std::string value;
  // key's mod_revision == revision (0: the key does not exist).
  static TxnCompare ModEquals(std::string key, int64_t revision) {
    TxnCompare c;
    c.key = std::move(key);
    c.number = revision;
    return c;
  }
};
struct TxnOp {
  enum class Kind { kPut, kDelete };
  Kind kind = Kind::kPut;
  std::string key;
  std::string value;      // put
  std::string range_end;  // delete
  int64_t lease = 0;      // put
  static TxnOp Put(std::string key, std::string value, int64_t lease = 0) {
    TxnOp op;
    op.key = std::move(key);
    op.value = std::move(value);
    op.lease = lease;
    return op;
  }
  static TxnOp Delete(std::string key, std::string range_end = {}) {
    TxnOp op;
    op.kind = Kind::kDelete;
    op.key = std::move(key);
    op.range_end = std::move(range_end);
    return op;
  }
};
struct TxnRequest {
  std::vector<TxnCompare> compare;
  std::vector<TxnOp> success;
  std::vector<TxnOp> failure;
};
struct TxnResult {
  bool succeeded = false;
  int64_t revision = 0;
};

struct WatchEvent {
  enum class Type { kPut, kDelete };
  Type type = Type::kPut;
  KeyValue kv;  // for a delete: key and mod_revision (the delete's revision)
};

// One watch on one HTTP stream.
class WatchStream {
 public:
  struct Message {
    int64_t revision = 0;  // header.revision
    bool created = false;
    // The watch ended: compact_revision > 0 when the start revision was compacted (resync from a Range).
    bool canceled = false;
    int64_t compact_revision = 0;
    std::string cancel_reason;
    std::vector<WatchEvent> events;
  };
  // The next message. Unavailable when the stream broke (etcd went away) or the client was interrupted.
  Result<Message> Next();

 private:
  friend class EtcdClient;
  std::unique_ptr<HttpStream> stream_;
  std::string buffer_;
  size_t max_message_ = 0;
};

class EtcdClient {
 public:
  // InvalidArgument for bad endpoints or TLS files. Does not connect.
  static Result<std::unique_ptr<EtcdClient>> Create(EtcdOptions options);
  ~EtcdClient();

  // Keys in [key, range_end) (range_end "" = key alone), at `revision` (0 = latest). limit 0 = all.
  Result<RangeResult> Range(std::string_view key, std::string_view range_end = {}, int64_t revision = 0,
                            int64_t limit = 0);
  // Returns the revision of the put.
  Result<int64_t> Put(std::string_view key, std::string_view value, int64_t lease = 0);
  // Deletes [key, range_end); returns the revision after it.
  Result<int64_t> Delete(std::string_view key, std::string_view range_end = {});
  Result<TxnResult> Txn(const TxnRequest& request);
  // A lease of `ttl_seconds`; returns its id.
  Result<int64_t> LeaseGrant(int64_t ttl_seconds);
  // Refreshes the lease; returns its TTL. NotFound when the lease expired or was revoked.
  Result<int64_t> LeaseKeepAlive(int64_t id);
  Status LeaseRevoke(int64_t id);
  // Compacts the history up to `revision` (tests, and operators).
  Status Compact(int64_t revision);
  // Opens a watch of [key, range_end) from `start_revision` (0 = from now) and waits for etcd to confirm it
  // (`created`). The stream waits without a deadline: end it with Interrupt.
  Result<std::unique_ptr<WatchStream>> Watch(std::string_view key, std::string_view range_end, int64_t start_revision);

  // Wakes every call blocked in this client (they return Unavailable) and keeps doing so until ResetInterrupt.
  void Interrupt() { interrupter_.Fire(); }
  void ResetInterrupt() { interrupter_.Reset(); }
  bool interrupted() const { return interrupter_.fired(); }

  const std::string& user() const { return options_.user; }

 private:
  EtcdClient() = default;
  // POSTs `body` to `path` on the first endpoint that answers, with auth; parses the JSON answer (or the error).
  Result<std::string> Call(std::string_view path, const std::string& body);
  Result<std::string> CallOnce(std::string_view path, const std::string& body, const std::string& token);
  Status Authenticate();
  std::string Token();

  EtcdOptions options_;
  std::vector<Endpoint> endpoints_;
  std::unique_ptr<HttpClient> http_;
  Interrupter interrupter_;
  std::mutex mu_;
  size_t preferred_ = 0;  // guarded by mu_
  std::string token_;     // guarded by mu_
};

}  // namespace iptkit::fleet

#endif  // IPTKIT_SRC_FLEET_ETCD_CLIENT_H_
