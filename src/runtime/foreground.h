// The foreground wait of `run` and `exec`: forward every signal we get to the
// container process, keep its console flowing, reap, and return its wait status.
#pragma once

#include <signal.h>
#include <sys/types.h>

namespace berth::runtime {

class ConsoleProxy;

// Signals the foreground runtime blocks (and reads from a signalfd) while it
// waits; the synchronous fault signals stay deliverable.
sigset_t forwarded_signals();

// `pid` must be our child; `blocked` must already be blocked. Reaps any other
// child too (orphans re-parented to us as subreaper).
int wait_foreground(pid_t pid, int pidfd, ConsoleProxy* proxy, const sigset_t& blocked);

}  // namespace berth::runtime
