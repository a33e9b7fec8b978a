// SPDX-License-Identifier: GPL-2.0
/*
 * shadowtest compiled reference sensor: loads sensor.bpf.o (CO-RE, libbpf; generated from
 * the rule table harness/sensors/bpftrace/rules.py), attaches its programs, and prints one
 * JSON line per ring-buffer event until SIGINT or SIGTERM (the programs are detached on
 * exit: they are file descriptors of this process).
 *
 *   shadowtest-sensor --object sensor.bpf.o [--node NAME] [--module NAME]...
 *                     [--ringbuf-mb N] [--filter none|runs|runs+containers]
 *
 * --filter runs reports only the process trees of the stage runners that announced
 * themselves (getpgid(ST_ANNOUNCE_BASE + scope), see harness/nodes/remote/stagerunner.py)
 * and what a
 * kernel usermode helper runs; runs+containers also every task outside the initial pid
 * namespace; none (the default) the whole node. The filter is applied in the kernel,
 * before anything is read or sent: background load does not reach the ring buffer.
 *
 * --module enables an optional part of the rule pack (rules.h's module column, e.g.
 * "kprobes"): its programs are loaded only when asked (the harness probes the node).
 *
 * Output, on stdout, in bpftrace's -f json envelope with the bundled bpftrace sensor's
 * payloads, so its reader reads this unchanged (emit.h):
 *   {"kind":"ready","version":"2","engine":"libbpf","ts_ns":N,"load_ms":N,"attach_ms":N,
 *    "modules":[...],"programs":N}
 *   {"kind":"heartbeat","ts_ns":N,"events":N,"lost":N}  (every second; detections read and
 *                                                         losses reported since start)
 *   {"kind":"marker","token":N,"cpu":N,"ts_ns":N}        (getpgid(0x5ad00000+token))
 *   {"kind":"detection","rule":R,"technique":T,"severity":S,"pid":N,"tid":N,"ppid":N,
 *    "ancestors":[6 x N],"comm":"...","cgroup":N,"pidns":N,"mntns":N,"uid":N,"ts_ns":N,
 *    "wall_ns":N, <rule fields>}
 * and {"type":"lost_events","data":{"events":N}} when the ring buffer was full (N new
 * losses), {"type":"lost_events","data":{"events":N,"scope":K}} when they all came from
 * the process trees of runs announced under scope K (they blind those runs only).
 * Strings are JSON-escaped. When the sensor cannot run, one
 * {"kind":"error","reason":"..."} line and exit status 2.
 */
#define _GNU_SOURCE
#define ST_PROG "shadowtest-sensor"
#include "emit.h"
#include "event.h"
#include "rules.h"
#include <bpf/bpf.h>
#include <errno.h>
#include <pthread.h>
#include <unistd.h>

#define MAX_MODULES 8
#define MAX_LINKS 64

static const char *node = "this node";
static uint64_t wall_offset; /* CLOCK_REALTIME - CLOCK_MONOTONIC, ns, at start */
static int lost_fd = -1, lost_scoped_fd = -1, ncpu;
static uint64_t reported; /* lost events reported so far */
static uint64_t reported_scoped[ST_ANNOUNCE_LAST - ST_ANNOUNCE_BASE + 1]; /* ... by scope */
static uint64_t reported_all; /* every loss reported so far, scoped or not */
static uint64_t consumed;     /* detections read from the ring buffer */

static uint64_t lost_total(void)
{
	uint64_t values[512] = {0}, sum = 0;
	uint32_t zero = 0;
	if (lost_fd < 0 || ncpu > 512 || bpf_map_lookup_elem(lost_fd, &zero, values) != 0)
		return 0;
	for (int i = 0; i < ncpu; i++)
		sum += values[i];
	return sum;
}

/* the events lost since the last report, as bpftrace's lost_events line; called before
 * each marker is printed, so a loss before a sync point is read before that point */
static void report_lost(void)
{
	uint64_t total = lost_total();
	if (total > reported) {
		printf("{\"type\":\"lost_events\",\"data\":{\"events\":%llu}}\n",
		       (unsigned long long)(total - reported));
		reported_all += total - reported;
		reported = total;
	}
	uint32_t key, next, *prev = NULL;
	uint64_t count;
	while (lost_scoped_fd >= 0 && bpf_map_get_next_key(lost_scoped_fd, prev, &next) == 0) {
		key = next;
		prev = &key;
		if (key >= sizeof(reported_scoped) / sizeof(reported_scoped[0]) ||
		    bpf_map_lookup_elem(lost_scoped_fd, &key, &count) != 0 ||
		    count <= reported_scoped[key])
			continue;
		printf("{\"type\":\"lost_events\",\"data\":{\"events\":%llu,\"scope\":%u}}\n",
		       (unsigned long long)(count - reported_scoped[key]), key);
		reported_all += count - reported_scoped[key];
		reported_scoped[key] = count;
	}
}

static uint64_t last_beat; /* CLOCK_MONOTONIC of the last heartbeat */

/* a heartbeat once a second (losses reported first): from the poll loop, and from within a
 * long drain (a poll under a steady flood does not return until the flood ends) */
static void heartbeat(void)
{
	uint64_t now = clock_ns(CLOCK_MONOTONIC);
	if (now - last_beat < 1000000000ull)
		return;
	report_lost();
	struct buf hb = {.len = 0};
	put(&hb, "{\"kind\":\"heartbeat\",\"ts_ns\":%llu,\"events\":%llu,\"lost\":%llu}",
	    (unsigned long long)now, (unsigned long long)consumed, (unsigned long long)reported_all);
	emit(&hb);
	last_beat = now;
}

static int on_event(void *ctx, void *data, size_t size)
{
	const struct st_event *e = data;
	struct buf b = {.len = 0};
	(void)ctx;
	if (size < sizeof(*e))
		return 0;
	if (e->kind == ST_KIND_MARKER) {
		report_lost();
		put(&b, "{\"kind\":\"marker\",\"token\":%u,\"cpu\":%u,\"ts_ns\":%llu}", e->rule, e->cpu,
		    (unsigned long long)e->ts_ns);
		emit(&b);
		return 0;
	}
	if (e->kind != ST_KIND_DETECTION || e->rule >= ST_NRULES)
		return 0;
	if ((++consumed & 1023) == 0)
		heartbeat();
	const struct st_rule *r = &st_rules[e->rule];
	struct st_header h = {
		.rule = r->name, .technique = r->technique, .severity = r->severity,
		.pid = e->pid, .tid = e->tid, .ppid = e->ppid, .comm = e->comm,
		.comm_len = sizeof(e->comm), .cgroup = e->cgroup, .ts_ns = e->ts_ns,
		.wall_ns = e->ts_ns + wall_offset, .pidns = e->pidns, .mntns = e->mntns, .uid = e->uid,
	};
	for (int i = 0; i < 6; i++)
		h.ancestors[i] = e->ancestors[i];
	put_detection(&b, &h);
	for (int i = 0; i < r->nfields; i++) {
		const struct st_field *f = &r->fields[i];
		put(&b, ",\"%s\":", f->name);
		if (f->type == 's') {
			put(&b, "\"");
			put_escaped(&b, e->str[f->slot % ST_NSTR], ST_STR);
			put(&b, "\"");
		} else if (f->type == 'i') {
			put(&b, "%d", (int)e->num[f->slot % ST_NNUM]);
		} else if (f->type == 'u') {
			put(&b, "%u", (unsigned int)e->num[f->slot % ST_NNUM]);
		} else {
			put(&b, "%lld", (long long)e->num[f->slot % ST_NNUM]);
		}
	}
	put(&b, "}");
	emit(&b);
	return 0;
}

static void *destroy_link(void *link)
{
	bpf_link__destroy(link);
	return NULL;
}

/* detach every program at once: each tracepoint detach waits for an RCU grace period, and
 * one after the other they took ~1 s on a 2-CPU host; in threads, about one period */
static void destroy_links(struct bpf_link **links, int n)
{
	pthread_t threads[MAX_LINKS];
	int started[MAX_LINKS] = {0};
	for (int i = 0; i < n; i++)
		started[i] = pthread_create(&threads[i], NULL, destroy_link, links[i]) == 0;
	for (int i = 0; i < n; i++) {
		if (started[i])
			pthread_join(threads[i], NULL);
		else
			bpf_link__destroy(links[i]);
	}
}

static void usage(void)
{
	fprintf(stderr, "usage: " ST_PROG " --object sensor.bpf.o [--node NAME] [--module NAME]... "
			"[--ringbuf-mb N] [--filter none|runs|runs+containers]\n");
	exit(64);
}

/* the module of the program called `name` ("" = the base rule pack) */
static const char *module_of(const char *name)
{
	for (int i = 0; i < ST_NOPTIONAL; i++)
		if (strcmp(st_optional[i].name, name) == 0)
			return st_optional[i].module;
	return "";
}

int main(int argc, char **argv)
{
	const char *object = NULL, *modules[MAX_MODULES];
	int nmodules = 0;
	unsigned long ringbuf_mb = 8;
	uint32_t filter = ST_FILTER_NONE;
	const char *filter_name = "none";

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		char *end = NULL;
		if (!v)
			usage();
		if (strcmp(a, "--object") == 0)
			object = v;
		else if (strcmp(a, "--node") == 0)
			node = v;
		else if (strcmp(a, "--module") == 0 && nmodules < MAX_MODULES)
			modules[nmodules++] = v;
		else if (strcmp(a, "--filter") == 0 && strcmp(v, "none") == 0)
			filter = ST_FILTER_NONE, filter_name = v;
		else if (strcmp(a, "--filter") == 0 && strcmp(v, "runs") == 0)
			filter = ST_FILTER_RUNS, filter_name = v;
		else if (strcmp(a, "--filter") == 0 && strcmp(v, "runs+containers") == 0)
			filter = ST_FILTER_RUNS_CONTAINERS, filter_name = v;
		else if (strcmp(a, "--ringbuf-mb") == 0 && (ringbuf_mb = strtoul(v, &end, 10)) > 0 &&
			 *end == 0 && ringbuf_mb <= 1024 && (ringbuf_mb & (ringbuf_mb - 1)) == 0)
			;
		else
			usage();
		i++;
	}
	if (!object)
		usage();
	on_signals();
	wall_offset = clock_ns(CLOCK_REALTIME) - clock_ns(CLOCK_MONOTONIC);

	uint64_t t0 = clock_ns(CLOCK_MONOTONIC);
	struct bpf_object *obj = bpf_object__open_file(object, NULL);
	if (!obj)
		fail("cannot open %s on %s: %s", object, node, strerror(errno));
	struct bpf_map *events = bpf_object__find_map_by_name(obj, "events");
	if (!events || bpf_map__set_max_entries(events, (uint32_t)(ringbuf_mb << 20)) != 0)
		fail("%s: no ring buffer map 'events' to size", object);
	struct bpf_program *prog;
	bpf_object__for_each_program(prog, obj) {
		const char *mod = module_of(bpf_program__name(prog));
		int wanted = !mod[0];
		for (int i = 0; i < nmodules && !wanted; i++)
			wanted = strcmp(modules[i], mod) == 0;
		bpf_program__set_autoload(prog, wanted);
	}
	if (bpf_object__load(obj) != 0)
		fail("the sensor's BPF programs do not load on %s (%s; %s)", node, strerror(errno),
		     libbpf_first);
	uint64_t t1 = clock_ns(CLOCK_MONOTONIC);
	uint32_t zero = 0;
	int config_fd = bpf_object__find_map_fd_by_name(obj, "st_config");
	if (config_fd < 0 || bpf_map_update_elem(config_fd, &zero, &filter, BPF_ANY) != 0)
		fail("%s: cannot set the filter (st_config map): %s", object, strerror(errno));

	struct bpf_link *links[MAX_LINKS];
	int nlinks = 0;
	bpf_object__for_each_program(prog, obj) {
		if (!bpf_program__autoload(prog))
			continue;
		const char *sec = bpf_program__section_name(prog);
		struct bpf_link *link = bpf_program__attach(prog);
		if (!link || nlinks == MAX_LINKS) {
			int err = errno;
			for (int i = 0; i < nlinks; i++)
				bpf_link__destroy(links[i]);
			fail("%s does not attach on %s (%s; %s)", sec, node, strerror(err), libbpf_first);
		}
		links[nlinks++] = link;
	}
	uint64_t t2 = clock_ns(CLOCK_MONOTONIC);

	struct ring_buffer *rb = ring_buffer__new(bpf_map__fd(events), on_event, NULL, NULL);
	if (!rb)
		fail("cannot open the ring buffer: %s", strerror(errno));
	lost_fd = bpf_object__find_map_fd_by_name(obj, "lost");
	lost_scoped_fd = bpf_object__find_map_fd_by_name(obj, "lost_scoped");
	ncpu = libbpf_num_possible_cpus();
	if (lost_fd < 0 || ncpu <= 0)
		fail("%s: no 'lost' map, or the possible CPUs are unknown", object);

	struct buf b = {.len = 0};
	put(&b, "{\"kind\":\"ready\",\"version\":\"%s\",\"engine\":\"libbpf\",\"ts_ns\":%llu,"
		"\"load_ms\":%.1f,\"attach_ms\":%.1f,\"programs\":%d,\"filter\":\"%s\","
		"\"modules\":[",
	    ST_RULEPACK, (unsigned long long)clock_ns(CLOCK_MONOTONIC), (t1 - t0) / 1e6,
	    (t2 - t1) / 1e6, nlinks, filter_name);
	for (int i = 0; i < nmodules; i++) {
		put(&b, i ? ",\"" : "\"");
		put_escaped(&b, modules[i], 64);
		put(&b, "\"");
	}
	put(&b, "]}");
	emit(&b);

	last_beat = clock_ns(CLOCK_MONOTONIC);
	while (!stopping) {
		int n = ring_buffer__poll(rb, 250);
		if (n < 0 && n != -EINTR) {
			fprintf(stderr, ST_PROG ": ring_buffer__poll: %s\n", strerror(-n));
			break;
		}
		heartbeat();
	}
	ring_buffer__consume(rb);
	ring_buffer__free(rb);
	destroy_links(links, nlinks);
	bpf_object__close(obj);
	fflush(stdout);
	return 0;
}
