// A short-lived helper thread started on a CPU other than its creator's.
#pragma once

#include <pthread.h>
#include <sched.h>

namespace berth {

// Starts fn(arg) on a new thread with a stack of `stack` bytes, allowed
// every CPU of ours but the one we run on (where there is another): the
// scheduler often queues a new thread behind its creator, and it then runs
// only when the creator next sleeps. `ours` gets the CPUs we may use, and
// *steered whether the thread was kept off ours (the thread, or what it
// starts, can be given `ours` back once running). False if no thread could
// be started.
inline bool start_thread_elsewhere(pthread_t* t, void* (*fn)(void*), void* arg, size_t stack, cpu_set_t* ours,
                                   bool* steered) {
  pthread_attr_t ta;
  pthread_attr_init(&ta);
  pthread_attr_setstacksize(&ta, stack);
  *steered = false;
  CPU_ZERO(ours);
  int here = ::sched_getcpu();
  if (here >= 0 && ::sched_getaffinity(0, sizeof *ours, ours) == 0 && CPU_ISSET(here, ours) && CPU_COUNT(ours) > 1) {
    cpu_set_t away = *ours;
    CPU_CLR(here, &away);
    *steered = pthread_attr_setaffinity_np(&ta, sizeof away, &away) == 0;
  }
  int rc = ::pthread_create(t, &ta, fn, arg);
  pthread_attr_destroy(&ta);
  if (rc != 0) *steered = false;
  return rc == 0;
}

}  // namespace berth
