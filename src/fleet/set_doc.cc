#include "src/fleet/set_doc.h"

#include <openssl/evp.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "src/json/set_options_json.h"

namespace iptkit::fleet {
namespace {

using Json = nlohmann::json;

Status BadField(const std::string& pointer, const std::string& why) {
  return Status::InvalidArgument(pointer + ": " + why).WithField(pointer);
}

Result<std::optional<uint32_t>> Uint(const Json& j, const std::string& pointer, const char* name, uint64_t max) {
  auto it = j.find(name);
  if (it == j.end()) return std::optional<uint32_t>();
  if (!it->is_number_unsigned() || it->get<uint64_t>() > max) {
    return BadField(pointer + "/" + name, "expected an integer 0.." + std::to_string(max));
  }
  return std::optional<uint32_t>(static_cast<uint32_t>(it->get<uint64_t>()));
}

Result<SetEntrySpec> Entry(const Json& j, const std::string& pointer) {
  SetEntrySpec e;
  if (j.is_string()) {
    e.elem = j.get<std::string>();
  } else if (j.is_object()) {
    for (auto m = j.begin(); m != j.end(); ++m) {
      if (m.key() != "entry" && m.key() != "timeout" && m.key() != "comment") {
        return BadField(pointer + "/" + m.key(), "unknown member (entry, timeout, comment)");
      }
    }
    auto it = j.find("entry");
    if (it == j.end() || !it->is_string()) return BadField(pointer + "/entry", "expected a string");
    e.elem = it->get<std::string>();
    IPTKIT_ASSIGN_OR_RETURN(e.timeout, Uint(j, pointer, "timeout", kMaxSetTimeout));
    if (auto c = j.find("comment"); c != j.end()) {
      if (!c->is_string()) return BadField(pointer + "/comment", "expected a string");
      e.comment = c->get<std::string>();
    }
  } else {
    return BadField(pointer, "expected an entry string or {\"entry\", \"timeout\", \"comment\"}");
  }
  if (e.elem.empty()) return BadField(pointer, "empty entry");
  return e;
}

}  // namespace

Result<SetDoc> ParseSetDoc(std::string_view key_name, std::string_view text) {
  Json j = Json::parse(text, nullptr, false);
  if (!j.is_object()) return Status::InvalidArgument("not a JSON object");
  static const std::vector<std::string> kKnown = {"name",   "type",   "options",       "entries",
                                                  "chunks", "canary", "canary_timeout"};
  for (auto m = j.begin(); m != j.end(); ++m) {
    if (std::find(kKnown.begin(), kKnown.end(), m.key()) == kKnown.end()) {
      return BadField("/" + m.key(), "unknown field (name, type, options, entries, chunks, canary, canary_timeout)");
    }
  }
  SetDoc d;
  d.name = std::string(key_name);
  if (d.name.empty() || d.name.size() > kMaxSetNameLength || d.name.starts_with(kTempSetPrefix)) {
    return Status::InvalidArgument("the set name '" + d.name + "' in the key: 1.." + std::to_string(kMaxSetNameLength) +
                                   " characters, not starting with " + std::string(kTempSetPrefix));
  }
  if (auto n = j.find("name"); n != j.end() && (!n->is_string() || n->get<std::string>() != d.name)) {
    return BadField("/name", "must equal the set named in the key ('" + d.name + "')");
  }
  auto t = j.find("type");
  if (t == j.end() || !t->is_string()) return BadField("/type", "required, a set type such as \"hash:ip\"");
  d.type = t->get<std::string>();
  const auto& types = SetTypes();
  if (std::find(types.begin(), types.end(), d.type) == types.end()) return BadField("/type", "unknown set type");
  if (auto o = j.find("options"); o != j.end()) {
    IPTKIT_ASSIGN_OR_RETURN(d.options, json::SetOptionsFromJson(*o, "/options"));
  }
  if (auto c = j.find("canary"); c != j.end()) {
    if (!c->is_string() || c->get<std::string>().find('=') == std::string::npos) {
      return BadField("/canary", "expected a label \"k=v\"");
    }
    d.canary = c->get<std::string>();
  }
  if (auto ct = j.find("canary_timeout");
      ct != j.end() && (!ct->is_number_unsigned() || ct->get<uint64_t>() < 1 || ct->get<uint64_t>() > 86400)) {
    return BadField("/canary_timeout", "expected 1..86400 (seconds)");
  }
  auto e = j.find("entries");
  auto c = j.find("chunks");
  if ((e == j.end()) == (c == j.end())) return BadField("/entries", "exactly one of entries and chunks is required");
  if (e != j.end()) {
    if (!e->is_array()) return BadField("/entries", "expected an array of entries");
    d.entries.reserve(e->size());
    for (size_t i = 0; i < e->size(); ++i) {
      IPTKIT_ASSIGN_OR_RETURN(SetEntrySpec entry, Entry((*e)[i], "/entries/" + std::to_string(i)));
      entry.line = static_cast<int>(i) + 1;
      d.entries.push_back(std::move(entry));
    }
    return d;
  }
  if (!c->is_object()) return BadField("/chunks", "expected {\"count\": N, \"sha256\": HEX}");
  auto count = c->find("count");
  if (count == c->end() || !count->is_number_unsigned() || count->get<uint64_t>() < 1 ||
      count->get<uint64_t>() > kMaxChunks) {
    return BadField("/chunks/count", "expected an integer 1.." + std::to_string(kMaxChunks));
  }
  auto hash = c->find("sha256");
  if (hash == c->end() || !hash->is_string() || hash->get<std::string>().size() != 64 ||
      !std::all_of(hash->get<std::string>().begin(), hash->get<std::string>().end(),
                   [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)) || (ch >= 'a' && ch <= 'f'); })) {
    return BadField("/chunks/sha256", "expected 64 lowercase hex digits");
  }
  for (auto m = c->begin(); m != c->end(); ++m) {
    if (m.key() != "count" && m.key() != "sha256") return BadField("/chunks/" + m.key(), "unknown member");
  }
  d.chunks = SetDoc::Chunks{count->get<size_t>(), hash->get<std::string>()};
  return d;
}

Result<std::vector<SetEntrySpec>> AssembleChunks(const SetDoc& doc, const std::vector<std::string>& chunk_values) {
  if (!doc.chunks) return Status::InvalidArgument("not a chunked set");
  if (chunk_values.size() != doc.chunks->count) {
    return Status::FailedPrecondition("the manifest names " + std::to_string(doc.chunks->count) + " chunks, " +
                                      std::to_string(chunk_values.size()) + " are there")
        .WithReason("chunks_incomplete");
  }
  std::string all;
  for (size_t i = 0; i < chunk_values.size(); ++i) {
    if (chunk_values[i].size() > kMaxChunkBytes) {
      return Status::InvalidArgument("chunk " + std::to_string(i) + ": larger than " + std::to_string(kMaxChunkBytes) +
                                     " bytes");
    }
    all += chunk_values[i];
  }
  if (Sha256Hex(all) != doc.chunks->sha256) {
    return Status::FailedPrecondition("the chunks do not match the manifest's sha256 (still being written?)")
        .WithReason("chunks_mismatch");
  }
  return ParseSetEntries(all, doc.name);
}

Result<std::vector<std::string>> SplitChunks(std::string_view text, size_t max_bytes) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = std::min(text.size(), pos + max_bytes);
    if (end < text.size()) {
      size_t nl = text.rfind('\n', end - 1);
      if (nl == std::string_view::npos || nl < pos) {
        return Status::InvalidArgument("a line longer than " + std::to_string(max_bytes) + " bytes");
      }
      end = nl + 1;
    }
    out.emplace_back(text.substr(pos, end - pos));
    pos = end;
  }
  if (out.empty()) out.emplace_back();
  return out;
}

std::string Sha256Hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 15];
  }
  return out;
}

bool SetMatchesDoc(const SetInfo& live, const SetDoc& doc) {
  if (live.type != doc.type) return false;
  const SetOptions& w = doc.options;
  const SetOptions& l = live.options;
  auto same = [](const std::optional<uint32_t>& want, const std::optional<uint32_t>& have) {
    return !want || want == have;
  };
  return (w.family.empty() || w.family == l.family || (w.family == "inet" && l.family.empty())) &&
         same(w.hashsize, l.hashsize) && same(w.maxelem, l.maxelem) && same(w.timeout, l.timeout) &&
         same(w.netmask, l.netmask) && same(w.size, l.size) && (w.range.empty() || w.range == l.range) &&
         w.counters == l.counters && w.comment == l.comment && w.skbinfo == l.skbinfo;
}

}  // namespace iptkit::fleet
