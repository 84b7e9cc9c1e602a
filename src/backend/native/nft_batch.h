// NftBatch: one nfnetlink batch of nf_tables messages (NFNL_MSG_BATCH_BEGIN ... NFNL_MSG_BATCH_END), the unit the
// kernel commits atomically. BATCH_BEGIN may carry the generation id of the snapshot the batch was planned on
// (NFTA_GEN_ID): the kernel then refuses the whole batch with ERESTART if anything was committed since
// (nfnetlink.c nfnetlink_rcv_batch, nf_tables_api.c nf_tables_valid_genid).
// Each message gets its own sequence number so that a kernel error or echo can be traced back to the op that
// produced it.
// Thread-safety: a value used by one thread.
//
//   NftBatch batch(first_seq);
//   batch.Begin(generation);
//   uint32_t seq = batch.AddRule(NFT_MSG_NEWRULE, NFPROTO_IPV4, NLM_F_CREATE | NLM_F_APPEND | NLM_F_ECHO, rule);
//   batch.End();
//   client->SendBatch(batch.data(), batch.messages());
#ifndef IPTKIT_SRC_BACKEND_NATIVE_NFT_BATCH_H_
#define IPTKIT_SRC_BACKEND_NATIVE_NFT_BATCH_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct nftnl_table;
struct nftnl_chain;
struct nftnl_rule;

namespace iptkit::backend::native {

// An allocator whose elements are left uninitialized by resize(): the batch buffer keeps room for a whole message
// after the last one, and zero-filling that room (hundreds of KiB, every page of it faulted in) cost more than
// building and sending a one-rule batch.
template <typename T>
struct UninitializedAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = UninitializedAllocator<U>;
  };
  UninitializedAllocator() = default;
  template <typename U>
  UninitializedAllocator(const UninitializedAllocator<U>&) noexcept {}
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
using BatchStorage = std::vector<char, UninitializedAllocator<char>>;

class NftBatch {
 public:
  // Messages are numbered from `first_seq` on. `storage` holds the messages (reused across batches; its bytes past
  // the messages are uninitialized).
  NftBatch(uint32_t first_seq, BatchStorage& storage) : buf_(storage), next_seq_(first_seq) {}

  // BATCH_BEGIN, with NFTA_GEN_ID when `generation` is set.
  void Begin(std::optional<uint32_t> generation);
  // One message each; returns its sequence number.
  uint32_t AddTable(uint16_t type, uint16_t family, uint16_t flags, const nftnl_table* table);
  uint32_t AddChain(uint16_t type, uint16_t family, uint16_t flags, const nftnl_chain* chain);
  uint32_t AddRule(uint16_t type, uint16_t family, uint16_t flags, const nftnl_rule* rule);
  void End();

  std::string_view data() const { return std::string_view(buf_.data(), used_); }
  size_t messages() const { return messages_; }
  // Messages between BATCH_BEGIN and BATCH_END.
  size_t payload_messages() const { return messages_ >= 2 ? messages_ - 2 : 0; }
  uint32_t begin_seq() const { return begin_seq_; }

 private:
  // Room for the next message at the end of the buffer; returns where it starts.
  char* Reserve();
  void Commit(size_t offset);

  BatchStorage& buf_;  // [0, used_) holds the messages; the rest is room
  size_t used_ = 0;
  uint32_t next_seq_;
  uint32_t begin_seq_ = 0;
  size_t messages_ = 0;
};

}  // namespace iptkit::backend::native

#endif  // IPTKIT_SRC_BACKEND_NATIVE_NFT_BATCH_H_
