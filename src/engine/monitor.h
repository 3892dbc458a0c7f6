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
//   berth-monitor --args-on-sync --sync-fd N [--attach-fd N]
// is a monitor started before its container exists (EarlyMonitor in
// engine.h): the rest of the command line above comes on the sync socket,
// "args <bytes>\n" and that many bytes of NUL-ended arguments. If the socket
// ends first, it exits 0 having done nothing.
#pragma once

namespace berth::engine {

int monitor_main(int argc, char** argv);

}  // namespace berth::engine
