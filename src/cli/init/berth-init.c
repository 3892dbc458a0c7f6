/* berth-init: the container's PID 1 with `berth run --init` (tini's role).
 *
 *   /sbin/berth-init -- COMMAND [ARG...]
 *
 * Runs COMMAND as its child, passes every signal it gets on to it (as PID 1
 * of a pid namespace it would otherwise ignore those it has no handler for),
 * reaps every orphan that the namespace hands to it, and exits with the
 * child's status (128+N when a signal N ended it). Static and tiny: it is
 * bind-mounted read-only into containers from the host. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
  int first = 1;
  if (first < argc && strcmp(argv[first], "--") == 0) first++;
  if (first >= argc) {
    fprintf(stderr, "berth-init: usage: berth-init -- COMMAND [ARG...]\n");
    return 125;
  }
  /* berth starts us with every signal blocked already (a signal sent before
   * this line is then pending, not dropped as PID 1 drops those it neither
   * blocks nor handles); blocked here too when started otherwise. */
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  sigprocmask(SIG_BLOCK, &all, NULL);
  /* Not PID 1 (--pid host): still reap what the command leaves. */
  if (getpid() != 1) prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  pid_t child = fork();
  if (child < 0) {
    fprintf(stderr, "berth-init: fork: %s\n", strerror(errno));
    return 125;
  }
  if (child == 0) {
    sigprocmask(SIG_SETMASK, &none, NULL);
    execvp(argv[first], argv + first);
    fprintf(stderr, "berth-init: exec %s: %s\n", argv[first], strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
  }
  for (;;) {
    siginfo_t si;
    int sig = sigwaitinfo(&all, &si);
    if (sig < 0) continue;
    if (sig != SIGCHLD) {
      /* Stop signals from the terminal are for the child's group. */
      kill(child, sig);
      continue;
    }
    int status;
    pid_t w;
    while ((w = waitpid(-1, &status, WNOHANG)) > 0)
      if (w == child) return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
  }
}
