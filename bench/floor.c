/*
 * berth-floor: the "floor" for the start-latency benchmark -- the least work
 * that runs a process in a container the way an OCI runtime does with runc's
 * default spec:
 *
 *   clone(NEWPID|NEWNET|NEWIPC|NEWUTS|NEWNS|NEWCGROUP)
 *   child:  / rslave; bind rootfs on itself; chdir; pivot_root(".", ".");
 *           umount2(".", MNT_DETACH); mount proc on /proc; execve(cmd)
 *   parent: wait, exit with the child's status
 *
 * Nothing else: no cgroups, no /dev, no capabilities, no seccomp, no state.
 *
 * usage: berth-floor ROOTFS COMMAND [ARGS...]
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>

/* The environment of runc's default spec. */
static char *const child_env[] = {
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "TERM=xterm",
    NULL,
};

static void die(const char *what)
{
    fprintf(stderr, "berth-floor: %s: %s\n", what, strerror(errno));
    _exit(127);
}

static void child(const char *rootfs, char **argv)
{
    if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) < 0)
        die("make / rslave");
    if (mount(rootfs, rootfs, NULL, MS_BIND | MS_REC, NULL) < 0)
        die("bind rootfs");
    if (chdir(rootfs) < 0)
        die("chdir rootfs");
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        die("pivot_root");
    if (umount2(".", MNT_DETACH) < 0)
        die("umount old root");
    if (chdir("/") < 0)
        die("chdir /");
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        die("mount /proc");
    execve(argv[0], argv, child_env);
    die("execve");
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: berth-floor ROOTFS COMMAND [ARGS...]\n");
        return 2;
    }
    const long flags = CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS |
                       CLONE_NEWNS | CLONE_NEWCGROUP;
    /* fork-style raw clone: the child continues here on the parent's stack. */
    long pid = syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, NULL);
    if (pid < 0) {
        perror("berth-floor: clone");
        return 127;
    }
    if (pid == 0)
        child(argv[1], argv + 2);

    int status;
    while (waitpid((pid_t)pid, &status, 0) < 0) {
        if (errno != EINTR) {
            perror("berth-floor: waitpid");
            return 127;
        }
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return 127;
}
