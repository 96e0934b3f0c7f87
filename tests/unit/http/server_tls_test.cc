// Tests of the HTTP server's TLS (ServerOptions::tls) and admission check (ServerOptions::admit)
// over real sockets on 127.0.0.1, with an OpenSSL client that verifies the certificate.
// Certificates are made by the `openssl` command for each test.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "http/server.h"

namespace iot::http {
namespace {

namespace net = boost::asio;
namespace ssl = net::ssl;
namespace bhttp = beast::http;
namespace fs = std::filesystem;
using bhttp::field;
using bhttp::verb;
using tcp = net::ip::tcp;
using ::testing::HasSubstr;

// MakeCert writes a self-signed certificate for localhost/127.0.0.1 with common name `cn` to
// dir/cert.pem and its key to dir/key.pem (replacing them by a rename, as renewals do).
void MakeCert(const fs::path& dir, const std::string& cn) {
  const fs::path tmp = dir / "new";
  fs::create_directories(tmp);
  const std::string cmd =
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=" +
      cn + " -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " +
      (tmp / "key.pem").string() + " -out " + (tmp / "cert.pem").string() + " 2>/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  fs::rename(tmp / "key.pem", dir / "key.pem");
  fs::rename(tmp / "cert.pem", dir / "cert.pem");
}

// TlsClient is a blocking HTTPS client that trusts only `ca_file` and checks the host name.
class TlsClient {
 public:
  TlsClient(std::uint16_t port, const fs::path& ca_file) : ctx_(ssl::context::tls_client) {
    ctx_.load_verify_file(ca_file.string());
    ctx_.set_verify_mode(ssl::verify_peer);
    stream_ = std::make_unique<ssl::stream<tcp::socket>>(io_, ctx_);
    stream_->set_verify_callback(ssl::host_name_verification("localhost"));
    stream_->next_layer().connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), port));
  }

  boost::system::error_code Handshake() {
    boost::system::error_code ec;
    stream_->handshake(ssl::stream_base::client, ec);
    return ec;
  }

  Response Exchange(verb method, std::string target, std::string body = {}) {
    Request req(method, target, 11);
    req.set(field::host, "localhost");
    if (method == verb::post) req.set(field::content_type, "application/json");
    req.body() = std::move(body);
    req.prepare_payload();
    bhttp::write(*stream_, req);
    return Read();
  }

  Response Read() {
    Response res;
    bhttp::read(*stream_, buffer_, res);
    return res;
  }

  // ReadToEnd reads what the server sends until it closes the connection.
  std::string ReadToEnd() {
    std::string out(static_cast<const char*>(buffer_.data().data()), buffer_.size());
    buffer_.clear();
    char chunk[4096];
    boost::system::error_code ec;
    for (;;) {
      const std::size_t n = stream_->read_some(net::buffer(chunk), ec);
      out.append(chunk, n);
      if (ec) break;
    }
    return out;
  }

  void Send(std::string_view raw) { net::write(*stream_, net::buffer(raw.data(), raw.size())); }

  // PeerCommonName is the CN of the certificate the server presented.
  std::string PeerCommonName() {
    X509* cert = SSL_get1_peer_certificate(stream_->native_handle());
    if (cert == nullptr) return {};
    char cn[256] = {};
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
    X509_free(cert);
    return cn;
  }

 private:
  net::io_context io_;
  ssl::context ctx_;
  std::unique_ptr<ssl::stream<tcp::socket>> stream_;
  beast::flat_buffer buffer_;
};

class ServerTlsTest : public ::testing::Test {
 protected:
  ServerTlsTest()
      : dir_(fs::temp_directory_path() /
             ("iotd-tls-" + std::to_string(::getpid()) + "-" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name())),
        router_(std::make_shared<Router>()) {
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    MakeCert(dir_, "first");
    RouteOptions json;
    json.content_types = {"application/json"};
    router_->Add(
        verb::post, "/echo",
        [](const Request& req, const PathParams&, Respond respond) {
          respond(MakeJson(200, req.body()));
        },
        json);
    router_->AddStream(verb::get, "/events",
                       [](const Request&, const PathParams&,
                          std::shared_ptr<StreamWriter> w) -> std::optional<Response> {
                         w->Write("data: one\n\n");
                         w->Write("data: two\n\n");
                         w->Close();
                         return std::nullopt;
                       });
  }

  ~ServerTlsTest() override {
    if (server_) server_->Stop();
    for (auto& t : threads_) t.join();
    fs::remove_all(dir_);
  }

  ServerOptions TlsOptionsFor(std::chrono::milliseconds reload_check = std::chrono::seconds(5)) {
    ServerOptions o;
    o.address = "127.0.0.1";
    o.port = 0;
    o.tls = TlsOptions{.cert_file = (dir_ / "cert.pem").string(),
                       .key_file = (dir_ / "key.pem").string(),
                       .reload_check = reload_check};
    return o;
  }

  void Start(ServerOptions o) {
    server_ = std::make_unique<Server>(io_, std::move(o), router_);
    const Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s.error().message;
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { io_.run(); });
  }

  // Trust returns a copy of the current certificate, as a client's CA file.
  fs::path Trust(const std::string& name) {
    const fs::path ca = dir_ / (name + "-ca.pem");
    fs::copy_file(dir_ / "cert.pem", ca, fs::copy_options::overwrite_existing);
    return ca;
  }

  fs::path dir_;
  std::shared_ptr<Router> router_;
  net::io_context io_;
  std::unique_ptr<Server> server_;
  std::vector<std::thread> threads_;
};

TEST_F(ServerTlsTest, ServesAClientThatVerifiesTheCertificateOverOneKeepAliveConnection) {
  Start(TlsOptionsFor());
  TlsClient client(server_->port(), Trust("first"));
  ASSERT_FALSE(client.Handshake());
  EXPECT_EQ(client.PeerCommonName(), "first");
  for (int i = 0; i < 3; ++i) {
    Response res = client.Exchange(verb::post, "/echo", R"({"n":)" + std::to_string(i) + "}");
    EXPECT_EQ(res.result_int(), 200u);
    EXPECT_EQ(res.body(), R"({"n":)" + std::to_string(i) + "}");
  }
}

TEST_F(ServerTlsTest, AClientThatDoesNotTrustTheCertificateFailsTheHandshake) {
  Start(TlsOptionsFor());
  const fs::path stranger_dir = dir_ / "stranger";
  fs::create_directories(stranger_dir);
  MakeCert(stranger_dir, "stranger");
  TlsClient client(server_->port(), stranger_dir / "cert.pem");
  EXPECT_TRUE(client.Handshake());
}

TEST_F(ServerTlsTest, PlainHttpToTheTlsPortGetsNoHttpAnswer) {
  Start(TlsOptionsFor());
  net::io_context io;
  tcp::socket socket(io);
  socket.connect(tcp::endpoint(net::ip::make_address("127.0.0.1"), server_->port()));
  const std::string req = "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n";
  net::write(socket, net::buffer(req));
  std::string got(64, '\0');
  boost::system::error_code ec;
  const std::size_t n = net::read(socket, net::buffer(got), ec);
  EXPECT_TRUE(ec);  // closed by the server
  EXPECT_EQ(got.substr(0, n).find("HTTP/1.1"), std::string::npos);
}

TEST_F(ServerTlsTest, StartFailsNamingAKeyThatDoesNotMatchTheCertificate) {
  const fs::path other = dir_ / "other";
  fs::create_directories(other);
  MakeCert(other, "other");
  ServerOptions o = TlsOptionsFor();
  o.tls->key_file = (other / "key.pem").string();
  Server server(io_, o, router_);
  const Status s = server.Start();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::kInvalidArgument);
  EXPECT_THAT(s.error().message, HasSubstr(o.tls->key_file));
  EXPECT_THAT(s.error().message, HasSubstr("mismatch"));
}

TEST_F(ServerTlsTest, StartFailsNamingAMissingCertificate) {
  ServerOptions o = TlsOptionsFor();
  o.tls->cert_file = (dir_ / "missing.pem").string();
  Server server(io_, o, router_);
  const Status s = server.Start();
  ASSERT_FALSE(s.ok());
  EXPECT_THAT(s.error().message, HasSubstr("missing.pem"));
}

TEST_F(ServerTlsTest, ARenewedCertificateIsUsedForNewConnectionsWithoutARestart) {
  std::vector<std::string> warnings;
  ServerOptions o = TlsOptionsFor(std::chrono::milliseconds(0));
  o.warn = [&warnings](const std::string& w) { warnings.push_back(w); };
  Start(o);
  TlsClient before(server_->port(), Trust("first"));
  ASSERT_FALSE(before.Handshake());
  MakeCert(dir_, "second");
  TlsClient after(server_->port(), Trust("second"));
  ASSERT_FALSE(after.Handshake());
  EXPECT_EQ(after.PeerCommonName(), "second");
  EXPECT_EQ(after.Exchange(verb::post, "/echo", "{}").result_int(), 200u);
  // The connection opened before keeps working with its certificate.
  EXPECT_EQ(before.Exchange(verb::post, "/echo", "{}").result_int(), 200u);
  EXPECT_TRUE(warnings.empty());
}

TEST_F(ServerTlsTest, ABrokenRenewalKeepsThePreviousCertificateAndWarns) {
  std::vector<std::string> warnings;
  std::mutex mu;
  ServerOptions o = TlsOptionsFor(std::chrono::milliseconds(0));
  o.warn = [&](const std::string& w) {
    std::lock_guard lock(mu);
    warnings.push_back(w);
  };
  Start(o);
  const fs::path first = Trust("first");
  std::ofstream(dir_ / "cert.pem", std::ios::trunc) << "not a certificate\n";
  TlsClient client(server_->port(), first);
  ASSERT_FALSE(client.Handshake());
  EXPECT_EQ(client.PeerCommonName(), "first");
  EXPECT_EQ(client.Exchange(verb::post, "/echo", "{}").result_int(), 200u);
  std::lock_guard lock(mu);
  ASSERT_FALSE(warnings.empty());
  EXPECT_THAT(warnings[0], HasSubstr("still using the previous certificate"));
}

TEST_F(ServerTlsTest, AStreamIsServedOverTlsAndEndsAfterItsEvents) {
  Start(TlsOptionsFor());
  TlsClient client(server_->port(), Trust("first"));
  ASSERT_FALSE(client.Handshake());
  client.Send("GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n");
  const std::string all = client.ReadToEnd();
  EXPECT_THAT(all, HasSubstr("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(all, HasSubstr("data: one\n\ndata: two\n\n"));
}

// ---- admission (ServerOptions::admit) -------------------------------------------------------

TEST_F(ServerTlsTest, AdmitRefusesBeforeTheHandlerAndTheConnectionGoesOn) {
  std::vector<std::string> peers;
  std::mutex mu;
  ServerOptions o = TlsOptionsFor();
  o.admit = [&](const Request& req, const net::ip::address& peer,
                std::string_view route) -> std::optional<Response> {
    {
      std::lock_guard lock(mu);
      peers.push_back(peer.to_string() + " " + std::string(route));
    }
    if (req["X-Limit"] != "yes") return std::nullopt;
    Response r = MakeError(429, "rate_limited", "slow down");
    r.set(field::retry_after, "3");
    return r;
  };
  Start(o);
  TlsClient client(server_->port(), Trust("first"));
  ASSERT_FALSE(client.Handshake());
  // A refused request with a body, then an admitted one on the same connection.
  client.Send(
      "POST /echo HTTP/1.1\r\nHost: localhost\r\nX-Limit: yes\r\n"
      "Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}");
  const Response refused = client.Read();
  EXPECT_EQ(refused.result_int(), 429u);
  EXPECT_EQ(refused[field::retry_after], "3");
  EXPECT_THAT(refused.body(), HasSubstr("rate_limited"));
  const Response admitted = client.Exchange(verb::post, "/echo", R"({"b":2})");
  EXPECT_EQ(admitted.result_int(), 200u);
  EXPECT_EQ(admitted.body(), R"({"b":2})");
  std::lock_guard lock(mu);
  ASSERT_EQ(peers.size(), 2u);
  EXPECT_EQ(peers[0], "127.0.0.1 /echo");
}

}  // namespace
}  // namespace iot::http
