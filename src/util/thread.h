// A short-lived helper thread started on a CPU other than its creator's.
#pragma once

#include <pthread.h>
#include <sched.h>

#include <string>

namespace berth {

// The CPUs we may use (`ours`) and those of them other than the one we run
// on (`away`); false where there is no other (one CPU, or affinity unknown).
inline bool cpus_elsewhere(cpu_set_t* ours, cpu_set_t* away) {
  CPU_ZERO(ours);
  CPU_ZERO(away);
  int here = ::sched_getcpu();
  if (here < 0 || ::sched_getaffinity(0, sizeof *ours, ours) != 0 || !CPU_ISSET(here, ours) || CPU_COUNT(ours) < 2)
    return false;
  *away = *ours;
  CPU_CLR(here, away);
  return true;
}

// Starts fn(arg) on a new thread with a stack of `stack` bytes, allowed only
// the CPUs in `cpus` when given (cpus_elsewhere's `away`: the scheduler often
// queues a new thread behind its creator, and it then runs only when the
// creator next sleeps; what the thread starts inherits them). False if no
// thread could be started.
inline bool start_thread_on(pthread_t* t, void* (*fn)(void*), void* arg, size_t stack, const cpu_set_t* cpus) {
  pthread_attr_t ta;
  pthread_attr_init(&ta);
  pthread_attr_setstacksize(&ta, stack);
  if (cpus) (void)pthread_attr_setaffinity_np(&ta, sizeof *cpus, cpus);
  int rc = ::pthread_create(t, &ta, fn, arg);
  pthread_attr_destroy(&ta);
  return rc == 0;
}

// `set` in the kernel's cpu-list form ("0-3,8"), as runtime::parse_cpu_list reads it.
inline std::string cpu_list(const cpu_set_t& set) {
  std::string out;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (!CPU_ISSET(c, &set)) continue;
    int last = c;
    while (last + 1 < CPU_SETSIZE && CPU_ISSET(last + 1, &set)) ++last;
    if (!out.empty()) out += ',';
    out += std::to_string(c);
    if (last > c) out += "-" + std::to_string(last);
    c = last;
  }
  return out;
}

}  // namespace berth
