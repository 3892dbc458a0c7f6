#include "engine/logfile.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <regex>
#include <thread>

#include "util/fs.h"

namespace berth::engine {
namespace {

using namespace std::string_literals;

constexpr int64_t kSec = 1'000'000'000;
constexpr int64_t kT0 = 1'700'000'000 * kSec;  // 2023-11-14T22:13:20Z

int64_t now_ns() {
  struct timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return ts.tv_sec * kSec + ts.tv_nsec;
}

class LogFile : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/berth-log-XXXXXX";
    ASSERT_TRUE(::mkdtemp(tmpl));
    dir_ = tmpl;
    path_ = dir_ + "/ctr-json.log";
  }
  void TearDown() override { (void)remove_tree(dir_); }

  std::vector<LogEntry> read(const LogReadOptions& o = {}) {
    std::vector<LogEntry> out;
    auto r = read_logs(path_, o, [&](const LogEntry& e) { out.push_back(e); });
    EXPECT_TRUE(r) << r.error().str();
    return out;
  }
  std::vector<std::string> texts(const LogReadOptions& o = {}) {
    std::vector<std::string> out;
    for (auto& e : read(o)) out.push_back(e.text);
    return out;
  }
  std::string raw(const std::string& p) {
    auto r = read_file(p);
    EXPECT_TRUE(r) << r.error().str();
    return r ? *r : "";
  }
  // An entry as Docker writes it, at kT0 + `s` seconds.
  static std::string entry(const std::string& text, int s) {
    return R"({"log":")" + text + R"(\n","stream":"stdout","time":")" + format_log_time(kT0 + s * kSec) + "\"}\n";
  }

  std::string dir_, path_;
};

TEST_F(LogFile, EscapingMatchesDockerAndRoundTrips) {
  // Quote, backslash, controls (NUL, tab, CR, ESC), HTML characters, U+2028,
  // valid multibyte text, then invalid UTF-8: stray bytes, a cut sequence, a
  // surrogate and an overlong encoding.
  std::string in = "q\" b\\ t\t cr\r esc\x1b nul\0 <a>&b \u2028 \u00e9\u20ac\U0001F600 bad\xff\xfe"
                   " cut\xe2\x82 sur\xed\xa0\x80 over\xc0\xaf end\n"s;
  {
    auto w = LogWriter::open(path_);
    ASSERT_TRUE(w) << w.error().str();
    ASSERT_TRUE(w->write("stdout", in));
  }
  std::string file = raw(path_);
  std::string want = R"({"log":"q\" b\\ t\u0009 cr\r esc\u001b nul\u0000 \u003ca\u003e\u0026b \u2028 )"
                     "\u00e9\u20ac\U0001F600"
                     R"( bad\ufffd\ufffd cut\ufffd\ufffd sur\ufffd\ufffd\ufffd over\ufffd\ufffd end\n",)"
                     R"("stream":"stdout","time":")";
  ASSERT_EQ(file.substr(0, want.size()), want);
  EXPECT_TRUE(file.ends_with("\"}\n"));

  auto got = read();
  ASSERT_EQ(got.size(), 1u);
  std::string fffd = "\xef\xbf\xbd";
  std::string decoded = "q\" b\\ t\t cr\r esc\x1b nul\0 <a>&b \u2028 \u00e9\u20ac\U0001F600 bad"s + fffd + fffd +
                        " cut" + fffd + fffd + " sur" + fffd + fffd + fffd + " over" + fffd + fffd + " end\n";
  EXPECT_EQ(got[0].text, decoded);
  EXPECT_EQ(got[0].stream, "stdout");
}

TEST_F(LogFile, TimeIsRFC3339NanoWithTrailingZerosTrimmed) {
  int64_t before = now_ns();
  {
    auto w = LogWriter::open(path_);
    ASSERT_TRUE(w);
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(w->write("stderr", "x\n"));
  }
  int64_t after = now_ns();
  std::regex re(R"(\{"log":"x\\n","stream":"stderr","time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z"\})");
  std::string file = raw(path_);
  for (size_t start = 0, nl; (nl = file.find('\n', start)) != std::string::npos; start = nl + 1)
    EXPECT_TRUE(std::regex_match(file.substr(start, nl - start), re)) << file.substr(start, nl - start);
  auto got = read();
  ASSERT_EQ(got.size(), 20u);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_GE(got[i].time_ns, before);
    EXPECT_LE(got[i].time_ns, after);
    if (i > 0) {
      EXPECT_GE(got[i].time_ns, got[i - 1].time_ns);
    }
  }
}

TEST_F(LogFile, PartialLinesJoinAcrossWrites) {
  {
    auto w = LogWriter::open(path_);
    ASSERT_TRUE(w);
    ASSERT_TRUE(w->write("stdout", "hel"));
    ASSERT_TRUE(w->write("stderr", "warn"));
    ASSERT_TRUE(w->write("stdout", "lo\nwor"));
    ASSERT_TRUE(w->write("stderr", "ing\n"));
    ASSERT_TRUE(w->write("stdout", "ld\n\nlast\n"));
  }
  auto got = read();
  ASSERT_EQ(got.size(), 5u);
  std::vector<std::pair<std::string, std::string>> want = {
      {"stdout", "hello\n"}, {"stderr", "warning\n"}, {"stdout", "world\n"}, {"stdout", "\n"}, {"stdout", "last\n"}};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].stream, want[i].first);
    EXPECT_EQ(got[i].text, want[i].second);
  }
}

TEST_F(LogFile, FlushWritesPartialLinesWithoutNewline) {
  auto w = LogWriter::open(path_);
  ASSERT_TRUE(w);
  ASSERT_TRUE(w->write("stdout", "done\nno newline"));
  ASSERT_TRUE(w->write("stderr", "err tail"));
  EXPECT_EQ(texts(), std::vector<std::string>{"done\n"});
  ASSERT_TRUE(w->flush());
  ASSERT_TRUE(w->flush());  // nothing left: writes nothing
  EXPECT_EQ(texts(), (std::vector<std::string>{"done\n", "no newline", "err tail"}));
  EXPECT_TRUE(raw(path_).find(R"("log":"no newline","stream":"stdout")") != std::string::npos);
}

TEST_F(LogFile, LongLinesSplitInto16KiBPieces) {
  const size_t k = 16 * 1024;
  std::string long_line(40000, 'x');
  std::string exact(k, 'e');
  std::string utf8 = std::string(k - 1, 'a') + "\u20ac\u20ac";  // the first euro sign would straddle 16 KiB
  {
    auto w = LogWriter::open(path_);
    ASSERT_TRUE(w);
    ASSERT_TRUE(w->write("stdout", long_line + "\n"));
    // The same line arriving in small reads.
    for (size_t i = 0; i < long_line.size(); i += 1000) ASSERT_TRUE(w->write("stdout", long_line.substr(i, 1000)));
    ASSERT_TRUE(w->write("stdout", "\n" + exact + "\n" + utf8 + "\n"));
    ASSERT_TRUE(w->write("stdout", std::string(20000, 'y')));
    ASSERT_TRUE(w->flush());
  }
  auto got = texts();
  std::vector<std::string> want = {
      std::string(k, 'x'), std::string(k, 'x'), std::string(40000 - 2 * k, 'x') + "\n",
      std::string(k, 'x'), std::string(k, 'x'), std::string(40000 - 2 * k, 'x') + "\n",
      exact + "\n",
      std::string(k - 1, 'a'), "\u20ac\u20ac\n",
      std::string(k, 'y'), std::string(20000 - k, 'y'),
  };
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(got[i], want[i]) << "entry " << i;
}

TEST_F(LogFile, RotationKeepsMaxFilesAndReadsThemInOrder) {
  {
    auto w = LogWriter::open(path_, 1000, 3);
    ASSERT_TRUE(w);
    for (int i = 0; i < 100; ++i) ASSERT_TRUE(w->write("stdout", "line " + std::to_string(i) + "\n"));
  }
  EXPECT_TRUE(path_exists(path_ + ".1"));
  EXPECT_TRUE(path_exists(path_ + ".2"));
  EXPECT_FALSE(path_exists(path_ + ".3"));
  size_t lines = 0;
  for (auto p : {path_, path_ + ".1", path_ + ".2"}) {
    std::string f = raw(p);
    EXPECT_LE(f.size(), 1000u) << p;
    // About 80 bytes an entry: a file is rotated when the next one does not fit.
    if (p != path_) {
      EXPECT_GT(f.size(), 900u) << p;
    }
    lines += static_cast<size_t>(std::count(f.begin(), f.end(), '\n'));
  }
  auto got = texts();
  ASSERT_EQ(got.size(), lines);
  ASSERT_LT(got.size(), 100u);
  size_t first = 100 - got.size();
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], "line " + std::to_string(first + i) + "\n");
}

TEST_F(LogFile, RotationWithOneFileEmptiesIt) {
  {
    auto w = LogWriter::open(path_, 1000, 1);
    ASSERT_TRUE(w);
    for (int i = 0; i < 30; ++i) ASSERT_TRUE(w->write("stdout", "line " + std::to_string(i) + "\n"));
  }
  EXPECT_FALSE(path_exists(path_ + ".1"));
  auto got = texts();
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back(), "line 29\n");
  EXPECT_EQ(got.front(), "line " + std::to_string(30 - got.size()) + "\n");
}

TEST_F(LogFile, SinceUntilAndTailAcrossRotatedFiles) {
  std::string older, current;
  for (int i = 0; i < 5; ++i) older += entry("e" + std::to_string(i), i);
  for (int i = 5; i < 10; ++i) current += entry("e" + std::to_string(i), i);
  current += "garbage\n\n{\"log\":\"no time\\n\"}\n";
  // Another zone's offset, and a last line the writer never ended (read
  // when not following).
  current += R"({"log":"e10\n","stream":"stderr","time":"2023-11-14T23:13:30+01:00"})";
  ASSERT_TRUE(atomic_write_file(path_ + ".1", older, 0640));
  ASSERT_TRUE(atomic_write_file(path_, current, 0640));
  auto names = [](int from, int to) {
    std::vector<std::string> v;
    for (int i = from; i <= to; ++i) v.push_back("e" + std::to_string(i) + "\n");
    return v;
  };

  auto all = read();
  ASSERT_EQ(all.size(), 11u);
  for (int i = 0; i <= 10; ++i) EXPECT_EQ(all[i].time_ns, kT0 + i * kSec);
  EXPECT_EQ(all[10].stream, "stderr");

  LogReadOptions o;
  o.since_ns = kT0 + 3 * kSec;
  o.until_ns = kT0 + 7 * kSec;
  EXPECT_EQ(texts(o), names(3, 7));
  o = {};
  o.since_ns = kT0 + 3 * kSec + 1;
  EXPECT_EQ(texts(o), names(4, 10));
  o = {};
  o.tail = 3;
  EXPECT_EQ(texts(o), names(8, 10));
  o.tail = 7;
  EXPECT_EQ(texts(o), names(4, 10));
  o.tail = 100;
  EXPECT_EQ(texts(o), names(0, 10));
  o.tail = 0;
  EXPECT_TRUE(texts(o).empty());
  o.tail = 3;
  o.until_ns = kT0 + 6 * kSec;
  EXPECT_EQ(texts(o), names(4, 6));
  o.since_ns = kT0 + 5 * kSec;
  EXPECT_EQ(texts(o), names(5, 6));
}

TEST_F(LogFile, MissingFileReadsEmpty) { EXPECT_TRUE(read().empty()); }

TEST_F(LogFile, FollowPicksUpNewLinesAcrossRotation) {
  {
    auto w = LogWriter::open(path_, 1000, 2);
    ASSERT_TRUE(w);
    ASSERT_TRUE(w->write("stdout", "old 0\nold 1\n"));
  }
  std::atomic<bool> done = false;
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto w = LogWriter::open(path_, 1000, 2);
    ASSERT_TRUE(w);
    for (int i = 0; i < 20; ++i) {
      ASSERT_TRUE(w->write("stdout", "new " + std::to_string(i) + "\n"));
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    done = true;
  });
  LogReadOptions o;
  o.tail = 1;
  o.follow = true;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  o.keep_following = [&] { return !done && std::chrono::steady_clock::now() < deadline; };
  auto got = texts(o);
  writer.join();
  EXPECT_TRUE(path_exists(path_ + ".1"));  // 22 entries of ~80 bytes: rotated once
  std::vector<std::string> want = {"old 1\n"};
  for (int i = 0; i < 20; ++i) want.push_back("new " + std::to_string(i) + "\n");
  EXPECT_EQ(got, want);
}

// A writer flooding the log with rotations every few entries: the reader, far
// behind, walks the rotated files from the one it was reading up to path.
TEST_F(LogFile, FollowKeepsUpWithRotationFlood) {
  std::atomic<bool> done = false;
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto w = LogWriter::open(path_, 1000, 100);  // ~50 files: none dropped
    ASSERT_TRUE(w);
    for (int i = 0; i < 600; ++i) ASSERT_TRUE(w->write("stdout", "new " + std::to_string(i) + "\n"));
    done = true;
  });
  LogReadOptions o;
  o.follow = true;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  o.keep_following = [&] { return !done && std::chrono::steady_clock::now() < deadline; };
  auto got = texts(o);
  writer.join();
  std::vector<std::string> want;
  for (int i = 0; i < 600; ++i) want.push_back("new " + std::to_string(i) + "\n");
  EXPECT_EQ(got, want);
}

TEST_F(LogFile, FollowWaitsForTheFile) {
  std::atomic<bool> done = false;
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto w = LogWriter::open(path_);
    ASSERT_TRUE(w);
    ASSERT_TRUE(w->write("stderr", "a\nb"));
    ASSERT_TRUE(w->flush());
    done = true;
  });
  LogReadOptions o;
  o.follow = true;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  o.keep_following = [&] { return !done && std::chrono::steady_clock::now() < deadline; };
  auto got = texts(o);
  writer.join();
  EXPECT_EQ(got, (std::vector<std::string>{"a\n", "b"}));
}

TEST_F(LogFile, FollowStopsAtUntil) {
  ASSERT_TRUE(atomic_write_file(path_, entry("e0", 0) + entry("e1", 1), 0640));
  LogReadOptions o;
  o.follow = true;
  o.until_ns = kT0;
  o.keep_following = [] { return true; };  // never asked to stop: --until ends it
  EXPECT_EQ(texts(o), std::vector<std::string>{"e0\n"});
}

TEST(LogTime, ParsesDurationsTimestampsAndUnixSeconds) {
  const int64_t now = kT0 + 123;
  auto parse = [&](std::string_view s) {
    auto r = parse_log_time(s, now);
    EXPECT_TRUE(r) << s << ": " << r.error().str();
    return r ? *r : -1;
  };
  EXPECT_EQ(parse("10m"), now - 600 * kSec);
  EXPECT_EQ(parse("42s"), now - 42 * kSec);
  EXPECT_EQ(parse("1h30m"), now - 5400 * kSec);
  EXPECT_EQ(parse("1.5h"), now - 5400 * kSec);
  EXPECT_EQ(parse("2h45m30.5s"), now - (9930 * kSec + kSec / 2));
  EXPECT_EQ(parse("500ms"), now - kSec / 2);
  EXPECT_EQ(parse("-1h"), now + 3600 * kSec);

  EXPECT_EQ(parse("2023-11-14T22:13:20Z"), kT0);
  EXPECT_EQ(parse("2023-11-14T22:13:20.5Z"), kT0 + kSec / 2);
  EXPECT_EQ(parse("2023-11-14T23:13:20.123456789+01:00"), kT0 + 123456789);
  EXPECT_EQ(parse("2023-11-14T16:43:20-05:30"), kT0);
  EXPECT_EQ(parse("2023-11-14T22:13Z"), kT0 - 20 * kSec);

  EXPECT_EQ(parse("1700000000"), kT0);
  EXPECT_EQ(parse("1700000000.5"), kT0 + kSec / 2);
  EXPECT_EQ(parse("1700000000.000000001"), kT0 + 1);
  EXPECT_EQ(parse("0"), 0);  // the epoch, not "now": Docker's exception
}

TEST(LogTime, NoZoneIsLocalTime) {
  const char* old = ::getenv("TZ");
  std::string saved = old ? old : "";
  ::setenv("TZ", "UTC+2", 1);  // POSIX sign: two hours behind UTC
  ::tzset();
  auto r = parse_log_time("2023-11-14T20:13:20", kT0);
  auto d = parse_log_time("2023-11-14", kT0);
  old ? ::setenv("TZ", saved.c_str(), 1) : ::unsetenv("TZ");
  ::tzset();
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, kT0);
  ASSERT_TRUE(d);
  EXPECT_EQ(*d, kT0 - (22 * 3600 + 13 * 60 + 20) * kSec + 2 * 3600 * kSec);
}

TEST(LogTime, RejectsWhatIsNeither) {
  for (std::string_view s : {"xyz", "", "10x", "1h30", "h", "1.2.3", "-5", "1700000000.", "1700000000.5x",
                             "2023-13-01T00:00:00Z", "2023-02-29T00:00:00Z", "2023-11-14T25:00:00Z",
                             "2023-11-14T22:13:20+1:00", "2023-11-14T22:13:20Zjunk", "99999999999"}) {
    auto r = parse_log_time(s, kT0);
    EXPECT_FALSE(r) << s;
  }
  auto r = parse_log_time("xyz", kT0);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().str(), "\"xyz\" is not a timestamp or a duration");
}

TEST(LogTime, FormatsWithNineDigits) {
  EXPECT_EQ(format_log_time(0), "1970-01-01T00:00:00.000000000Z");
  EXPECT_EQ(format_log_time(kT0), "2023-11-14T22:13:20.000000000Z");
  EXPECT_EQ(format_log_time(kT0 + 123456789), "2023-11-14T22:13:20.123456789Z");
  EXPECT_EQ(format_log_time(-1), "1969-12-31T23:59:59.999999999Z");
  auto leap = parse_log_time("2024-02-29T12:00:00.000000010Z", 0);
  ASSERT_TRUE(leap);
  EXPECT_EQ(format_log_time(*leap), "2024-02-29T12:00:00.000000010Z");
}

}  // namespace
}  // namespace berth::engine
