// vmpod-agent: the guest side of the vmpod agent channel.
//
// It opens the virtio-serial port named org.vmpod.agent (found through
// /sys/class/virtio-ports/*/name, device /dev/<port>), reads requests one per
// line and writes answers on the same port. See images/README.md for the
// protocol. Every command runs as `/bin/sh -c CMD` in its own session, in the
// background, so several can run at once; the answer is sent when the shell
// exits.
//
// usage: vmpod-agent [--name PORTNAME] [--device PATH] [--ready-file PATH]
//                    [--verbose]
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define AGENT_VERSION "1"
#define OUTPUT_CAP (64 * 1024)
#define MAX_LINE (1024 * 1024)
#define MAX_JOBS 256
#define MAX_ID 64
#define RETRY_MS 50

struct job {
  bool used;
  char id[MAX_ID + 1];
  pid_t pid;
  int fd;  // read end of the stdout+stderr pipe, -1 once at EOF
  char *buf;
  size_t len;    // bytes kept (<= OUTPUT_CAP)
  size_t total;  // bytes produced
  bool exited;
  int status;
};

static struct job jobs[MAX_JOBS];
static int port_fd = -1;
static bool verbose;

// Answers waiting to be written to the port.
static char *outq;
static size_t outq_len, outq_off, outq_cap;

// Partial request line.
static char *inbuf;
static size_t in_len;
static bool in_discard;  // current line is over MAX_LINE: drop until '\n'

static void logmsg(const char *fmt, ...) {
  if (!verbose) return;
  va_list ap;
  va_start(ap, fmt);
  fputs("vmpod-agent: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n);
  if (!q) {
    fputs("vmpod-agent: out of memory\n", stderr);
    exit(1);
  }
  return q;
}

static void out_reserve(size_t more) {
  if (outq_off > 0 && outq_off == outq_len) outq_off = outq_len = 0;
  if (outq_len + more <= outq_cap) return;
  if (outq_off > 0) {
    memmove(outq, outq + outq_off, outq_len - outq_off);
    outq_len -= outq_off;
    outq_off = 0;
    if (outq_len + more <= outq_cap) return;
  }
  size_t cap = outq_cap ? outq_cap : 4096;
  while (cap < outq_len + more) cap *= 2;
  outq = xrealloc(outq, cap);
  outq_cap = cap;
}

static void out_append(const char *s, size_t n) {
  out_reserve(n);
  memcpy(outq + outq_len, s, n);
  outq_len += n;
}

static void out_printf(const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n >= sizeof tmp) n = sizeof tmp - 1;
  out_append(tmp, (size_t)n);
}

// ---- base64 ---------------------------------------------------------------

static const char b64chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void out_base64(const unsigned char *p, size_t n) {
  out_reserve((n + 2) / 3 * 4);
  char *o = outq + outq_len;
  size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
    *o++ = b64chars[v >> 18];
    *o++ = b64chars[(v >> 12) & 63];
    *o++ = b64chars[(v >> 6) & 63];
    *o++ = b64chars[v & 63];
  }
  if (n - i == 1) {
    uint32_t v = (uint32_t)p[i] << 16;
    *o++ = b64chars[v >> 18];
    *o++ = b64chars[(v >> 12) & 63];
    *o++ = '=';
    *o++ = '=';
  } else if (n - i == 2) {
    uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
    *o++ = b64chars[v >> 18];
    *o++ = b64chars[(v >> 12) & 63];
    *o++ = b64chars[(v >> 6) & 63];
    *o++ = '=';
  }
  outq_len = (size_t)(o - outq);
}

static int b64val(int c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// Decodes standard base64 (padding optional). Returns a NUL-terminated
// malloc'd buffer, or NULL if the input is not valid base64.
static char *b64decode(const char *s, size_t n, size_t *outlen) {
  while (n > 0 && s[n - 1] == '=') n--;
  if (n % 4 == 1) return NULL;
  char *out = xrealloc(NULL, n / 4 * 3 + 4);
  size_t o = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    int v = b64val((unsigned char)s[i]);
    if (v < 0) {
      free(out);
      return NULL;
    }
    acc = acc << 6 | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (char)((acc >> bits) & 0xff);
    }
  }
  out[o] = '\0';
  *outlen = o;
  return out;
}

// ---- port discovery -------------------------------------------------------

static bool find_port(const char *name, char *dev, size_t devlen) {
  DIR *d = opendir("/sys/class/virtio-ports");
  if (!d) return false;
  struct dirent *e;
  bool found = false;
  while (!found && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char path[512], buf[256];
    snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    if (fgets(buf, sizeof buf, f)) {
      buf[strcspn(buf, "\n")] = '\0';
      if (strcmp(buf, name) == 0) {
        snprintf(dev, devlen, "/dev/%s", e->d_name);
        found = true;
      }
    }
    fclose(f);
  }
  closedir(d);
  return found;
}

// ---- jobs -----------------------------------------------------------------

static bool valid_id(const char *id) {
  size_t n = strlen(id);
  if (n == 0 || n > MAX_ID) return false;
  for (size_t i = 0; i < n; i++) {
    char c = id[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
          c == ':'))
      return false;
  }
  return true;
}

static struct job *find_job(const char *id) {
  for (int i = 0; i < MAX_JOBS; i++)
    if (jobs[i].used && strcmp(jobs[i].id, id) == 0) return &jobs[i];
  return NULL;
}

static void job_read(struct job *j) {
  char tmp[16384];
  for (;;) {
    ssize_t n = read(j->fd, tmp, sizeof tmp);
    if (n > 0) {
      size_t room = OUTPUT_CAP - j->len;
      size_t keep = (size_t)n < room ? (size_t)n : room;
      if (keep) {
        memcpy(j->buf + j->len, tmp, keep);
        j->len += keep;
      }
      j->total += (size_t)n;
      continue;
    }
    if (n == 0) {  // every writer closed the pipe
      close(j->fd);
      j->fd = -1;
    } else if (errno == EINTR) {
      continue;
    }
    return;  // EAGAIN or error: come back later
  }
}

static void job_finish(struct job *j) {
  // The shell has exited: what it wrote is in the pipe. Output of background
  // processes it left behind after this point is not collected.
  if (j->fd >= 0) {
    job_read(j);
    if (j->fd >= 0) close(j->fd);
    j->fd = -1;
  }
  int code = WIFEXITED(j->status)     ? WEXITSTATUS(j->status)
             : WIFSIGNALED(j->status) ? 128 + WTERMSIG(j->status)
                                      : 255;
  out_printf("output %s ", j->id);
  if (j->len == 0)
    out_append("-", 1);
  else
    out_base64((const unsigned char *)j->buf, j->len);
  if (j->total > j->len) out_printf(" truncated %zu", j->total);
  out_append("\n", 1);
  out_printf("exit %s %d\n", j->id, code);
  logmsg("job %s exit %d (%zu bytes)", j->id, code, j->total);
  free(j->buf);
  memset(j, 0, sizeof *j);
  j->fd = -1;
}

static void start_job(const char *id, const char *cmd) {
  struct job *j = NULL;
  for (int i = 0; i < MAX_JOBS; i++)
    if (!jobs[i].used) {
      j = &jobs[i];
      break;
    }
  if (!j) {
    out_printf("error run %s: too many commands running\n", id);
    return;
  }
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) {
    out_printf("error run %s: pipe: %s\n", id, strerror(errno));
    return;
  }
  pid_t pid = fork();
  if (pid < 0) {
    out_printf("error run %s: fork: %s\n", id, strerror(errno));
    close(p[0]);
    close(p[1]);
    return;
  }
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    setsid();
    int nul = open("/dev/null", O_RDONLY);
    if (nul >= 0 && nul != 0) {
      dup2(nul, 0);
      close(nul);
    }
    dup2(p[1], 1);
    dup2(p[1], 2);
    if (chdir("/") != 0) { /* ignore */
    }
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  close(p[1]);
  fcntl(p[0], F_SETFL, fcntl(p[0], F_GETFL) | O_NONBLOCK);
  memset(j, 0, sizeof *j);
  j->used = true;
  snprintf(j->id, sizeof j->id, "%s", id);
  j->pid = pid;
  j->fd = p[0];
  j->buf = xrealloc(NULL, OUTPUT_CAP);
  // The host times a command from here: the moment it is forked.
  out_printf("started %s %d\n", id, (int)pid);
  logmsg("job %s pid %d: %s", id, (int)pid, cmd);
}

static void reap(void) {
  for (;;) {
    int st;
    pid_t pid = waitpid(-1, &st, WNOHANG);
    if (pid <= 0) return;
    for (int i = 0; i < MAX_JOBS; i++)
      if (jobs[i].used && jobs[i].pid == pid) {
        jobs[i].exited = true;
        jobs[i].status = st;
        job_finish(&jobs[i]);
        break;
      }
  }
}

// ---- requests -------------------------------------------------------------

static void handle_line(char *line) {
  size_t n = strlen(line);
  while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == ' ')) line[--n] = 0;
  if (n == 0) return;

  char *save = NULL;
  char *verb = strtok_r(line, " ", &save);
  char *id = strtok_r(NULL, " ", &save);
  char *arg = strtok_r(NULL, " ", &save);
  char *extra = strtok_r(NULL, " ", &save);

  if (!verb) return;
  if (id && !valid_id(id)) {
    out_printf("error %s: invalid id\n", verb);
    return;
  }
  if (strcmp(verb, "ping") == 0) {
    if (!id || arg) {
      out_printf("error ping: usage: ping <id>\n");
      return;
    }
    out_printf("pong %s\n", id);
  } else if (strcmp(verb, "run") == 0) {
    if (!id || !arg || extra) {
      out_printf("error run%s%s: usage: run <id> <base64 command>\n",
                 id ? " " : "", id ? id : "");
      return;
    }
    if (find_job(id)) {
      out_printf("error run %s: id already running\n", id);
      return;
    }
    size_t clen;
    char *cmd = b64decode(arg, strlen(arg), &clen);
    if (!cmd) {
      out_printf("error run %s: invalid base64\n", id);
      return;
    }
    if (clen == 0 || memchr(cmd, '\0', clen)) {
      out_printf("error run %s: empty command or NUL byte\n", id);
      free(cmd);
      return;
    }
    start_job(id, cmd);
    free(cmd);
  } else if (strcmp(verb, "kill") == 0) {
    if (!id || extra) {
      out_printf("error kill: usage: kill <id> [signal number]\n");
      return;
    }
    int sig = SIGKILL;
    if (arg) {
      char *end;
      long v = strtol(arg, &end, 10);
      if (*end || v <= 0 || v >= 65) {
        out_printf("error kill %s: bad signal\n", id);
        return;
      }
      sig = (int)v;
    }
    struct job *j = find_job(id);
    if (!j) {
      out_printf("error kill %s: no such command\n", id);
      return;
    }
    // Each command is a session leader: signal its whole process group.
    if (kill(-j->pid, sig) != 0) kill(j->pid, sig);
    out_printf("killed %s\n", id);
  } else if (strcmp(verb, "hello") == 0 || strcmp(verb, "version") == 0) {
    out_printf("version %s vmpod-agent " AGENT_VERSION "\n", id ? id : "-");
  } else {
    char v[40];
    snprintf(v, sizeof v, "%s", verb);
    out_printf("error unknown request '%s'\n", v);
  }
}

static void consume_input(const char *buf, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char c = buf[i];
    if (c == '\n') {
      if (in_discard) {
        out_printf("error request line longer than %d bytes\n", MAX_LINE);
        in_discard = false;
      } else {
        inbuf[in_len] = '\0';
        if (strlen(inbuf) != in_len)
          out_printf("error NUL byte in request\n");
        else
          handle_line(inbuf);
      }
      in_len = 0;
      continue;
    }
    if (in_discard) continue;
    if (in_len >= MAX_LINE) {
      in_discard = true;
      continue;
    }
    inbuf[in_len++] = c;
  }
}

// ---- main loop ------------------------------------------------------------

static void usage(void) {
  fprintf(stderr,
          "usage: vmpod-agent [--name PORTNAME] [--device PATH] "
          "[--ready-file PATH] [--verbose]\n");
  exit(2);
}

int main(int argc, char **argv) {
  const char *name = "org.vmpod.agent";
  const char *device = NULL;
  const char *ready_file = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--verbose") == 0 || strcmp(argv[i], "-v") == 0) {
      verbose = true;
    } else if (i + 1 < argc && strcmp(argv[i], "--name") == 0) {
      name = argv[++i];
    } else if (i + 1 < argc && strcmp(argv[i], "--device") == 0) {
      device = argv[++i];
    } else if (i + 1 < argc && strcmp(argv[i], "--ready-file") == 0) {
      ready_file = argv[++i];
    } else {
      usage();
    }
  }
  for (int i = 0; i < MAX_JOBS; i++) jobs[i].fd = -1;
  inbuf = xrealloc(NULL, MAX_LINE + 1);
  signal(SIGPIPE, SIG_IGN);
  setenv("PATH", "/bin:/sbin:/usr/bin:/usr/sbin", 0);
  setenv("HOME", "/root", 0);

  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  int sfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) {
    perror("vmpod-agent: signalfd");
    return 1;
  }

  bool host_connected = false;
  bool check_port_now = true;
  for (;;) {
    // (Re)open the port.
    if (port_fd < 0) {
      char dev[300];
      if (device)
        snprintf(dev, sizeof dev, "%s", device);
      else if (!find_port(name, dev, sizeof dev))
        dev[0] = '\0';
      if (dev[0]) port_fd = open(dev, O_RDWR | O_NONBLOCK | O_CLOEXEC);
      if (port_fd >= 0) {
        logmsg("opened %s", dev);
        in_len = 0;
        in_discard = false;
        check_port_now = true;
        if (ready_file) {
          int fd = open(ready_file, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
          if (fd >= 0) {
            if (write(fd, dev, strlen(dev)) < 0) { /* best effort */
            }
            close(fd);
          }
        }
      }
    }

    struct pollfd pfd[MAX_JOBS + 2];
    struct job *pjob[MAX_JOBS + 2];
    int np = 0;
    pfd[np].fd = sfd;
    pfd[np].events = POLLIN;
    pjob[np++] = NULL;
    int port_slot = -1;
    // While the host side is not connected the port reports POLLHUP all the
    // time; then poll it only every RETRY_MS.
    if (port_fd >= 0 && check_port_now) {
      port_slot = np;
      pfd[np].fd = port_fd;
      pfd[np].events = POLLIN | (outq_len > outq_off ? POLLOUT : 0);
      pjob[np++] = NULL;
    }
    for (int i = 0; i < MAX_JOBS; i++)
      if (jobs[i].used && jobs[i].fd >= 0) {
        pfd[np].fd = jobs[i].fd;
        pfd[np].events = POLLIN;
        pjob[np++] = &jobs[i];
      }
    int timeout = (port_fd >= 0 && check_port_now) ? -1 : RETRY_MS;
    int r = poll(pfd, (nfds_t)np, timeout);
    if (r < 0) {
      if (errno == EINTR) continue;
      perror("vmpod-agent: poll");
      return 1;
    }
    if (r == 0) {  // retry tick
      check_port_now = true;
      continue;
    }

    if (pfd[0].revents) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == sizeof si) {
      }
      reap();
    }
    for (int k = 0; k < np; k++)
      if (pjob[k] && pjob[k]->used && pjob[k]->fd == pfd[k].fd &&
          (pfd[k].revents & (POLLIN | POLLHUP | POLLERR)))
        job_read(pjob[k]);

    if (port_slot >= 0) {
      short re = pfd[port_slot].revents;
      if (re & POLLIN) {
        char buf[65536];
        for (;;) {
          ssize_t n = read(port_fd, buf, sizeof buf);
          if (n > 0) {
            consume_input(buf, (size_t)n);
            continue;
          }
          if (n < 0 && errno == EINTR) continue;
          if (n < 0 && errno != EAGAIN) {  // port gone (unplugged)
            logmsg("read: %s; reopening", strerror(errno));
            close(port_fd);
            port_fd = -1;
          }
          break;
        }
      }
      if (port_fd >= 0 && (re & POLLHUP)) {
        if (host_connected) logmsg("host disconnected");
        host_connected = false;
        // A request cut by the disconnect is dropped.
        in_len = 0;
        in_discard = false;
        check_port_now = false;
      } else if (port_fd >= 0) {
        if (!host_connected) logmsg("host connected");
        host_connected = true;
      }
      if (port_fd >= 0 && host_connected && outq_len > outq_off) {
        for (;;) {
          ssize_t n = write(port_fd, outq + outq_off, outq_len - outq_off);
          if (n > 0) {
            outq_off += (size_t)n;
            if (outq_off == outq_len) {
              outq_off = outq_len = 0;
              break;
            }
            continue;
          }
          if (n < 0 && errno == EINTR) continue;
          break;  // EAGAIN: wait for POLLOUT
        }
      }
    }
  }
}
