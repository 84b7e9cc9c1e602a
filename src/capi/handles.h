// The C ABI's handle registry and error state (include/iptkit/c/iptkit.h).
//
// A handle given to C callers is never a pointer to the object: it is a 64-bit value "magic | generation | slot"
// that the registry resolves. Freeing a handle bumps its slot's generation, so a stale handle, a handle of another
// type or a made-up value is refused without ever being dereferenced (also under ASan, and also where a pointer
// would have been reused by malloc). Resolving returns a shared_ptr, so an object stays alive for the duration of a
// call even if another thread frees its handle meanwhile.
// Thread-safety: every function here is safe to call concurrently.
#ifndef IPTKIT_SRC_CAPI_HANDLES_H_
#define IPTKIT_SRC_CAPI_HANDLES_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "iptkit/c/iptkit.h"
#include "iptkit/status.h"

namespace iptkit::capi {

enum class Kind : uint8_t { kFirewall = 1, kRuleset, kTxn, kError };

// Every object behind a handle. Each has its own mutex: calls on one handle are serialized.
struct Object {
  virtual ~Object() = default;
  std::mutex mu;
};

// New handle value for `object` (never 0).
uintptr_t Register(Kind kind, std::shared_ptr<Object> object);
// The object of a live handle of that kind, or InvalidArgument naming the expected type.
Result<std::shared_ptr<Object>> Resolve(uintptr_t handle, Kind kind);
// Resolve and forget the handle (its slot's generation moves on).
Result<std::shared_ptr<Object>> Unregister(uintptr_t handle, Kind kind);

template <typename T>
Result<std::shared_ptr<T>> ResolveAs(const void* handle, Kind kind) {
  IPTKIT_ASSIGN_OR_RETURN(std::shared_ptr<Object> object, Resolve(reinterpret_cast<uintptr_t>(handle), kind));
  return std::static_pointer_cast<T>(object);
}

// An error handed out through `iptkit_error **`.
struct ErrorObject : Object {
  Status status;
  std::map<std::string, std::string> details;  // StatusDetails as text, by name
};

// The details of a status as text, by the names iptkit_error_detail takes.
std::map<std::string, std::string> DetailsText(const StatusDetails& details);

// Records the outcome of a status-returning call: the thread's last error (set, or cleared on success) and *err.
// Returns the C code. Never throws.
int Finish(const Status& status, iptkit_error** err) noexcept;
// Sets the thread's last error without touching an out-parameter (accessors that return values directly).
void SetLastError(const Status& status) noexcept;

int last_error_code() noexcept;
const char* last_error_message() noexcept;
const char* last_error_detail(const char* name) noexcept;

// Runs `fn` (returning Status) with every exception turned into Internal, then Finish.
template <typename F>
int Entry(iptkit_error** err, F&& fn) noexcept {
  Status status;
  try {
    status = fn();
  } catch (const std::bad_alloc&) {
    return Finish(Status(StatusCode::kInternal, "out of memory"), err);
  } catch (const std::exception& e) {
    return Finish(Status::Internal(std::string("unexpected exception: ") + e.what()), err);
  } catch (...) {
    return Finish(Status::Internal("unexpected exception"), err);
  }
  return Finish(status, err);
}

// Runs `fn` (returning Result<T>) for accessors that return a value directly: `fallback` on error, which is
// recorded as the last error; the last error is left alone on success.
template <typename T, typename F>
T Accessor(T fallback, F&& fn) noexcept {
  try {
    Result<T> result = fn();
    if (result.ok()) return *result;
    SetLastError(result.status());
  } catch (...) {
    SetLastError(Status::Internal("unexpected exception"));
  }
  return fallback;
}

}  // namespace iptkit::capi

#endif  // IPTKIT_SRC_CAPI_HANDLES_H_
