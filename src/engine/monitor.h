// berth-monitor: one small process per running container, conmon's role. It is
// the container's parent: it creates and starts it in-process with the runtime
// core, holds its stdio (pipes, or the pty master), writes its log in
// json-file format, serves attach clients, reaps it, records the exit status
// in the container's directory, and then execs the exit command (berth's
// `container cleanup`), which records the exit in the store and carries out
// --rm and the restart policy.
//
// Command line (built by the engine, not for people):
//   berth-monitor --id ID --runtime-root DIR --dir CONTAINER_DIR --log PATH
//                 [--log-max-size N --log-max-files N] [--stdin]
//                 --sync-fd N [--attach-fd N]... -- EXIT COMMAND...
// The sync fd (a stream socket) gets one line, "ok <pid>" or "error <text>",
// once the container runs; the monitor runs the exit command only after the
// other end has closed it (the engine has recorded the start by then).
//
//   berth-monitor --args-on-sync --early-on-sync --id ID --dir DIR --sync-fd N
// is a monitor started before its container exists (EarlyMonitor in
// engine.h), before the CLI has even parsed its command line. The sync
// socket first brings the rest of its early options, a 16-byte header
// "erly %010zu\n" and that many bytes of NUL-ended arguments:
// [--attach-fd 4] [--netns-early] [--cgroup-early PATH]; fd 4 is the
// starting client's socket if --attach-fd says so, and closed if not.
// Then the rest of the command line above comes on the sync socket,
// a 16-byte header "args %010zu\n" and that many bytes of NUL-ended
// arguments (none may hold a NUL: start() refuses one). Before it may come
// "spec %010zu\n" and the container's config.json, sent by create() as soon
// as it is made: the monitor parses it while the CLI finishes, and starts
// the container from it. If the socket ends first, it exits 0 having done
// nothing.
#pragma once

#include <cstddef>

namespace berth::engine {

// The most bytes of arguments (or of config.json) an early monitor takes on its sync socket.
constexpr size_t kEarlyArgsMax = 1 << 20;

int monitor_main(int argc, char** argv);

}  // namespace berth::engine
