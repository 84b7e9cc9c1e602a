// Set documents of fleet mode (docs/fleet.md "A set document"): the JSON at `PREFIX/groups/GROUP/sets/NAME` — the
// set's name, type and create options (as POST /v1/sets takes them) and its entries (as the body of
// PUT /v1/sets/NAME/entries takes them), or, for a set too large for one etcd value, a manifest naming how many
// chunks `sets/NAME/chunk/N` hold the entries (as text, one entry per line) and the SHA-256 of their concatenation.
// Thread-safety: pure functions.
//
//   IPTKIT_ASSIGN_OR_RETURN(SetDoc doc, ParseSetDoc("blocklist", value));
//   if (doc.chunks) IPTKIT_ASSIGN_OR_RETURN(doc.entries, AssembleChunks(doc, chunk_values));
#ifndef IPTKIT_SRC_FLEET_SET_DOC_H_
#define IPTKIT_SRC_FLEET_SET_DOC_H_

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "iptkit/ipset.h"
#include "iptkit/status.h"

namespace iptkit::fleet {

// The largest chunk value the agent accepts and `iptkit fleet put` writes.
inline constexpr size_t kMaxChunkBytes = 512 * 1024;
// The most chunks one set may have.
inline constexpr size_t kMaxChunks = 4096;

struct SetDoc {
  std::string name;
  std::string type;
  SetOptions options;
  std::vector<SetEntrySpec> entries;  // for a chunked set: empty until AssembleChunks
  struct Chunks {
    size_t count = 0;
    std::string sha256;  // lowercase hex of the concatenated chunk values
  };
  std::optional<Chunks> chunks;
  // The canary label of the document, "k=v" (docs/fleet.md "Canary rollout"); "" for none.
  std::string canary;
};

// `key_name` is NAME of the key; the document's "name", when given, must equal it. InvalidArgument naming the JSON
// pointer of what is wrong.
Result<SetDoc> ParseSetDoc(std::string_view key_name, std::string_view text);

// The entries of a chunked set from its chunk values (in order 0..count-1): checks count, sizes and the hash
// (FailedPrecondition when they do not match the manifest: chunks still being written), then parses the text.
Result<std::vector<SetEntrySpec>> AssembleChunks(const SetDoc& doc, const std::vector<std::string>& chunk_values);

// Splits entry text into chunks of at most max_bytes each, at line ends (a line longer than max_bytes is an error).
Result<std::vector<std::string>> SplitChunks(std::string_view text, size_t max_bytes = kMaxChunkBytes);

std::string Sha256Hex(std::string_view data);

// Whether a set's live type and options satisfy the document (every option the document sets has the same value).
bool SetMatchesDoc(const SetInfo& live, const SetDoc& doc);

}  // namespace iptkit::fleet

#endif  // IPTKIT_SRC_FLEET_SET_DOC_H_
