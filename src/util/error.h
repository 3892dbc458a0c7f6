// Value-or-error for every fallible call in libberth.
//
// An Error carries the errno of the failing syscall (0 when the failure is not a
// syscall's) and a message built from the inside out: each caller that wraps it
// prepends what it was doing, so the top level prints one line such as
//   create container "web": mount proc on /proc: Operation not permitted
#pragma once

#include <cerrno>
#include <cstring>
#include <expected>
#include <string>
#include <string_view>
#include <utility>

namespace berth {

struct Error {
  int err = 0;
  std::string msg;

  // "what: strerror(err)" when err is set, otherwise just "what".
  std::string str() const {
    if (err == 0) return msg;
    std::string s = msg;
    if (!s.empty()) s += ": ";
    s += std::strerror(err);
    return s;
  }
  Error&& context(std::string_view what) && {
    std::string s(what);
    if (!msg.empty()) {
      s += ": ";
      s += msg;
    }
    msg = std::move(s);
    return std::move(*this);
  }
};

template <class T = void>
using Result = std::expected<T, Error>;

// An error from the current errno.
[[nodiscard]] inline std::unexpected<Error> sys_error(std::string what) {
  return std::unexpected(Error{errno, std::move(what)});
}
[[nodiscard]] inline std::unexpected<Error> sys_error(int err, std::string what) {
  return std::unexpected(Error{err, std::move(what)});
}
// An error that is not a syscall's (bad input, failed check).
[[nodiscard]] inline std::unexpected<Error> fail(std::string what) {
  return std::unexpected(Error{0, std::move(what)});
}

}  // namespace berth

// TRY(expr): evaluates a Result; on error returns it from the enclosing function,
// otherwise yields the value (or void).
#define TRY(expr)                                                  \
  ({                                                               \
    auto&& berth_try_r_ = (expr);                                  \
    if (!berth_try_r_) [[unlikely]]                                \
      return std::unexpected(std::move(berth_try_r_).error());     \
    std::move(berth_try_r_).value();                               \
  })

// TRY_CTX(expr, what): as TRY, prefixing the error with `what`.
#define TRY_CTX(expr, what)                                                    \
  ({                                                                           \
    auto&& berth_try_r_ = (expr);                                              \
    if (!berth_try_r_) [[unlikely]]                                            \
      return std::unexpected(std::move(berth_try_r_).error().context(what));   \
    std::move(berth_try_r_).value();                                           \
  })
