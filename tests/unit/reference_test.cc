#include "image/reference.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace berth::image {
namespace {

const std::string kHex(64, 'a');

struct Normalized {
  std::string in, domain, path, tag, str, familiar;
};

TEST(Reference, NormalizesAsDockerDoes) {
  std::vector<Normalized> cases = {
      {"busybox", "docker.io", "library/busybox", "latest", "docker.io/library/busybox:latest", "busybox:latest"},
      {"busybox:1.36", "docker.io", "library/busybox", "1.36", "docker.io/library/busybox:1.36", "busybox:1.36"},
      {"user/app", "docker.io", "user/app", "latest", "docker.io/user/app:latest", "user/app:latest"},
      {"docker.io/busybox", "docker.io", "library/busybox", "latest", "docker.io/library/busybox:latest", "busybox:latest"},
      {"index.docker.io/library/busybox:x", "docker.io", "library/busybox", "x", "docker.io/library/busybox:x", "busybox:x"},
      {"docker.io/library/a/b", "docker.io", "library/a/b", "latest", "docker.io/library/a/b:latest", "library/a/b:latest"},
      {"localhost/app", "localhost", "app", "latest", "localhost/app:latest", "localhost/app:latest"},
      {"localhost:5000/app:1", "localhost:5000", "app", "1", "localhost:5000/app:1", "localhost:5000/app:1"},
      {"[::1]:5000/a/b:v_1.0-rc", "[::1]:5000", "a/b", "v_1.0-rc", "[::1]:5000/a/b:v_1.0-rc", "[::1]:5000/a/b:v_1.0-rc"},
      {"Example.COM/x", "Example.COM", "x", "latest", "Example.COM/x:latest", "Example.COM/x:latest"},
      {"quay.io/a.b/c__d/e---f_g", "quay.io", "a.b/c__d/e---f_g", "latest", "quay.io/a.b/c__d/e---f_g:latest",
       "quay.io/a.b/c__d/e---f_g:latest"},
      // A name without '/' that looks like host:port is a name and a tag, as for Docker.
      {"localhost:5000", "docker.io", "library/localhost", "5000", "docker.io/library/localhost:5000", "localhost:5000"},
  };
  for (const auto& c : cases) {
    auto r = Reference::parse(c.in);
    ASSERT_TRUE(r) << c.in << ": " << r.error().str();
    EXPECT_EQ(r->domain, c.domain) << c.in;
    EXPECT_EQ(r->path, c.path) << c.in;
    EXPECT_EQ(r->tag, c.tag) << c.in;
    EXPECT_FALSE(r->digest) << c.in;
    EXPECT_EQ(r->str(), c.str) << c.in;
    EXPECT_EQ(r->familiar(), c.familiar) << c.in;
    EXPECT_EQ(r->manifest_ref(), c.tag) << c.in;
  }
  EXPECT_EQ(Reference::parse("busybox")->repository(), "docker.io/library/busybox");
  EXPECT_EQ(Reference::parse("busybox")->familiar_repository(), "busybox");
  EXPECT_EQ(Reference::parse("localhost:5000/app")->familiar_repository(), "localhost:5000/app");
}

TEST(Reference, DigestsWithAndWithoutTag) {
  auto r = Reference::parse("busybox@sha256:" + kHex);
  ASSERT_TRUE(r) << r.error().str();
  EXPECT_EQ(r->tag, "");
  ASSERT_TRUE(r->digest);
  EXPECT_EQ(r->digest->hex, kHex);
  EXPECT_EQ(r->str(), "docker.io/library/busybox@sha256:" + kHex);
  EXPECT_EQ(r->familiar(), "busybox@sha256:" + kHex);
  EXPECT_EQ(r->manifest_ref(), "sha256:" + kHex);

  auto both = Reference::parse("localhost:5000/app:1@sha256:" + kHex);
  ASSERT_TRUE(both) << both.error().str();
  EXPECT_EQ(both->domain, "localhost:5000");
  EXPECT_EQ(both->tag, "1");
  EXPECT_EQ(both->str(), "localhost:5000/app:1@sha256:" + kHex);
  EXPECT_EQ(both->manifest_ref(), "1");
}

TEST(Reference, RefusesMalformedNamesNamingThem) {
  std::vector<std::string> bad = {
      "",
      "Busybox",                      // upper case in the path
      "docker.io/Library/busybox",    // upper case after the domain
      "a//b",                         // empty component
      "a/",                           // empty last component
      "/a",                           // empty first component
      "a..b", "a___b", "a._b", "-a", "a-", "_a", "a/.b",
      "busybox:",                     // empty tag
      "busybox:.x", "busybox:-x", "busybox:a+b",
      "busybox:" + std::string(129, 'a'),
      "busybox@sha256:abc",           // malformed digest
      "busybox@md5:" + kHex,          // unsupported algorithm
      "busybox@",
      kHex,                           // an image ID is not a name
      "exa_mple.com/app",             // '_' in a domain makes it a domain, and an invalid one
      "-example.com/app", "example-.com/app", "example..com/app", "host:/app", "host:5x/app",
      "[::1/app", "[]:5000/app", "[::1]x/app", "[::g]/app",
      ":tag",
      "localhost:5000/" + std::string(250, 'a'),  // longer than 255 in all
  };
  for (const auto& s : bad) {
    auto r = Reference::parse(s);
    ASSERT_FALSE(r) << "accepted \"" << s << "\" as " << r->str();
    EXPECT_NE(r.error().str().find("reference \"" + s + "\""), std::string::npos) << r.error().str();
  }
  EXPECT_NE(Reference::parse("Busybox").error().str().find("must be lowercase"), std::string::npos);
  EXPECT_NE(Reference::parse("busybox:a+b").error().str().find("invalid tag \"a+b\""), std::string::npos);
  // The longest tag allowed.
  EXPECT_TRUE(Reference::parse("busybox:" + std::string(128, 'a')));
  EXPECT_TRUE(Reference::parse("busybox:_"));
}

TEST(Reference, LoopbackDomains) {
  for (std::string d : {"localhost", "localhost:5000", "LocalHost:1", "127.0.0.1", "127.0.0.1:5000", "127.1.2.3:80",
                        "[::1]", "[::1]:5000", "[0:0:0:0:0:0:0:1]:5000"}) {
    auto r = Reference::parse(d + "/app");
    ASSERT_TRUE(r) << d << ": " << r.error().str();
    EXPECT_TRUE(r->loopback()) << d;
  }
  for (std::string d : {"docker.io", "example.com:5000", "128.0.0.1:5000", "10.0.0.1", "[::2]:5000", "localhost.example.com",
                        "127.0.0.1.nip.io"}) {
    auto r = Reference::parse(d + "/app");
    ASSERT_TRUE(r) << d << ": " << r.error().str();
    EXPECT_FALSE(r->loopback()) << d;
  }
}

}  // namespace
}  // namespace berth::image
