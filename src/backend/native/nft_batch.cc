#include "src/backend/native/nft_batch.h"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <libnftnl/batch.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/rule.h>
#include <libnftnl/table.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>

#include <algorithm>
#include <cstring>

namespace iptkit::backend::native {
namespace {

// Headroom for one message: the largest xt payloads are a few KiB; a rule carries a handful of them.
constexpr size_t kMessageRoom = 256 * 1024;

}  // namespace

char* NftBatch::Reserve() {
  if (buf_.size() < used_ + kMessageRoom) {
    // Room for a second message at once: a one-rule batch (BEGIN, the rule, END) then needs one allocation, not a
    // second one twice the size with a copy of the first.
    const size_t grown = std::max(buf_.size() * 2, used_ + 2 * kMessageRoom);
    buf_.resize(used_);  // a reallocation then copies the messages only, not the room after them
    buf_.resize(grown);
  }
  std::memset(buf_.data() + used_, 0, sizeof(nlmsghdr) + 64);  // the builders expect a clean header
  return buf_.data() + used_;
}

void NftBatch::Commit(size_t offset) {
  const auto* nlh = reinterpret_cast<const nlmsghdr*>(buf_.data() + offset);
  used_ = offset + MNL_ALIGN(nlh->nlmsg_len);
  ++messages_;
}

void NftBatch::Begin(std::optional<uint32_t> generation) {
  const size_t offset = used_;
  begin_seq_ = next_seq_++;
  nlmsghdr* nlh = nftnl_batch_begin(Reserve(), begin_seq_);
  if (generation) mnl_attr_put_u32(nlh, NFTA_GEN_ID, htonl(*generation));
  Commit(offset);
}

uint32_t NftBatch::AddTable(uint16_t type, uint16_t family, uint16_t flags, const nftnl_table* table) {
  const size_t offset = used_;
  const uint32_t seq = next_seq_++;
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(Reserve(), type, family, flags, seq);
  nftnl_table_nlmsg_build_payload(nlh, table);
  Commit(offset);
  return seq;
}

uint32_t NftBatch::AddChain(uint16_t type, uint16_t family, uint16_t flags, const nftnl_chain* chain) {
  const size_t offset = used_;
  const uint32_t seq = next_seq_++;
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(Reserve(), type, family, flags, seq);
  nftnl_chain_nlmsg_build_payload(nlh, chain);
  Commit(offset);
  return seq;
}

uint32_t NftBatch::AddRule(uint16_t type, uint16_t family, uint16_t flags, const nftnl_rule* rule) {
  const size_t offset = used_;
  const uint32_t seq = next_seq_++;
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(Reserve(), type, family, flags, seq);
  nftnl_rule_nlmsg_build_payload(nlh, const_cast<nftnl_rule*>(rule));
  Commit(offset);
  return seq;
}

void NftBatch::End() {
  const size_t offset = used_;
  nftnl_batch_end(Reserve(), next_seq_++);
  Commit(offset);
}

}  // namespace iptkit::backend::native
