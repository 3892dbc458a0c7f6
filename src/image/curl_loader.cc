#include "image/curl_loader.h"

// The forwarders below define curl_easy_setopt/getinfo: not curl's type-checking macros.
#define CURL_DISABLE_TYPECHECK
#include <curl/curl.h>
#include <dlfcn.h>

#include <cstdarg>
#include <mutex>
#include <string>

// Defined (true) only in the static `berth` (cli/berth/lite_stubs.cc), which
// must not dlopen a library that brings a libc of its own.
extern "C" {
__attribute__((weak)) extern const bool berth_without_libcurl;
}

namespace berth::image {

namespace {

// curl_easy_setopt/getinfo take one variadic argument: a long, a pointer, a
// curl_off_t or a function pointer. On the 64-bit ABIs berth targets (x86-64,
// aarch64) all are passed the same way, in one integer register or stack slot,
// so the forwarders read it as a pointer and pass it on unchanged.
static_assert(sizeof(long) == sizeof(void*) && sizeof(curl_off_t) == sizeof(void*),
              "the variadic forwarders assume 64-bit integer and pointer arguments");

struct Api {
  void* handle = nullptr;
  std::string error;
  CURLcode (*global_init)(long);
  CURL* (*easy_init)();
  void (*easy_cleanup)(CURL*);
  void (*easy_reset)(CURL*);
  CURLcode (*easy_perform)(CURL*);
  CURLcode (*easy_setopt)(CURL*, CURLoption, ...);
  CURLcode (*easy_getinfo)(CURL*, CURLINFO, ...);
  const char* (*easy_strerror)(CURLcode);
  void (*free)(void*);
  curl_slist* (*slist_append)(curl_slist*, const char*);
  void (*slist_free_all)(curl_slist*);
  CURLU* (*url)();
  void (*url_cleanup)(CURLU*);
  CURLUcode (*url_get)(CURLU*, CURLUPart, char**, unsigned int);
  CURLUcode (*url_set)(CURLU*, CURLUPart, const char*, unsigned int);
};

template <class F>
bool bind(Api& a, F& f, const char* name) {
  f = reinterpret_cast<F>(::dlsym(a.handle, name));
  if (!f) a.error = std::string("libcurl.so.4: no symbol ") + name;
  return f != nullptr;
}

Api& api() {
  static Api a;
  static std::once_flag once;
  std::call_once(once, [] {
    if (&berth_without_libcurl && berth_without_libcurl) {
      a.error = "internal error: libcurl is loaded by berth-full only; this command should have run there";
      return;
    }
    a.handle = ::dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!a.handle) {
      const char* e = ::dlerror();
      a.error = std::string("load libcurl.so.4 (apt-get install libcurl4): ") + (e ? e : "unknown error");
      return;
    }
    bool ok = bind(a, a.global_init, "curl_global_init") && bind(a, a.easy_init, "curl_easy_init") &&
              bind(a, a.easy_cleanup, "curl_easy_cleanup") && bind(a, a.easy_reset, "curl_easy_reset") &&
              bind(a, a.easy_perform, "curl_easy_perform") && bind(a, a.easy_setopt, "curl_easy_setopt") &&
              bind(a, a.easy_getinfo, "curl_easy_getinfo") && bind(a, a.easy_strerror, "curl_easy_strerror") &&
              bind(a, a.free, "curl_free") && bind(a, a.slist_append, "curl_slist_append") &&
              bind(a, a.slist_free_all, "curl_slist_free_all") && bind(a, a.url, "curl_url") &&
              bind(a, a.url_cleanup, "curl_url_cleanup") && bind(a, a.url_get, "curl_url_get") &&
              bind(a, a.url_set, "curl_url_set");
    if (!ok) return;
    if (a.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) a.error = "libcurl: curl_global_init failed";
  });
  return a;
}

}  // namespace

Result<> load_curl() {
  Api& a = api();
  if (!a.error.empty()) return fail(a.error);
  return {};
}

}  // namespace berth::image

// The forwarders. Callers have gone through load_curl(); a call without it
// still loads the library, and fails as curl would on an allocation failure.
using berth::image::api;

extern "C" {

CURLcode curl_global_init(long) { return berth::image::load_curl() ? CURLE_OK : CURLE_FAILED_INIT; }
CURL* curl_easy_init() { return berth::image::load_curl() ? api().easy_init() : nullptr; }
void curl_easy_cleanup(CURL* h) { api().easy_cleanup(h); }
void curl_easy_reset(CURL* h) { api().easy_reset(h); }
CURLcode curl_easy_perform(CURL* h) { return api().easy_perform(h); }
CURLcode curl_easy_setopt(CURL* h, CURLoption o, ...) {
  va_list ap;
  va_start(ap, o);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  return api().easy_setopt(h, o, arg);
}
CURLcode curl_easy_getinfo(CURL* h, CURLINFO i, ...) {
  va_list ap;
  va_start(ap, i);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  return api().easy_getinfo(h, i, arg);
}
const char* curl_easy_strerror(CURLcode c) {
  return berth::image::load_curl() ? api().easy_strerror(c) : "libcurl is not loaded";
}
void curl_free(void* p) {
  if (p) api().free(p);
}
curl_slist* curl_slist_append(curl_slist* l, const char* s) {
  return berth::image::load_curl() ? api().slist_append(l, s) : nullptr;
}
void curl_slist_free_all(curl_slist* l) {
  if (l) api().slist_free_all(l);
}
CURLU* curl_url() { return berth::image::load_curl() ? api().url() : nullptr; }
void curl_url_cleanup(CURLU* u) {
  if (u) api().url_cleanup(u);
}
CURLUcode curl_url_get(CURLU* u, CURLUPart p, char** out, unsigned int f) { return api().url_get(u, p, out, f); }
CURLUcode curl_url_set(CURLU* u, CURLUPart p, const char* s, unsigned int f) { return api().url_set(u, p, s, f); }

}  // extern "C"
