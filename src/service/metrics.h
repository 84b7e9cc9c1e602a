// Metrics: a small Prometheus registry that renders the text exposition format, version 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/), for the daemon's `GET /metrics`.
//
// Three kinds of registered metric families — Counter, Gauge, Histogram — each with a fixed list of label names and
// one series per distinct list of label values, plus collectors: callbacks run at scrape time that return whole
// families computed on the spot (e.g. the packet counters of rules read from the kernel).
//
// Thread-safety: every method of Metrics, Counter, Gauge and Histogram is thread-safe (the HTTP threads and the writer
// thread update metrics while a scrape renders them). The references returned by Add* stay valid for the lifetime of
// the registry. Collectors are called by Render() without any registry lock held, on the rendering thread; when
// Render() runs on several threads at once, a collector runs concurrently with itself.
//
//   Metrics metrics;
//   Metrics::Counter& requests = metrics.AddCounter("iptkitd_http_requests_total", "HTTP requests served.",
//                                                   {"method", "code"});
//   Metrics::Histogram& latency = metrics.AddHistogram("iptkitd_commit_seconds", "Commit latency.", {},
//                                                      {0.001, 0.01, 0.1, 1});
//   requests.Inc({"GET", "200"});
//   latency.Observe({}, 0.004);
//   std::string body = metrics.Render();  // Content-Type: text/plain; version=0.0.4
//
// Programming errors — an invalid metric or label name, a counter not named *_total, a family name registered twice,
// a wrong number of label values, a negative counter increment — assert in debug builds. In release builds the call is
// ignored (a duplicate registration returns a live metric that is never rendered), so a metrics bug never takes the
// daemon down and never makes the output unparsable.
#ifndef IPTKIT_SRC_SERVICE_METRICS_H_
#define IPTKIT_SRC_SERVICE_METRICS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace iptkit::service {

class Metrics {
 private:
  // What every registered family has: validated name, HELP text and label names.
  struct Descriptor {
    std::string name;
    std::string help;
    std::vector<std::string> label_names;
  };

 public:
  // A monotonically increasing value per label set. Its name must end in "_total".
  class Counter {
   public:
    // Adds `by` (>= 0; a negative or NaN `by` is a programming error) to the series of `label_values`.
    void Inc(const std::vector<std::string>& label_values = {}, double by = 1);
    // The current value; 0 for a series never incremented (or a wrong number of label values).
    double Value(const std::vector<std::string>& label_values = {}) const;

   private:
    friend class Metrics;
    explicit Counter(Descriptor desc);
    Descriptor desc_;
    mutable std::mutex mu_;
    std::map<std::vector<std::string>, double> values_;  // GUARDED_BY(mu_)
  };

  // A value per label set that goes up and down.
  class Gauge {
   public:
    void Set(const std::vector<std::string>& label_values, double v);
    void Add(const std::vector<std::string>& label_values, double by);
    // The current value; 0 for a series never set.
    double Value(const std::vector<std::string>& label_values) const;

   private:
    friend class Metrics;
    explicit Gauge(Descriptor desc);
    Descriptor desc_;
    mutable std::mutex mu_;
    std::map<std::vector<std::string>, double> values_;  // GUARDED_BY(mu_)
  };

  // Observations counted into fixed buckets (upper bounds, inclusive), rendered cumulatively as name_bucket{le=...}
  // including le="+Inf", plus name_sum and name_count.
  class Histogram {
   public:
    // Records one observation; NaN is ignored.
    void Observe(const std::vector<std::string>& label_values, double v);
    // Number of observations and their sum; 0 for a series never observed.
    uint64_t Count(const std::vector<std::string>& label_values) const;
    double Sum(const std::vector<std::string>& label_values) const;
    // Cumulative counts per bucket, the last one for +Inf (== Count); empty for a series never observed.
    std::vector<uint64_t> CumulativeCounts(const std::vector<std::string>& label_values) const;

   private:
    friend class Metrics;
    struct Series {
      std::vector<uint64_t> counts;  // per bucket, not cumulative; one more than bounds_ (+Inf)
      double sum = 0;
      uint64_t count = 0;
    };
    Histogram(Descriptor desc, std::vector<double> bounds);
    Descriptor desc_;
    std::vector<double> bounds_;  // sorted, unique, finite
    mutable std::mutex mu_;
    std::map<std::vector<std::string>, Series> series_;  // GUARDED_BY(mu_)
  };

  // One sample of a collected family: label name/value pairs (label names [a-zA-Z_][a-zA-Z0-9_]*) and the value.
  struct Sample {
    std::vector<std::pair<std::string, std::string>> labels;
    double value = 0;
  };
  // A family computed at scrape time. type is "counter" (then name must end in "_total") or "gauge".
  struct Family {
    std::string name;
    std::string help;
    std::string type;
    std::vector<Sample> samples;
  };

  Metrics() = default;
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // Registers a family. Names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]* and do not start
  // with "__". A family without labels renders its single series (0) from the start; a labelled family renders a
  // series once it has been touched.
  Counter& AddCounter(std::string name, std::string help, std::vector<std::string> label_names = {});
  Gauge& AddGauge(std::string name, std::string help, std::vector<std::string> label_names = {});
  // `buckets` are upper bounds; they are sorted and deduplicated, an infinite bound is dropped (+Inf is implicit),
  // NaN is a programming error. "le" is not a valid label name here.
  Histogram& AddHistogram(std::string name, std::string help, std::vector<std::string> label_names,
                          std::vector<double> buckets);

  // Adds a callback run by every Render(). Its families are rendered after the registered ones, in the order the
  // collectors were added and the families returned. Families of the same name and type from several collectors are
  // merged; a family is dropped when its name is registered, was returned earlier with another type, or it is
  // malformed (bad name or type, a counter not named *_total, a bad label name), so that the output always parses.
  // The callback must not throw.
  void AddCollector(std::function<std::vector<Family>()> collect);

  // The text exposition format: registered families sorted by name, then the collectors' families. Each family is
  // "# HELP", "# TYPE" and its samples; every line ends in "\n".
  std::string Render() const;

 private:
  using Entry = std::variant<std::unique_ptr<Counter>, std::unique_ptr<Gauge>, std::unique_ptr<Histogram>>;

  // Validates a registration; false (after asserting) when it must not be rendered.
  bool CheckRegistration(const Descriptor& desc, bool counter, bool histogram) const;
  template <typename M>
  M& Register(std::unique_ptr<M> metric, bool ok);

  mutable std::mutex mu_;
  std::map<std::string, Entry> families_;  // GUARDED_BY(mu_); by name
  std::vector<Entry> detached_;            // GUARDED_BY(mu_); rejected registrations, alive but never rendered
  std::vector<std::shared_ptr<const std::function<std::vector<Family>()>>> collectors_;  // GUARDED_BY(mu_)
};

}  // namespace iptkit::service

#endif  // IPTKIT_SRC_SERVICE_METRICS_H_
