#include "src/service/metrics.h"

#include <algorithm>
#include <cassert>
#include <charconv>
#include <cmath>
#include <set>
#include <string_view>

namespace iptkit::service {
namespace {

bool IsNameChar(char c, bool first, bool colon) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') return true;
  if (colon && c == ':') return true;
  return !first && c >= '0' && c <= '9';
}

// [a-zA-Z_:][a-zA-Z0-9_:]*
bool ValidMetricName(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (!IsNameChar(name[i], i == 0, /*colon=*/true)) return false;
  }
  return true;
}

// [a-zA-Z_][a-zA-Z0-9_]*, and names starting with "__" are reserved for Prometheus itself.
bool ValidLabelName(std::string_view name) {
  if (name.empty() || name.starts_with("__")) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (!IsNameChar(name[i], i == 0, /*colon=*/false)) return false;
  }
  return true;
}

// The naming rules `promtool check metrics` enforces besides the syntax (client_golang testutil/promlint):
// counters end in "_total" and nothing else does; "_bucket", "_count" and "_sum" belong to histograms and summaries.
bool ValidNameForType(std::string_view name, std::string_view type) {
  const bool total = name.ends_with("_total");
  if ((type == "counter") != total) return false;
  if (type != "histogram" && (name.ends_with("_bucket") || name.ends_with("_count") || name.ends_with("_sum"))) {
    return false;
  }
  return true;
}

// Go's float syntax as Prometheus parses it: "+Inf", "-Inf", "NaN", integers without an exponent up to 1e15,
// otherwise the shortest representation that round-trips.
std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  std::to_chars_result r = (v == std::trunc(v) && std::fabs(v) < 1e15)
                               ? std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed)
                               : std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

// Label values escape backslash, double quote and newline; HELP text escapes backslash and newline.
void AppendEscaped(std::string* out, std::string_view s, bool quote) {
  for (char c : s) {
    if (c == '\\') {
      *out += "\\\\";
    } else if (c == '\n') {
      *out += "\\n";
    } else if (quote && c == '"') {
      *out += "\\\"";
    } else {
      *out += c;
    }
  }
}

void AppendHeader(std::string* out, std::string_view name, std::string_view help, std::string_view type) {
  *out += "# HELP ";
  *out += name;
  *out += ' ';
  AppendEscaped(out, help, /*quote=*/false);
  *out += "\n# TYPE ";
  *out += name;
  *out += ' ';
  *out += type;
  *out += '\n';
}

// name{l1="v1",l2="v2"[,le="B"]} VALUE
void AppendSample(std::string* out, std::string_view name, const std::vector<std::string>& label_names,
                  const std::vector<std::string>& label_values, const std::string* le, double value) {
  *out += name;
  if (!label_names.empty() || le != nullptr) {
    *out += '{';
    for (size_t i = 0; i < label_names.size(); ++i) {
      if (i > 0) *out += ',';
      *out += label_names[i];
      *out += "=\"";
      AppendEscaped(out, label_values[i], /*quote=*/true);
      *out += '"';
    }
    if (le != nullptr) {
      if (!label_names.empty()) *out += ',';
      *out += "le=\"";
      *out += *le;
      *out += '"';
    }
    *out += '}';
  }
  *out += ' ';
  *out += FormatValue(value);
  *out += '\n';
}

bool LabelCountOk(const std::vector<std::string>& label_names, const std::vector<std::string>& label_values) {
  const bool ok = label_names.size() == label_values.size();
  assert(ok && "wrong number of label values");
  return ok;
}

void RenderScalars(std::string* out, std::string_view type, const std::string& name, const std::string& help,
                   const std::vector<std::string>& label_names, std::mutex& mu,
                   const std::map<std::vector<std::string>, double>& values) {
  AppendHeader(out, name, help, type);
  std::lock_guard<std::mutex> lock(mu);
  for (const auto& [label_values, value] : values) AppendSample(out, name, label_names, label_values, nullptr, value);
}

// A collected family is rendered only if the output stays valid and lint-clean.
bool ValidFamily(const Metrics::Family& family) {
  if (family.type != "counter" && family.type != "gauge") return false;
  if (!ValidMetricName(family.name) || !ValidNameForType(family.name, family.type)) return false;
  for (const Metrics::Sample& sample : family.samples) {
    std::set<std::string_view> seen;
    for (const auto& [label, value] : sample.labels) {
      if (!ValidLabelName(label) || !seen.insert(label).second) return false;
    }
  }
  return true;
}

}  // namespace

// --- Counter ---------------------------------------------------------------------------------------------------------

Metrics::Counter::Counter(Descriptor desc) : desc_(std::move(desc)) {
  if (desc_.label_names.empty()) values_[{}] = 0;
}

void Metrics::Counter::Inc(const std::vector<std::string>& label_values, double by) {
  if (!LabelCountOk(desc_.label_names, label_values)) return;
  const bool ok = by >= 0;  // also false for NaN
  assert(ok && "a counter only goes up");
  if (!ok) return;
  std::lock_guard<std::mutex> lock(mu_);
  values_[label_values] += by;
}

double Metrics::Counter::Value(const std::vector<std::string>& label_values) const {
  if (!LabelCountOk(desc_.label_names, label_values)) return 0;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = values_.find(label_values);
  return it == values_.end() ? 0 : it->second;
}

// --- Gauge -----------------------------------------------------------------------------------------------------------

Metrics::Gauge::Gauge(Descriptor desc) : desc_(std::move(desc)) {
  if (desc_.label_names.empty()) values_[{}] = 0;
}

void Metrics::Gauge::Set(const std::vector<std::string>& label_values, double v) {
  if (!LabelCountOk(desc_.label_names, label_values)) return;
  std::lock_guard<std::mutex> lock(mu_);
  values_[label_values] = v;
}

void Metrics::Gauge::Add(const std::vector<std::string>& label_values, double by) {
  if (!LabelCountOk(desc_.label_names, label_values)) return;
  std::lock_guard<std::mutex> lock(mu_);
  values_[label_values] += by;
}

double Metrics::Gauge::Value(const std::vector<std::string>& label_values) const {
  if (!LabelCountOk(desc_.label_names, label_values)) return 0;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = values_.find(label_values);
  return it == values_.end() ? 0 : it->second;
}

// --- Histogram -------------------------------------------------------------------------------------------------------

Metrics::Histogram::Histogram(Descriptor desc, std::vector<double> bounds)
    : desc_(std::move(desc)), bounds_(std::move(bounds)) {
  if (desc_.label_names.empty()) series_[{}].counts.assign(bounds_.size() + 1, 0);
}

void Metrics::Histogram::Observe(const std::vector<std::string>& label_values, double v) {
  if (!LabelCountOk(desc_.label_names, label_values) || std::isnan(v)) return;
  // The first bound >= v: buckets are "less than or equal" (the le label).
  const size_t bucket = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  std::lock_guard<std::mutex> lock(mu_);
  Series& s = series_[label_values];
  if (s.counts.empty()) s.counts.assign(bounds_.size() + 1, 0);
  ++s.counts[bucket];
  s.sum += v;
  ++s.count;
}

uint64_t Metrics::Histogram::Count(const std::vector<std::string>& label_values) const {
  if (!LabelCountOk(desc_.label_names, label_values)) return 0;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = series_.find(label_values);
  return it == series_.end() ? 0 : it->second.count;
}

double Metrics::Histogram::Sum(const std::vector<std::string>& label_values) const {
  if (!LabelCountOk(desc_.label_names, label_values)) return 0;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = series_.find(label_values);
  return it == series_.end() ? 0 : it->second.sum;
}

std::vector<uint64_t> Metrics::Histogram::CumulativeCounts(const std::vector<std::string>& label_values) const {
  if (!LabelCountOk(desc_.label_names, label_values)) return {};
  std::lock_guard<std::mutex> lock(mu_);
  auto it = series_.find(label_values);
  if (it == series_.end()) return {};
  std::vector<uint64_t> cumulative;
  uint64_t running = 0;
  for (uint64_t c : it->second.counts) cumulative.push_back(running += c);
  return cumulative;
}

// --- Registry --------------------------------------------------------------------------------------------------------

bool Metrics::CheckRegistration(const Descriptor& desc, bool counter, bool histogram) const {
  bool ok = ValidMetricName(desc.name);
  assert(ok && "invalid metric name");
  ok = ok && ValidNameForType(desc.name, counter ? "counter" : histogram ? "histogram" : "gauge");
  assert(ok && "counters, and only counters, are named *_total; _bucket/_count/_sum are reserved for histograms");
  std::set<std::string_view> seen;
  for (const std::string& label : desc.label_names) {
    const bool label_ok = ValidLabelName(label) && !(histogram && label == "le") && seen.insert(label).second;
    assert(label_ok && "invalid, reserved or repeated label name");
    ok = ok && label_ok;
  }
  return ok;
}

template <typename M>
M& Metrics::Register(std::unique_ptr<M> metric, bool ok) {
  M& ref = *metric;
  std::lock_guard<std::mutex> lock(mu_);
  if (ok) {
    const bool taken = families_.count(ref.desc_.name) > 0;
    assert(!taken && "metric family registered twice");
    if (!taken) {
      families_.emplace(ref.desc_.name, Entry(std::move(metric)));
      return ref;
    }
  }
  detached_.emplace_back(std::move(metric));
  return ref;
}

Metrics::Counter& Metrics::AddCounter(std::string name, std::string help, std::vector<std::string> label_names) {
  Descriptor desc{std::move(name), std::move(help), std::move(label_names)};
  const bool ok = CheckRegistration(desc, /*counter=*/true, /*histogram=*/false);
  return Register(std::unique_ptr<Counter>(new Counter(std::move(desc))), ok);
}

Metrics::Gauge& Metrics::AddGauge(std::string name, std::string help, std::vector<std::string> label_names) {
  Descriptor desc{std::move(name), std::move(help), std::move(label_names)};
  const bool ok = CheckRegistration(desc, /*counter=*/false, /*histogram=*/false);
  return Register(std::unique_ptr<Gauge>(new Gauge(std::move(desc))), ok);
}

Metrics::Histogram& Metrics::AddHistogram(std::string name, std::string help, std::vector<std::string> label_names,
                                          std::vector<double> buckets) {
  Descriptor desc{std::move(name), std::move(help), std::move(label_names)};
  bool ok = CheckRegistration(desc, /*counter=*/false, /*histogram=*/true);
  const bool has_nan = std::any_of(buckets.begin(), buckets.end(), [](double b) { return std::isnan(b); });
  assert(!has_nan && "NaN histogram bucket");
  ok = ok && !has_nan;
  std::erase_if(buckets, [](double b) { return !std::isfinite(b); });
  std::sort(buckets.begin(), buckets.end());
  buckets.erase(std::unique(buckets.begin(), buckets.end()), buckets.end());
  return Register(std::unique_ptr<Histogram>(new Histogram(std::move(desc), std::move(buckets))), ok);
}

void Metrics::AddCollector(std::function<std::vector<Family>()> collect) {
  auto shared = std::make_shared<const std::function<std::vector<Family>()>>(std::move(collect));
  std::lock_guard<std::mutex> lock(mu_);
  collectors_.push_back(std::move(shared));
}

std::string Metrics::Render() const {
  // Registered metrics live as long as the registry, so raw pointers taken under mu_ stay valid after it.
  std::vector<const Entry*> entries;
  std::set<std::string> registered;
  std::vector<std::shared_ptr<const std::function<std::vector<Family>()>>> collectors;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, entry] : families_) {
      entries.push_back(&entry);
      registered.insert(name);
    }
    collectors = collectors_;
  }

  std::string out;
  for (const Entry* entry : entries) {
    if (const auto* c = std::get_if<std::unique_ptr<Counter>>(entry)) {
      const Counter& m = **c;
      RenderScalars(&out, "counter", m.desc_.name, m.desc_.help, m.desc_.label_names, m.mu_, m.values_);
    } else if (const auto* g = std::get_if<std::unique_ptr<Gauge>>(entry)) {
      const Gauge& m = **g;
      RenderScalars(&out, "gauge", m.desc_.name, m.desc_.help, m.desc_.label_names, m.mu_, m.values_);
    } else {
      const Histogram& m = *std::get<std::unique_ptr<Histogram>>(*entry);
      const std::string& name = m.desc_.name;
      AppendHeader(&out, name, m.desc_.help, "histogram");
      std::vector<std::string> les;
      for (double b : m.bounds_) les.push_back(FormatValue(b));
      les.push_back("+Inf");
      const std::string bucket_name = name + "_bucket", sum_name = name + "_sum", count_name = name + "_count";
      std::lock_guard<std::mutex> lock(m.mu_);
      for (const auto& [label_values, series] : m.series_) {
        uint64_t cumulative = 0;
        for (size_t i = 0; i < les.size(); ++i) {
          cumulative += series.counts[i];
          AppendSample(&out, bucket_name, m.desc_.label_names, label_values, &les[i], static_cast<double>(cumulative));
        }
        AppendSample(&out, sum_name, m.desc_.label_names, label_values, nullptr, series.sum);
        AppendSample(&out, count_name, m.desc_.label_names, label_values, nullptr, static_cast<double>(series.count));
      }
    }
  }

  // Collectors run without mu_: they may be slow (a kernel read) or use the registry themselves.
  std::vector<Family> collected;
  std::map<std::string, size_t, std::less<>> index;
  for (const auto& collect : collectors) {
    for (Family& family : (*collect)()) {
      if (registered.count(family.name) > 0 || !ValidFamily(family)) continue;
      auto it = index.find(family.name);
      if (it == index.end()) {
        index.emplace(family.name, collected.size());
        collected.push_back(std::move(family));
      } else if (collected[it->second].type == family.type) {
        auto& samples = collected[it->second].samples;
        samples.insert(samples.end(), std::make_move_iterator(family.samples.begin()),
                       std::make_move_iterator(family.samples.end()));
      }
    }
  }
  for (const Family& family : collected) {
    AppendHeader(&out, family.name, family.help, family.type);
    for (const Sample& sample : family.samples) {
      out += family.name;
      if (!sample.labels.empty()) {
        out += '{';
        for (size_t i = 0; i < sample.labels.size(); ++i) {
          if (i > 0) out += ',';
          out += sample.labels[i].first;
          out += "=\"";
          AppendEscaped(&out, sample.labels[i].second, /*quote=*/true);
          out += '"';
        }
        out += '}';
      }
      out += ' ';
      out += FormatValue(sample.value);
      out += '\n';
    }
  }
  return out;
}

}  // namespace iptkit::service
