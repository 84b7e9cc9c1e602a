#include "src/capi/handles.h"

#include <cstring>
#include <vector>

namespace iptkit::capi {
namespace {

static_assert(sizeof(uintptr_t) == 8, "the C ABI's handle encoding needs 64-bit pointers");

// Handle value: bits 63..48 magic, 47..24 generation, 23..0 slot + 1. The magic makes a handle a non-canonical
// address on x86-64 and arm64, so code that dereferences one by mistake faults at once.
constexpr uintptr_t kMagic = 0x1A7BULL << 48;
constexpr uintptr_t kMagicMask = 0xFFFFULL << 48;
constexpr uint32_t kGenerationMask = 0xFFFFFF;
constexpr uint32_t kMaxSlots = 0xFFFFFE;

struct Slot {
  uint32_t generation = 1;
  Kind kind = Kind::kFirewall;
  std::shared_ptr<Object> object;
};

struct Registry {
  std::mutex mu;
  std::vector<Slot> slots;
  std::vector<uint32_t> free_slots;
};

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: handles may be used from atexit handlers
  return *r;
}

std::string_view KindName(Kind kind) {
  switch (kind) {
    case Kind::kFirewall:
      return "iptkit_firewall";
    case Kind::kRuleset:
      return "iptkit_ruleset";
    case Kind::kTxn:
      return "iptkit_txn";
    case Kind::kError:
      return "iptkit_error";
  }
  return "handle";
}

Result<Slot*> Find(Registry& r, uintptr_t handle, Kind kind) {
  const std::string what(KindName(kind));
  if (handle == 0) return Status::InvalidArgument(what + " is NULL");
  const uint32_t index = static_cast<uint32_t>(handle & 0xFFFFFF);
  const uint32_t generation = static_cast<uint32_t>((handle >> 24) & kGenerationMask);
  if ((handle & kMagicMask) != kMagic || index == 0 || index > r.slots.size()) {
    return Status::InvalidArgument(what + ": not a handle of this library");
  }
  Slot& slot = r.slots[index - 1];
  if (slot.object == nullptr || (slot.generation & kGenerationMask) != generation) {
    return Status::InvalidArgument(what + ": stale handle (used after it was freed or closed)");
  }
  if (slot.kind != kind) {
    return Status::InvalidArgument(what + ": the handle is an " + std::string(KindName(slot.kind)));
  }
  return &slot;
}

struct LastError {
  int code = IPTKIT_OK;
  std::string message;
  std::map<std::string, std::string> details;
};

LastError& last_error() {
  thread_local LastError e;
  return e;
}

}  // namespace

uintptr_t Register(Kind kind, std::shared_ptr<Object> object) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  uint32_t index;
  if (!r.free_slots.empty()) {
    index = r.free_slots.back();
    r.free_slots.pop_back();
  } else {
    if (r.slots.size() >= kMaxSlots) throw std::bad_alloc();
    r.slots.emplace_back();
    index = static_cast<uint32_t>(r.slots.size());
  }
  Slot& slot = r.slots[index - 1];
  slot.kind = kind;
  slot.object = std::move(object);
  return kMagic | (static_cast<uintptr_t>(slot.generation & kGenerationMask) << 24) | index;
}

Result<std::shared_ptr<Object>> Resolve(uintptr_t handle, Kind kind) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  IPTKIT_ASSIGN_OR_RETURN(Slot * slot, Find(r, handle, kind));
  return slot->object;
}

Result<std::shared_ptr<Object>> Unregister(uintptr_t handle, Kind kind) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  IPTKIT_ASSIGN_OR_RETURN(Slot * slot, Find(r, handle, kind));
  std::shared_ptr<Object> object = std::move(slot->object);
  slot->object = nullptr;
  // Generation 0 is never handed out, so that a zeroed handle value never matches.
  slot->generation = (slot->generation + 1) & kGenerationMask;
  if (slot->generation == 0) slot->generation = 1;
  r.free_slots.insert(r.free_slots.begin(), static_cast<uint32_t>(slot - r.slots.data() + 1));
  return object;
}

std::map<std::string, std::string> DetailsText(const StatusDetails& d) {
  std::map<std::string, std::string> out;
  auto text = [&](const char* name, const std::optional<std::string>& v) {
    if (v) out[name] = *v;
  };
  auto number = [&](const char* name, const std::optional<int>& v) {
    if (v) out[name] = std::to_string(*v);
  };
  text("token", d.token);
  number("column", d.column);
  number("argument", d.argument);
  text("field", d.field);
  number("op_index", d.op_index);
  text("family", d.family);
  text("table", d.table);
  text("chain", d.chain);
  number("rule", d.rule);
  text("owner", d.owner);
  number("line", d.line);
  text("reason", d.reason);
  return out;
}

void SetLastError(const Status& status) noexcept {
  LastError& e = last_error();
  e.code = static_cast<int>(status.code());
  try {
    e.message = status.message();
    e.details = DetailsText(status.details());
  } catch (...) {
    e.message.clear();
    e.details.clear();
  }
}

int Finish(const Status& status, iptkit_error** err) noexcept {
  SetLastError(status);
  const int code = static_cast<int>(status.code());
  if (err != nullptr) {
    *err = nullptr;
    if (!status.ok()) {
      try {
        auto object = std::make_shared<ErrorObject>();
        object->status = status;
        object->details = DetailsText(status.details());
        *err = reinterpret_cast<iptkit_error*>(Register(Kind::kError, std::move(object)));
      } catch (...) {
        // Out of memory: the code and the last error still say what failed.
      }
    }
  }
  return code;
}

int last_error_code() noexcept { return last_error().code; }
const char* last_error_message() noexcept { return last_error().message.c_str(); }
const char* last_error_detail(const char* name) noexcept {
  if (name == nullptr) return nullptr;
  try {
    const auto& details = last_error().details;
    auto it = details.find(name);
    return it == details.end() ? nullptr : it->second.c_str();
  } catch (...) {
    return nullptr;
  }
}

}  // namespace iptkit::capi
