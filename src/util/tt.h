#pragma once
#include <cstdio>
#include <cstdlib>
#include <ctime>
inline void tt(const char* what) {
  static bool on = std::getenv("BERTH_TT");
  if (!on) return;
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  timespec c;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c);
  std::fprintf(stderr, "TT %.3f cpu %.3f %s\n", t.tv_sec + t.tv_nsec / 1e9, c.tv_sec + c.tv_nsec / 1e9, what);
}
