// libcurl is loaded with dlopen on the first registry call, not linked: its
// dependencies (gnutls, krb5, ldap, ssh2, nghttp2, ...) are two dozen shared
// objects, and mapping them cost every `berth` command ~10 ms at start-up,
// registry or not. curl_loader.cc defines the few curl functions berth calls
// as forwarders to the loaded library.
#pragma once

#include "util/error.h"

namespace berth::image {

// Loads libcurl.so.4 and runs curl_global_init, once; the error names the
// library and dlerror()'s reason. Call before any curl function.
Result<> load_curl();

}  // namespace berth::image
