#include "tools/iptkitd/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

namespace iptkit::daemon {
namespace {

// The source tree (docs/, packaging/). __FILE__ may be relative (ccache's base_dir), so the build says where it is.
std::filesystem::path SourceDir() { return IPTKIT_SOURCE_DIR; }

using std::chrono::milliseconds;
using ::testing::HasSubstr;
using Tls = Listener::Tls;

// Expects an InvalidArgument whose message contains every one of `parts`.
template <typename R>
void ExpectInvalid(const R& r, std::initializer_list<std::string> parts) {
  Status s;
  if constexpr (std::is_same_v<R, Status>) {
    s = r;
  } else {
    s = r.status();
  }
  ASSERT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  for (const std::string& part : parts) EXPECT_THAT(s.message(), HasSubstr(part));
}

Listener L(Tls tls, std::string address, int port) { return Listener{.tls = tls, .address = address, .port = port}; }

// --- ParseListener ---------------------------------------------------------------------------------------------------

TEST(ParseListenerTest, Forms) {
  struct Case {
    std::string text;
    Listener want;
  } cases[] = {
      {"127.0.0.1:8080", L(Tls::kAuto, "127.0.0.1", 8080)},
      {"[::1]:8080", L(Tls::kAuto, "::1", 8080)},
      {"http://127.0.0.1:8080", L(Tls::kOff, "127.0.0.1", 8080)},
      {"https://0.0.0.0:8443", L(Tls::kOn, "0.0.0.0", 8443)},
      {"https://[::]:443/", L(Tls::kOn, "::", 443)},
      {"localhost:80", L(Tls::kAuto, "127.0.0.1", 80)},
      {"http://LocalHost:80", L(Tls::kOff, "127.0.0.1", 80)},
      {"[0:0:0:0:0:0:0:1]:1", L(Tls::kAuto, "::1", 1)},  // normalized
      {"[2001:DB8::10]:9", L(Tls::kAuto, "2001:db8::10", 9)},
      {"10.1.2.3:0", L(Tls::kAuto, "10.1.2.3", 0)},
      {"10.1.2.3:65535", L(Tls::kAuto, "10.1.2.3", 65535)},
  };
  for (const Case& c : cases) {
    Result<Listener> l = ParseListener(c.text);
    ASSERT_TRUE(l.ok()) << c.text << ": " << l.status().ToString();
    EXPECT_EQ(*l, c.want) << c.text;
  }
}

TEST(ParseListenerTest, Refusals) {
  struct Case {
    std::string text, reason;
  } cases[] = {
      {"example.com:80", "host names"},
      {"http://router.lan:80", "host names"},
      {"::1:80", "brackets"},
      {"[127.0.0.1]:80", "not an IPv6 address"},
      {"[::1:80", "']'"},
      {"[::1]80", "':PORT'"},
      {"[fe80::1%eth0]:80", "not an IPv6 address"},
      {"ftp://127.0.0.1:21", "scheme"},
      {"127.0.0.1", "':PORT'"},
      {"127.0.0.1:", "port"},
      {"127.0.0.1:65536", "port"},
      {"127.0.0.1:+80", "port"},
      {"127.0.0.1:-1", "port"},
      {"127.0.0.1:80/", "port"},  // a trailing slash only after a URL scheme
      {":8080", "missing address"},
      {"", "ADDRESS:PORT"},
      {"https://", "ADDRESS:PORT"},
      {"1.2.3:80", "host names"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    ExpectInvalid(ParseListener(c.text), {"listener '" + c.text + "'", c.reason});
  }
}

TEST(ParseListenerTest, FormatRoundTrips) {
  for (std::string text : {"127.0.0.1:8080", "http://[::1]:80", "https://0.0.0.0:8443", "[2001:db8::1]:0"}) {
    Result<Listener> l = ParseListener(text);
    ASSERT_TRUE(l.ok()) << text;
    EXPECT_EQ(FormatListener(*l), text);
  }
}

TEST(ListenerTest, IsLoopbackAndUsesTls) {
  EXPECT_TRUE(IsLoopback(L(Tls::kAuto, "127.0.0.1", 1)));
  EXPECT_TRUE(IsLoopback(L(Tls::kAuto, "127.200.3.4", 1)));
  EXPECT_TRUE(IsLoopback(L(Tls::kAuto, "::1", 1)));
  EXPECT_TRUE(IsLoopback(L(Tls::kAuto, "::ffff:127.0.0.1", 1)));
  EXPECT_TRUE(IsLoopback(L(Tls::kAuto, "localhost", 1)));
  EXPECT_FALSE(IsLoopback(L(Tls::kAuto, "128.0.0.1", 1)));
  EXPECT_FALSE(IsLoopback(L(Tls::kAuto, "0.0.0.0", 1)));
  EXPECT_FALSE(IsLoopback(L(Tls::kAuto, "::", 1)));
  EXPECT_FALSE(IsLoopback(L(Tls::kAuto, "::ffff:10.0.0.1", 1)));
  EXPECT_FALSE(IsLoopback(L(Tls::kAuto, "", 1)));

  EXPECT_FALSE(UsesTls(L(Tls::kAuto, "127.0.0.1", 1)));
  EXPECT_TRUE(UsesTls(L(Tls::kAuto, "10.0.0.1", 1)));
  EXPECT_TRUE(UsesTls(L(Tls::kOn, "127.0.0.1", 1)));
  EXPECT_FALSE(UsesTls(L(Tls::kOff, "10.0.0.1", 1)));
}

// --- ParseSocketPeer / ParseDuration ---------------------------------------------------------------------------------

TEST(ParseSocketPeerTest, Forms) {
  EXPECT_EQ(*ParseSocketPeer("uid:0"), (SocketPeer{.is_gid = false, .id = 0, .read_only = false}));
  EXPECT_EQ(*ParseSocketPeer("gid:27:ro"), (SocketPeer{.is_gid = true, .id = 27, .read_only = true}));
  EXPECT_EQ(*ParseSocketPeer("uid:1000:rw"), (SocketPeer{.is_gid = false, .id = 1000, .read_only = false}));
  EXPECT_EQ(*ParseSocketPeer("uid:4294967294"), (SocketPeer{.is_gid = false, .id = 4294967294u, .read_only = false}));
  EXPECT_EQ(FormatSocketPeer(*ParseSocketPeer("gid:27:ro")), "gid:27:ro");
  EXPECT_EQ(FormatSocketPeer(*ParseSocketPeer("uid:5:rw")), "uid:5");
}

TEST(ParseSocketPeerTest, Refusals) {
  for (std::string text : {"user:1", "uid", "uid:", "uid:abc", "uid:root", "uid:4294967295", "uid:-1", "uid: 1",
                           "uid:1:rx", "uid:1:", "gid:1:ro:x", "UID:1"}) {
    SCOPED_TRACE(text);
    ExpectInvalid(ParseSocketPeer(text), {"socket peer '" + text + "'"});
  }
}

TEST(ParseDurationTest, Forms) {
  EXPECT_EQ(*ParseDuration("250ms"), milliseconds(250));
  EXPECT_EQ(*ParseDuration("5s"), milliseconds(5000));
  EXPECT_EQ(*ParseDuration("2m"), milliseconds(120000));
  EXPECT_EQ(*ParseDuration("1h"), milliseconds(3600000));
  EXPECT_EQ(*ParseDuration("7"), milliseconds(7000));
  EXPECT_EQ(*ParseDuration("1ms"), milliseconds(1));
  EXPECT_EQ(*ParseDuration("1d"), milliseconds(86400000));
}

TEST(ParseDurationTest, Refusals) {
  for (std::string text : {"0", "0s", "0ms", "", "s", "5x", "5 s", " 5s", "1.5s", "-1s", "+1s", "5S", "1w",
                           "99999999999999999999h", "9223372036854775807h"}) {
    SCOPED_TRACE(text);
    ExpectInvalid(ParseDuration(text), {"duration '" + text + "'"});
  }
  ExpectInvalid(ParseDuration("0s"), {"greater than 0"});
}

// --- ParseConfig -----------------------------------------------------------------------------------------------------

TEST(ParseConfigTest, EmptyTextKeepsTheBase) {
  DaemonConfig base;
  base.state_dir = "/tmp/x";
  Result<DaemonConfig> c = ParseConfig("", "f.conf", base);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, base);
  c = ParseConfig("\n  \n# only a comment\n\t# indented comment\n", "f.conf");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, DaemonConfig{});
}

TEST(ParseConfigTest, Defaults) {
  const DaemonConfig d;
  EXPECT_EQ(d.netns, "");
  EXPECT_EQ(d.backend, "auto");
  EXPECT_TRUE(d.listen.empty());
  EXPECT_EQ(d.socket, "");
  EXPECT_EQ(d.socket_mode, 0660u);
  EXPECT_TRUE(d.socket_allow.empty());
  EXPECT_EQ(d.state_dir, "/var/lib/iptkitd");
  EXPECT_EQ(d.drift_interval, milliseconds(5000));
  EXPECT_EQ(d.wait, milliseconds(10000));
  EXPECT_EQ(d.max_body_bytes, size_t{1} << 20);
  EXPECT_EQ(d.max_set_body_bytes, size_t{32} << 20);
  EXPECT_EQ(d.max_ops, 1000u);
  EXPECT_EQ(d.rate_limit, 100);
  EXPECT_EQ(d.rate_burst, 200);
  EXPECT_EQ(d.max_connections, 1024u);
  EXPECT_EQ(d.max_batch, 1000u);
  EXPECT_EQ(d.log_level, "info");
  EXPECT_EQ(d.default_owner, "iptkitd");
}

TEST(ParseConfigTest, EveryKey) {
  Result<DaemonConfig> c = ParseConfig(R"(
netns = blue
backend = legacy
listen = 127.0.0.1:8080
listen = https://[::]:8443
socket = /run/iptkitd.sock
socket_mode = 0600
socket_allow = uid:0
socket_allow = gid:27:ro
state_dir = /srv/iptkitd
tls_cert = /etc/iptkit/cert.pem
tls_key = /etc/iptkit/key.pem
drift_interval = 250ms
wait = 2m
max_body_bytes = 65536
max_set_body_bytes = 1000000
max_ops = 50
rate_limit = 2.5
rate_burst = 10
max_connections = 64
max_batch = 20
log_level = debug
default_owner = ttl-rules
)",
                                       "f.conf");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->netns, "blue");
  EXPECT_EQ(c->backend, "legacy");
  EXPECT_EQ(c->listen, (std::vector<Listener>{L(Tls::kAuto, "127.0.0.1", 8080), L(Tls::kOn, "::", 8443)}));
  EXPECT_EQ(c->socket, "/run/iptkitd.sock");
  EXPECT_EQ(c->socket_mode, 0600u);
  EXPECT_EQ(c->socket_allow, (std::vector<SocketPeer>{{.is_gid = false, .id = 0, .read_only = false},
                                                      {.is_gid = true, .id = 27, .read_only = true}}));
  EXPECT_EQ(c->state_dir, "/srv/iptkitd");
  EXPECT_EQ(c->tls_cert, "/etc/iptkit/cert.pem");
  EXPECT_EQ(c->tls_key, "/etc/iptkit/key.pem");
  EXPECT_EQ(c->drift_interval, milliseconds(250));
  EXPECT_EQ(c->wait, milliseconds(120000));
  EXPECT_EQ(c->max_body_bytes, 65536u);
  EXPECT_EQ(c->max_set_body_bytes, 1000000u);
  EXPECT_EQ(c->max_ops, 50u);
  EXPECT_EQ(c->rate_limit, 2.5);
  EXPECT_EQ(c->rate_burst, 10);
  EXPECT_EQ(c->max_connections, 64u);
  EXPECT_EQ(c->max_batch, 20u);
  EXPECT_EQ(c->log_level, "debug");
  EXPECT_EQ(c->default_owner, "ttl-rules");
  EXPECT_TRUE(ValidateConfig(*c).ok());
}

TEST(ParseConfigTest, CommentsAndWhitespace) {
  Result<DaemonConfig> c = ParseConfig(
      "  netns\t=\tblue   # the blue namespace\r\n"
      "state_dir = /srv/a#b   \r\n"
      "tls_cert=/x#\n"
      "socket = #nothing\n"
      "   # listen = 10.0.0.1:80\n",
      "f.conf");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->netns, "blue");
  EXPECT_EQ(c->state_dir, "/srv/a#b");
  EXPECT_EQ(c->tls_cert, "/x#");
  EXPECT_EQ(c->socket, "");
  EXPECT_TRUE(c->listen.empty());
}

TEST(ParseConfigTest, QuotedValuesAreVerbatim) {
  Result<DaemonConfig> c = ParseConfig(
      "tls_cert = \" /path with # and spaces \"  # comment\n"
      "tls_key = \"a\\\"b\\\\c\"\n"
      "netns = \"\"\n"
      "state_dir = \"=x=\"\n",
      "f.conf");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->tls_cert, " /path with # and spaces ");
  EXPECT_EQ(c->tls_key, "a\"b\\c");
  EXPECT_EQ(c->netns, "");
  EXPECT_EQ(c->state_dir, "=x=");
}

TEST(ParseConfigTest, QuotingErrors) {
  ExpectInvalid(ParseConfig("tls_cert = \"abc\n", "f.conf"), {"f.conf:1: tls_cert '\"abc'", "closing"});
  ExpectInvalid(ParseConfig("tls_cert = \"a\\nb\"\n", "f.conf"), {"f.conf:1: tls_cert", "backslash"});
  ExpectInvalid(ParseConfig("tls_cert = \"a\" b\n", "f.conf"), {"f.conf:1: tls_cert", "after the closing"});
}

TEST(ParseConfigTest, RepeatableKeysAppendToTheBase) {
  DaemonConfig base;
  base.listen.push_back(L(Tls::kAuto, "127.0.0.1", 1));
  base.netns = "from-base";
  base.max_ops = 7;
  Result<DaemonConfig> c = ParseConfig("listen = [::1]:2\nlisten = localhost:3\nnetns = red\n", "f.conf", base);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->listen, (std::vector<Listener>{L(Tls::kAuto, "127.0.0.1", 1), L(Tls::kAuto, "::1", 2),
                                              L(Tls::kAuto, "127.0.0.1", 3)}));
  EXPECT_EQ(c->netns, "red");  // the file replaces base values
  EXPECT_EQ(c->max_ops, 7u);   // and keeps those it does not set
}

TEST(ParseConfigTest, NonRepeatableKeyTwice) {
  ExpectInvalid(ParseConfig("# c\nnetns = a\n\nnetns = b\n", "/etc/iptkit/iptkitd.conf"),
                {"/etc/iptkit/iptkitd.conf:4: netns 'b'", "given twice", "line 2"});
}

TEST(ParseConfigTest, LineErrorsNameFileLineKeyAndValue) {
  struct Case {
    std::string text;
    std::vector<std::string> parts;
  } cases[] = {
      {"lissten = 127.0.0.1:80", {"c.conf:1: lissten '127.0.0.1:80'", "unknown key"}},
      {"\nlisten 127.0.0.1:80", {"c.conf:2: ", "expected 'key = value'", "'listen 127.0.0.1:80'"}},
      {" = x", {"c.conf:1: ", "missing key"}},
      {"Netns = a", {"c.conf:1: Netns 'a'", "unknown key"}},
      {"backend = iptables", {"c.conf:1: backend 'iptables'", "auto|native|nft|legacy|fake"}},
      {"listen = www.example.com:80", {"c.conf:1: listen 'www.example.com:80'", "host names"}},
      {"listen =", {"c.conf:1: listen ''", "ADDRESS:PORT"}},
      {"socket = /" + std::string(200, 'x'), {"c.conf:1: socket '/xxx", "107 bytes"}},
      {"socket_mode = 0888", {"c.conf:1: socket_mode '0888'", "octal"}},
      {"socket_mode = 1777", {"c.conf:1: socket_mode '1777'", "0..0777"}},
      {"socket_mode = 660x", {"c.conf:1: socket_mode '660x'", "octal"}},
      {"socket_allow = alice", {"c.conf:1: socket_allow 'alice'", "uid:N"}},
      {"state_dir =", {"c.conf:1: state_dir ''", "empty"}},
      {"drift_interval = 0s", {"c.conf:1: drift_interval '0s'", "greater than 0"}},
      {"wait = soon", {"c.conf:1: wait 'soon'", "duration"}},
      {"max_body_bytes = 0", {"c.conf:1: max_body_bytes '0'", "positive integer"}},
      {"max_set_body_bytes = 0", {"c.conf:1: max_set_body_bytes '0'", "positive integer"}},
      {"max_set_body_bytes = 32MiB", {"c.conf:1: max_set_body_bytes '32MiB'", "positive integer"}},
      {"max_ops = -5", {"c.conf:1: max_ops '-5'", "positive integer"}},
      {"max_connections = 1e3", {"c.conf:1: max_connections '1e3'", "positive integer"}},
      {"max_batch = 99999999999999999999999", {"c.conf:1: max_batch", "positive integer"}},
      {"rate_limit = -1", {"c.conf:1: rate_limit '-1'", ">= 0"}},
      {"rate_limit = inf", {"c.conf:1: rate_limit 'inf'", ">= 0"}},
      {"rate_limit = nan", {"c.conf:1: rate_limit 'nan'", ">= 0"}},
      {"rate_limit = 5/s", {"c.conf:1: rate_limit '5/s'", ">= 0"}},
      {"rate_burst = 0.5", {"c.conf:1: rate_burst '0.5'", ">= 1"}},
      {"log_level = verbose", {"c.conf:1: log_level 'verbose'", "trace|debug|info|warn|error|off"}},
      {"default_owner = My_App", {"c.conf:1: default_owner 'My_App'", "[a-z0-9-]"}},
      {"default_owner = " + std::string(33, 'a'), {"c.conf:1: default_owner", "1..32"}},
      {std::string("netns = a\0b", 11), {"c.conf:1: ", "NUL"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    Result<DaemonConfig> r = ParseConfig(c.text, "c.conf");
    ASSERT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
    for (const std::string& part : c.parts) EXPECT_THAT(r.status().message(), HasSubstr(part));
  }
}

TEST(ParseConfigTest, AcceptedEdgeValues) {
  Result<DaemonConfig> c =
      ParseConfig("socket_mode = 660\nrate_limit = 0\nrate_burst = 1\ndefault_owner = " + std::string(32, 'z') +
                      "\nwait = 30\nsocket = /" + std::string(106, 's') + "\n",
                  "f.conf");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->socket_mode, 0660u);
  EXPECT_EQ(c->rate_limit, 0);
  EXPECT_EQ(c->rate_burst, 1);
  EXPECT_EQ(c->wait, milliseconds(30000));
  EXPECT_EQ(c->socket.size(), 107u);
}

// --- ValidateConfig --------------------------------------------------------------------------------------------------

DaemonConfig WithListeners(std::vector<std::string> listeners, bool tls_files) {
  DaemonConfig c;
  for (const std::string& text : listeners) c.listen.push_back(*ParseListener(text));
  if (tls_files) {
    c.tls_cert = "/etc/iptkit/cert.pem";
    c.tls_key = "/etc/iptkit/key.pem";
  }
  return c;
}

TEST(ValidateConfigTest, NeedsSomethingToServe) {
  ExpectInvalid(ValidateConfig(DaemonConfig{}), {"listen", "socket"});
  DaemonConfig c;
  c.socket = "/run/iptkitd.sock";
  EXPECT_TRUE(ValidateConfig(c).ok());
}

TEST(ValidateConfigTest, LoopbackMaySkipTls) {
  EXPECT_TRUE(ValidateConfig(WithListeners({"127.0.0.1:8080", "http://[::1]:8080", "localhost:0"}, false)).ok());
}

TEST(ValidateConfigTest, NonLoopbackNeedsTls) {
  ExpectInvalid(ValidateConfig(WithListeners({"127.0.0.1:1", "http://0.0.0.0:8080"}, true)),
                {"listener http://0.0.0.0:8080", "loopback"});
  ExpectInvalid(ValidateConfig(WithListeners({"10.0.0.1:8443"}, false)),
                {"listener 10.0.0.1:8443", "tls_cert and tls_key"});
  ExpectInvalid(ValidateConfig(WithListeners({"https://127.0.0.1:8443"}, false)),
                {"listener https://127.0.0.1:8443", "tls_cert and tls_key"});
  EXPECT_TRUE(ValidateConfig(WithListeners({"10.0.0.1:8443", "https://[::]:443", "http://127.0.0.1:80"}, true)).ok());
}

TEST(ValidateConfigTest, CertAndKeyGoTogether) {
  DaemonConfig c = WithListeners({"127.0.0.1:80"}, false);
  c.tls_cert = "/c.pem";
  ExpectInvalid(ValidateConfig(c), {"tls_cert is set but tls_key is not"});
  c.tls_cert.clear();
  c.tls_key = "/k.pem";
  ExpectInvalid(ValidateConfig(c), {"tls_key is set but tls_cert is not"});
}

TEST(ValidateConfigTest, SameListenerTwice) {
  ExpectInvalid(ValidateConfig(WithListeners({"localhost:80", "http://127.0.0.1:80"}, false)),
                {"listener http://127.0.0.1:80", "twice"});
  EXPECT_TRUE(ValidateConfig(WithListeners({"127.0.0.1:0", "127.0.0.1:0"}, false)).ok());
}

// --- LoadConfigFile --------------------------------------------------------------------------------------------------

class LoadConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/iptkitd-config-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path) << text;
    return path;
  }
  std::string dir_;
};

TEST_F(LoadConfigFileTest, ReadsAndNamesTheFileInErrors) {
  const std::string good = Write("good.conf", "listen = 127.0.0.1:8080\nlog_level = warn\n");
  Result<DaemonConfig> c = LoadConfigFile(good);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->log_level, "warn");
  ASSERT_EQ(c->listen.size(), 1u);

  const std::string bad = Write("bad.conf", "\n\nmax_ops = lots\n");
  ExpectInvalid(LoadConfigFile(bad), {bad + ":3: max_ops 'lots'"});
}

TEST_F(LoadConfigFileTest, MissingFileIsNotFoundNamingThePath) {
  const std::string path = dir_ + "/absent.conf";
  Result<DaemonConfig> c = LoadConfigFile(path);
  EXPECT_EQ(c.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(c.status().message(), HasSubstr(path));
}

TEST_F(LoadConfigFileTest, DirectoryIsRefused) { ExpectInvalid(LoadConfigFile(dir_), {dir_, "not a regular file"}); }

// The example in docs/daemon-config.md parses and validates, and the reference names every key.
TEST(DocsTest, ExampleParsesAndEveryKeyIsDocumented) {
  const std::filesystem::path doc = SourceDir() / "docs" / "daemon-config.md";
  std::ifstream in(doc);
  if (!in) GTEST_SKIP() << doc << " not found";
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string text = buf.str();

  const std::string open = "```ini\n";
  const size_t start = text.find(open);
  ASSERT_NE(start, std::string::npos) << "no ```ini example block";
  const size_t end = text.find("```", start + open.size());
  ASSERT_NE(end, std::string::npos);
  Result<DaemonConfig> c = ParseConfig(text.substr(start + open.size(), end - start - open.size()), "example");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(ValidateConfig(*c).ok()) << ValidateConfig(*c).ToString();

  for (const char* key : {"netns",
                          "backend",
                          "listen",
                          "socket",
                          "socket_mode",
                          "socket_allow",
                          "state_dir",
                          "tls_cert",
                          "tls_key",
                          "drift_interval",
                          "group_wait",
                          "wait",
                          "max_body_bytes",
                          "max_set_body_bytes",
                          "max_ops",
                          "rate_limit",
                          "rate_burst",
                          "max_connections",
                          "max_batch",
                          "log_level",
                          "default_owner",
                          "audit_max_age",
                          "audit_max_bytes",
                          "audit_body_bytes",
                          "audit_page_bytes",
                          "audit_prune_interval"}) {
    EXPECT_THAT(text, HasSubstr("| `" + std::string(key) + "` |")) << key;
    // A key absent from the parser would fail here.
    EXPECT_EQ(ParseConfig(std::string(key) + " = @@bad", "k").status().message().find("unknown key"), std::string::npos)
        << key;
  }
}

// The HTTP limits (docs/daemon.md "Connections and limits"): defaults, values, refusals, and documented.
TEST(ParseConfigTest, HttpLimits) {
  const DaemonConfig d;
  EXPECT_EQ(d.max_connections_per_peer, 128u);
  EXPECT_EQ(d.max_socket_connections, 64u);
  EXPECT_EQ(d.max_event_streams, 256u);
  EXPECT_EQ(d.event_buffer_bytes, size_t{1} << 20);
  EXPECT_EQ(d.max_header_bytes, 16384u);
  EXPECT_EQ(d.header_timeout, milliseconds(10000));
  EXPECT_EQ(d.body_timeout, milliseconds(30000));
  EXPECT_EQ(d.idle_timeout, milliseconds(5000));
  EXPECT_EQ(d.send_timeout, milliseconds(10000));
  EXPECT_EQ(d.io_threads, 2u);
  EXPECT_EQ(d.workers, 128u);
  EXPECT_EQ(d.socket_workers, 4u);

  Result<DaemonConfig> c = ParseConfig(R"(
max_connections_per_peer = 8
max_socket_connections = 9
max_event_streams = 10
event_buffer_bytes = 65536
max_header_bytes = 1024
header_timeout = 2s
body_timeout = 250ms
idle_timeout = 1h
send_timeout = 100ms
io_threads = 64
workers = 3
socket_workers = 1
)",
                                       "f.conf");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->max_connections_per_peer, 8u);
  EXPECT_EQ(c->max_socket_connections, 9u);
  EXPECT_EQ(c->max_event_streams, 10u);
  EXPECT_EQ(c->event_buffer_bytes, 65536u);
  EXPECT_EQ(c->max_header_bytes, 1024u);
  EXPECT_EQ(c->header_timeout, milliseconds(2000));
  EXPECT_EQ(c->body_timeout, milliseconds(250));
  EXPECT_EQ(c->idle_timeout, milliseconds(3600000));
  EXPECT_EQ(c->send_timeout, milliseconds(100));
  EXPECT_EQ(c->io_threads, 64u);
  EXPECT_EQ(c->workers, 3u);
  EXPECT_EQ(c->socket_workers, 1u);

  for (const auto& [line, reason] : std::vector<std::pair<std::string, std::string>>{
           {"max_connections_per_peer = 0", "positive integer"},
           {"max_socket_connections = -1", "positive integer"},
           {"max_event_streams = x", "positive integer"},
           {"event_buffer_bytes = 0", "positive integer"},
           {"max_header_bytes = 1023", "at least 1024"},
           {"header_timeout = 50ms", "100ms to 1h"},
           {"body_timeout = 2h", "100ms to 1h"},
           {"idle_timeout = 0", "duration"},
           {"send_timeout = soon", "duration"},
           {"io_threads = 65", "at most 64"},
           {"io_threads = 0", "positive integer"},
           {"workers = 0", "positive integer"},
           {"socket_workers = 1.5", "positive integer"},
       }) {
    Result<DaemonConfig> bad = ParseConfig(line, "c.conf");
    ASSERT_FALSE(bad.ok()) << line;
    EXPECT_THAT(bad.status().message(), HasSubstr(reason)) << line;
  }

  const std::filesystem::path doc = SourceDir() / "docs" / "daemon-config.md";
  std::ifstream in(doc);
  if (!in) GTEST_SKIP() << doc << " not found";
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string text = buf.str();
  for (const char* key : {"max_connections_per_peer", "max_socket_connections", "max_event_streams",
                          "event_buffer_bytes", "max_header_bytes", "header_timeout", "body_timeout", "idle_timeout",
                          "send_timeout", "io_threads", "workers", "socket_workers"}) {
    EXPECT_NE(text.find("| `" + std::string(key) + "` |"), std::string::npos) << key << " is not in " << doc;
  }
}

// Every key is a flag, and a flag's value gets the file's checks (regression, issue 8 item 9: --rate-burst 0 and
// --log-level bogus were accepted on the command line).
TEST(ConfigKeysTest, EveryKeyIsAFlagWithTheFilesChecks) {
  std::set<std::string> names;
  for (const ConfigKey& k : ConfigKeys()) {
    names.insert(k.name);
    std::string flag = "--" + k.name;
    std::replace(flag.begin(), flag.end(), '_', '-');
    EXPECT_EQ(k.flag, flag);
    EXPECT_FALSE(k.help.empty()) << k.name;
    EXPECT_EQ(ParseConfig(k.name + " = @@bad", "f").status().message().find("unknown key"), std::string::npos);
  }
  EXPECT_EQ(names.size(), 61u);
  EXPECT_TRUE(names.count("listen") && names.count("audit_max_age"));
  DaemonConfig c;
  ExpectInvalid(ApplyConfigValue("rate_burst", "0", &c), {"expected a number >= 1"});
  // The budget of failed authentications per client address (docs/daemon.md "Failed authentications").
  EXPECT_EQ(c.auth_failure_rate, 10);
  EXPECT_EQ(c.auth_failure_burst, 100);
  EXPECT_EQ(c.auth_failure_hold, std::chrono::seconds(1));
  ExpectInvalid(ApplyConfigValue("auth_failure_rate", "-1", &c), {"expected a number >= 0"});
  ExpectInvalid(ApplyConfigValue("auth_failure_burst", "0.5", &c), {"expected a number >= 1"});
  ExpectInvalid(ApplyConfigValue("auth_failure_hold", "10ms", &c), {"100ms to 1h"});
  ASSERT_TRUE(ApplyConfigValue("auth_failure_rate", "0", &c).ok());
  ASSERT_TRUE(ApplyConfigValue("auth_failure_burst", "3", &c).ok());
  ASSERT_TRUE(ApplyConfigValue("auth_failure_hold", "250ms", &c).ok());
  EXPECT_EQ(c.auth_failure_rate, 0);
  EXPECT_EQ(c.auth_failure_burst, 3);
  EXPECT_EQ(c.auth_failure_hold, milliseconds(250));
  ExpectInvalid(ApplyConfigValue("log_level", "bogus", &c), {"expected one of"});
  ExpectInvalid(ApplyConfigValue("nope", "1", &c), {"unknown key"});
  ExpectInvalid(ApplyConfigValue("max_set_body_bytes", "0", &c), {"positive integer"});
  ASSERT_TRUE(ApplyConfigValue("max_set_body_bytes", "1048576", &c).ok());
  EXPECT_EQ(c.max_set_body_bytes, size_t{1} << 20);
  ASSERT_TRUE(ApplyConfigValue("audit_max_age", "1d", &c).ok());
  EXPECT_EQ(c.audit_max_age, std::chrono::hours(24));
  ASSERT_TRUE(ApplyConfigValue("listen", "127.0.0.1:1", &c).ok());
  ASSERT_TRUE(ApplyConfigValue("listen", "127.0.0.1:2", &c).ok());
  EXPECT_EQ(c.listen.size(), 2u);
  // The dashboard's keys.
  ExpectInvalid(ApplyConfigValue("ui", "maybe", &c), {"expected one of on|off"});
  ASSERT_TRUE(ApplyConfigValue("ui", "off", &c).ok());
  EXPECT_FALSE(c.ui);
  ExpectInvalid(ApplyConfigValue("ui_dir", "relative/ui", &c), {"absolute path"});
  ExpectInvalid(ApplyConfigValue("ui_allowed_host", "a b", &c), {"host name"});
  ExpectInvalid(ApplyConfigValue("ui_allowed_host", "fw1.example.org:8080/x", &c), {"host name"});
  ASSERT_TRUE(ApplyConfigValue("ui_allowed_host", "FW1.example.org", &c).ok());
  EXPECT_EQ(c.ui_allowed_hosts, std::vector<std::string>{"fw1.example.org"});
  ExpectInvalid(ApplyConfigValue("counter_interval", "10ms", &c), {"at least 100ms"});
  ASSERT_TRUE(ApplyConfigValue("counter_interval", "0", &c).ok());
  EXPECT_EQ(c.counter_interval.count(), 0);
}

// The example shipped for /etc/iptkit/iptkitd.conf parses and validates.
TEST(DocsTest, PackagedConfigurationParses) {
  const std::string path = (SourceDir() / "packaging" / "iptkitd.conf").string();
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not found";
  Result<DaemonConfig> c = LoadConfigFile(path);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_TRUE(ValidateConfig(*c).ok()) << ValidateConfig(*c).ToString();
  EXPECT_EQ(c->listen.size(), 1u);
  EXPECT_EQ(c->socket, "/run/iptkitd/iptkitd.sock");
}

}  // namespace
}  // namespace iptkit::daemon
