#include "src/rest/ui_assets.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <climits>
#include <cstdlib>
#include <utility>

#include "src/base/unique_fd.h"

namespace iptkit::rest {
namespace {

constexpr size_t kMaxFileBytes = 4 << 20;

// The policy the page is written for: its own scripts and styles only, no inline code, no plugins, never framed.
constexpr const char* kContentSecurityPolicy =
    "default-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'";

std::string_view ContentType(std::string_view name) {
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 8> kTypes = {{
      {".html", "text/html; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".mjs", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".ico", "image/x-icon"},
      {".json", "application/json"},
  }};
  for (const auto& [ext, type] : kTypes) {
    if (name.size() > ext.size() && name.substr(name.size() - ext.size()) == ext) return type;
  }
  return "";
}

bool SafeComponent(std::string_view c) {
  if (c.empty() || c.front() == '.') return false;
  return std::all_of(c.begin(), c.end(),
                     [](unsigned char ch) { return std::isalnum(ch) || ch == '.' || ch == '_' || ch == '-'; });
}

HttpResponse Text(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.content_type = "text/plain; charset=utf-8";
  r.body = std::move(body) + "\n";
  return r;
}

HttpResponse WithSecurityHeaders(HttpResponse r) {
  r.headers.emplace_back("Content-Security-Policy", kContentSecurityPolicy);
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  r.headers.emplace_back("X-Frame-Options", "DENY");
  r.headers.emplace_back("Referrer-Policy", "no-referrer");
  return r;
}

// `rel` below `dir`, read whole; nullopt-like empty type when it is not a servable file.
bool ReadFile(const std::string& dir, const std::string& rel, std::string* out) {
  char real_dir[PATH_MAX];
  char real_file[PATH_MAX];
  const std::string path = dir + "/" + rel;
  if (realpath(dir.c_str(), real_dir) == nullptr || realpath(path.c_str(), real_file) == nullptr) return false;
  const std::string root = std::string(real_dir) + "/";
  if (std::string_view(real_file).substr(0, root.size()) != root) return false;  // a symlink out of the tree
  base::UniqueFd fd(open(real_file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  struct stat st {};
  if (!fd.valid() || fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  if (static_cast<size_t>(st.st_size) > kMaxFileBytes) return false;
  out->resize(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < out->size()) {
    const ssize_t n = read(fd.get(), out->data() + done, out->size() - done);
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

bool IsUiPath(std::string_view path) { return path == "/ui" || path.substr(0, 4) == "/ui/"; }

std::string HostOf(std::string_view host_header) {
  std::string_view h = host_header;
  while (!h.empty() && h.front() == ' ') h.remove_prefix(1);
  while (!h.empty() && h.back() == ' ') h.remove_suffix(1);
  std::string_view host;
  if (!h.empty() && h.front() == '[') {
    const size_t close = h.find(']');
    if (close == std::string_view::npos) return "";
    host = h.substr(1, close - 1);
  } else {
    host = h.substr(0, h.find(':'));
  }
  std::string out(host);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

HttpResponse ServeUi(const std::string& dir, const std::vector<std::string>& allowed_hosts, const HttpRequest& req) {
  if (dir.empty() || req.peer) return Text(404, "no such route: " + req.path);
  if (req.method != "GET" && req.method != "HEAD") {
    HttpResponse r = Text(405, req.method + " is not allowed on /ui/ (allowed: GET, HEAD)");
    r.headers.emplace_back("Allow", "GET, HEAD");
    return r;
  }
  // A page loaded under another name (a DNS-rebinding attacker's) must not be our dashboard.
  auto host_header = req.headers.find("host");
  const std::string host = host_header == req.headers.end() ? "" : HostOf(host_header->second);
  if (std::find(allowed_hosts.begin(), allowed_hosts.end(), host) == allowed_hosts.end()) {
    return Text(421, "the dashboard is not served for host '" + host + "' (ui_allowed_host)");
  }
  if (req.path == "/ui") {
    HttpResponse r = Text(308, "see /ui/");
    r.headers.emplace_back("Location", "/ui/");
    return r;
  }
  std::string rel = req.path.substr(4);
  if (rel.empty()) rel = "index.html";
  size_t start = 0;
  while (start <= rel.size()) {
    const size_t slash = std::min(rel.find('/', start), rel.size());
    if (!SafeComponent(std::string_view(rel).substr(start, slash - start))) {
      return Text(404, "no such file in the dashboard: " + req.path);
    }
    start = slash + 1;
  }
  const std::string_view type = ContentType(rel);
  HttpResponse r;
  if (type.empty() || !ReadFile(dir, rel, &r.body)) return Text(404, "no such file in the dashboard: " + req.path);
  r.content_type = std::string(type);
  return WithSecurityHeaders(std::move(r));
}

}  // namespace iptkit::rest
