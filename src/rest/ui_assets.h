// The dashboard's static files (docs/dashboard.md): GET /ui/... answered from a directory of plain ES modules, CSS
// and HTML, with the security headers the page relies on. The page itself holds no data and needs no token; every
// call it makes goes through the REST API with the Authorization header.
//
// Only files directly under the directory tree whose path components are [A-Za-z0-9._-] (no component starting
// with '.') are served: no symlinks are followed out of the tree, no directory listings. A request whose Host is
// not allowed (DNS rebinding) is 421.
// Thread-safety: stateless; the files are read per request.
#ifndef IPTKIT_SRC_REST_UI_ASSETS_H_
#define IPTKIT_SRC_REST_UI_ASSETS_H_

#include <string>
#include <string_view>
#include <vector>

#include "src/rest/api.h"

namespace iptkit::rest {

// Whether `path` is the dashboard's ("/ui" or under "/ui/").
bool IsUiPath(std::string_view path);

// The answer to a GET or HEAD of a dashboard path (`IsUiPath`): the file, a redirect from "/ui" to "/ui/", 404,
// 405 for other methods, 421 for a Host not in `allowed_hosts` (lower case, without port).
HttpResponse ServeUi(const std::string& dir, const std::vector<std::string>& allowed_hosts, const HttpRequest& req);

// The Host header's host part in lower case, without port or IPv6 brackets: "[::1]:8080" -> "::1".
std::string HostOf(std::string_view host_header);

}  // namespace iptkit::rest

#endif  // IPTKIT_SRC_REST_UI_ASSETS_H_
