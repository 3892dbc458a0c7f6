// Verbs of berth-runtime that live in their own files.
#pragma once

#include <string>
#include <vector>

#include "runtime/container.h"
#include "util/error.h"

namespace berth::cli {

// runc update: from flags, from -r FILE, or from `-r -` (containerd's way).
Result<int> cmd_update(const runtime::Globals& g, const std::vector<std::string>& args, size_t pos);
// runc events: --stats for one sample, otherwise a stream every --interval.
Result<int> cmd_events(const runtime::Globals& g, const std::vector<std::string>& args, size_t pos);

// "512m", "1g", "1024" (docker's RAMInBytes: binary multiples) and "-1".
Result<int64_t> parse_bytes(std::string_view s);
// Go's time.Duration text ("5s", "100ms", "1m30s") in milliseconds.
Result<int64_t> parse_duration_ms(std::string_view s);

}  // namespace berth::cli
