/* SPDX-License-Identifier: GPL-2.0 */
/* shadowtest's BPF loaders (the compiled reference sensor's loader.c, the LSM enforcer's
 * enforcer.c): output in bpftrace's -f json envelope, so the bundled bpftrace sensor's
 * reader reads them unchanged, one flushed line per object:
 *   {"type":"printf","data":"<object>\n"}
 * and the first libbpf warning kept as the cause of a failed load. Include once, from
 * the loader's main file, after setting ST_PROG (the name in stderr lines). */
#ifndef ST_EMIT_H
#define ST_EMIT_H
#include <bpf/libbpf.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t stopping;
static char libbpf_first[512]; /* the first libbpf warning: the cause, not the fallout */

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static int on_libbpf(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char line[512];
	if (level == LIBBPF_DEBUG)
		return 0;
	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = 0;
	if (line[0] && !libbpf_first[0])
		snprintf(libbpf_first, sizeof(libbpf_first), "%s", line);
	return fprintf(stderr, "%s\n", line);
}

struct buf {
	char data[4096];
	size_t len;
};

static void put(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;
	if (b->len >= sizeof(b->data))
		return;
	va_start(ap, fmt);
	n = vsnprintf(b->data + b->len, sizeof(b->data) - b->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		b->len = b->len + (size_t)n < sizeof(b->data) ? b->len + (size_t)n : sizeof(b->data) - 1;
}

/* a JSON string body (no quotes) of s[0..n) or up to the first NUL */
static void put_escaped(struct buf *b, const char *s, size_t n)
{
	for (size_t i = 0; i < n && s[i]; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\')
			put(b, "\\%c", c);
		else if (c == '\n')
			put(b, "\\n");
		else if (c < 0x20 || c == 0x7f)
			put(b, "\\u%04x", c);
		else
			put(b, "%c", c);
	}
}

/* the object in bpftrace's envelope, one line, flushed */
static void emit(struct buf *inner)
{
	struct buf outer = {.len = 0};
	put(&outer, "{\"type\":\"printf\",\"data\":\"");
	put_escaped(&outer, inner->data, inner->len);
	put(&outer, "\\n\"}\n");
	if (fwrite(outer.data, 1, outer.len, stdout) != outer.len || fflush(stdout) != 0)
		stopping = 1; /* the reader is gone */
}

/* the detection header of sensor.bt's lines, through wall_ns (the caller adds its fields
 * and the closing brace); action: "deny", or NULL for a detection without one */
struct st_header {
	const char *rule, *technique, *severity, *action;
	long long pid, tid, ppid, ancestors[6];
	const char *comm;
	size_t comm_len;
	unsigned long long cgroup, ts_ns, wall_ns;
	unsigned int pidns, mntns, uid;
};

static void put_detection(struct buf *b, const struct st_header *h)
{
	put(b, "{\"kind\":\"detection\",\"rule\":\"%s\",\"technique\":\"%s\",\"severity\":\"%s\"",
	    h->rule, h->technique, h->severity);
	if (h->action)
		put(b, ",\"action\":\"%s\"", h->action);
	put(b, ",\"pid\":%lld,\"tid\":%lld,\"ppid\":%lld,\"ancestors\":[", h->pid, h->tid, h->ppid);
	for (int i = 0; i < 6; i++)
		put(b, i ? ",%lld" : "%lld", h->ancestors[i]);
	put(b, "],\"comm\":\"");
	put_escaped(b, h->comm, h->comm_len);
	put(b, "\",\"cgroup\":%llu,\"pidns\":%u,\"mntns\":%u,\"uid\":%u,\"ts_ns\":%llu,\"wall_ns\":%llu",
	    h->cgroup, h->pidns, h->mntns, h->uid, h->ts_ns, h->wall_ns);
}

/* {"kind":"error","reason":...} on stdout, the reason on stderr, exit status 2 */
static void fail(const char *fmt, ...)
{
	char reason[1024];
	struct buf b = {.len = 0};
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	put(&b, "{\"kind\":\"error\",\"reason\":\"");
	put_escaped(&b, reason, sizeof(reason));
	put(&b, "\"}");
	emit(&b);
	fprintf(stderr, "%s: %s\n", ST_PROG, reason);
	exit(2);
}

static uint64_t clock_ns(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* SIGINT/SIGTERM end the poll loop (no SA_RESTART: poll returns EINTR); SIGPIPE ignored,
 * a gone reader is seen as a failed write */
static void on_signals(void)
{
	struct sigaction sa = {.sa_handler = on_signal};
	setvbuf(stdout, NULL, _IOFBF, 1 << 16);
	signal(SIGPIPE, SIG_IGN);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	libbpf_set_print(on_libbpf);
}
#endif
