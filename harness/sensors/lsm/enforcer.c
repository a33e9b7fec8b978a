// SPDX-License-Identifier: GPL-2.0
/*
 * shadowtest LSM enforcer loader: loads enforcer.bpf.o (CO-RE, libbpf), fills its maps,
 * attaches its programs, then prints one JSON line per ring-buffer event until SIGINT or
 * SIGTERM (the links are destroyed on exit: the policy is gone with the process).
 *
 *   shadowtest-lsm --object enforcer.bpf.o --cgroup2-root DIR [--node NAME] [--rule RULE]...
 *                  [--container-parent NAME]... [--allow-comm COMM]... [--etc PATH]
 *
 * --cgroup2-root is where the node's cgroup2 hierarchy is mounted, as the harness's node
 * probe found it (/sys/fs/cgroup on pure v2, /sys/fs/cgroup/unified on a hybrid host): the
 * loader never decides it itself.
 *
 * Output, on stdout, in bpftrace's -f json envelope so every reader of the bundled
 * bpftrace sensor's output reads it unchanged: {"type":"printf","data":"<object>\n"} with
 *   {"kind":"ready","version":"lsm-1","rules":[...],"load_ms":N,"attach_ms":N,...}
 *   {"kind":"marker","token":N,"cpu":N}
 *   {"kind":"detection","rule":R,"technique":T,"severity":S,"action":"deny","pid":N,
 *    "tid":N,"ppid":N,"ancestors":[6 x N],"comm":"...","cgroup":N,"pidns":N,"mntns":N,
 *    "uid":N,"ts_ns":N,"wall_ns":N, <rule fields>}
 * (sensor.bt's detection header, plus "action"). Strings are JSON-escaped. When the
 * enforcer cannot run, one {"kind":"error","reason":"..."} line and exit status 2.
 *
 * Container parents are resolved (stat of <cgroup2>/<name>) at start and every 250 ms,
 * so a parent created after start (the first container) is picked up.
 */
#define _GNU_SOURCE
#define ST_PROG "shadowtest-lsm"
#include "emit.h" /* harness/sensors/libbpf: the JSON envelope, fail(), signals */
#include <linux/types.h>
#include "enforcer.h"
#include <bpf/bpf.h>
#include <errno.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#define VERSION "lsm-1"
#define MAX_LIST 32

#define EV_MARKER 1
#define EV_ETC_FILE_CREATE 2
#define EV_PTRACE_PID1 3

struct config {
	uint64_t etc_ino;
	uint32_t etc_dev;
	uint32_t rules;
};


static const char *node = "this node";

/* ------------------------------------------------------------------ events */
static int on_event(void *ctx, void *data, size_t size)
{
	const struct event *e = data;
	struct buf b = {.len = 0};
	(void)ctx;
	if (size < sizeof(*e))
		return 0;
	if (e->type == EV_MARKER) {
		put(&b, "{\"kind\":\"marker\",\"token\":%u,\"cpu\":%u}", e->token, e->cpu);
		emit(&b);
		return 0;
	}
	const char *rule, *technique, *severity;
	if (e->type == EV_ETC_FILE_CREATE) {
		rule = "etc-file-create", technique = "T1098", severity = "medium";
	} else if (e->type == EV_PTRACE_PID1) {
		rule = "ptrace-pid1", technique = "T1055.008", severity = "high";
	} else {
		return 0;
	}
	/* bpf_ktime_get_ns is CLOCK_MONOTONIC: shift it by the wall clock's offset now */
	struct st_header h = {
		.rule = rule, .technique = technique, .severity = severity, .action = "deny",
		.pid = e->pid, .tid = e->tid, .ppid = e->ppid, .comm = e->comm,
		.comm_len = sizeof(e->comm), .cgroup = e->cgroup, .ts_ns = e->ts_ns,
		.wall_ns = e->ts_ns + (clock_ns(CLOCK_REALTIME) - clock_ns(CLOCK_MONOTONIC)),
		.pidns = e->pidns, .mntns = e->mntns, .uid = e->uid,
	};
	for (int i = 0; i < ANCESTORS; i++)
		h.ancestors[i] = e->ancestors[i];
	put_detection(&b, &h);
	if (e->type == EV_ETC_FILE_CREATE) {
		put(&b, ",\"path\":\"/etc/");
		put_escaped(&b, e->name, sizeof(e->name));
		put(&b, "\",\"mode\":%u", e->mode);
	} else {
		put(&b, ",\"target\":%u,\"target_pid\":%u,\"mode\":%u", e->target_vpid, e->target, e->mode);
	}
	put(&b, "}");
	emit(&b);
	return 0;
}

/* ------------------------------------------------------------------ node checks */
static void check_lsm(void)
{
	static const char *path = "/sys/kernel/security/lsm";
	char list[512] = "";
	FILE *f = fopen(path, "r");
	if (!f && errno == ENOENT) { /* securityfs not mounted yet (a fresh machine) */
		mount("securityfs", "/sys/kernel/security", "securityfs", 0, NULL);
		f = fopen(path, "r");
	}
	if (!f)
		fail("BPF LSM not usable on %s: cannot read %s (%s)", node, path, strerror(errno));
	if (!fgets(list, sizeof(list), f))
		list[0] = 0;
	fclose(f);
	list[strcspn(list, "\n")] = 0;
	char copy[512], *save = NULL;
	snprintf(copy, sizeof(copy), "%s", list);
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
		if (strcmp(t, "bpf") == 0)
			return;
	fail("BPF LSM not usable on %s: 'bpf' is not an active LSM (%s: %s); boot with lsm=...,bpf",
	     node, path, list);
}

static char cg2[256];
static const char *parents[MAX_LIST];
static int nparents;

/* (re)resolve the container parents' cgroup ids into the map; returns how many exist */
static int resolve_parents(int map_fd)
{
	int found = 0;
	for (int i = 0; i < nparents; i++) {
		char path[512];
		struct stat st;
		uint8_t one = 1;
		snprintf(path, sizeof(path), "%s/%s", cg2, parents[i]);
		if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
			continue;
		uint64_t id = st.st_ino;
		bpf_map_update_elem(map_fd, &id, &one, BPF_ANY);
		found++;
	}
	return found;
}

static void usage(void)
{
	fprintf(stderr, "usage: shadowtest-lsm --object enforcer.bpf.o --cgroup2-root DIR "
			"[--node NAME] [--rule RULE]... "
			"[--container-parent NAME]... [--allow-comm COMM]... [--etc PATH]\n");
	exit(64);
}

int main(int argc, char **argv)
{
	const char *object = NULL, *etc = "/etc";
	const char *comms[MAX_LIST];
	int ncomms = 0;
	uint32_t rules = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!v)
			usage();
		if (strcmp(a, "--object") == 0)
			object = v;
		else if (strcmp(a, "--node") == 0)
			node = v;
		else if (strcmp(a, "--etc") == 0)
			etc = v;
		else if (strcmp(a, "--cgroup2-root") == 0 && v[0] == '/' && strlen(v) < sizeof(cg2))
			snprintf(cg2, sizeof(cg2), "%s", v);
		else if (strcmp(a, "--rule") == 0 && strcmp(v, "etc-file-create") == 0)
			rules |= 1;
		else if (strcmp(a, "--rule") == 0 && strcmp(v, "ptrace-pid1") == 0)
			rules |= 2;
		else if (strcmp(a, "--container-parent") == 0 && nparents < MAX_LIST && !strchr(v, '/'))
			parents[nparents++] = v;
		else if (strcmp(a, "--allow-comm") == 0 && ncomms < MAX_LIST && strlen(v) < 16)
			comms[ncomms++] = v;
		else
			usage();
		i++;
	}
	if (!object || !rules || !nparents)
		usage();
	on_signals();

	check_lsm();
	if (!cg2[0])
		fail("no cgroup2 hierarchy on %s (the node probe found none, so the harness passed no "
		     "--cgroup2-root): the container scope is a cgroup v2 ancestor", node);
	struct stat etc_st;
	if (stat(etc, &etc_st) != 0)
		fail("cannot stat %s on %s: %s", etc, node, strerror(errno));

	uint64_t t0 = clock_ns(CLOCK_MONOTONIC);
	struct bpf_object *obj = bpf_object__open_file(object, NULL);
	if (!obj)
		fail("cannot open %s on %s: %s", object, node, strerror(errno));
	if (bpf_object__load(obj) != 0)
		fail("BPF LSM not usable on %s: 'bpf' is an active LSM but the LSM programs do not "
		     "load (%s; %s)", node, strerror(errno), libbpf_first);
	uint64_t t1 = clock_ns(CLOCK_MONOTONIC);

	int cfg_fd = bpf_object__find_map_fd_by_name(obj, "config_map");
	int par_fd = bpf_object__find_map_fd_by_name(obj, "container_parents");
	int comm_fd = bpf_object__find_map_fd_by_name(obj, "allowed_comms");
	int ev_fd = bpf_object__find_map_fd_by_name(obj, "events");
	if (cfg_fd < 0 || par_fd < 0 || comm_fd < 0 || ev_fd < 0)
		fail("%s: missing a map (config_map, container_parents, allowed_comms, events)", object);
	struct config cfg = {
		.etc_ino = etc_st.st_ino,
		.etc_dev = (major(etc_st.st_dev) << 20) | minor(etc_st.st_dev), /* kernel dev_t */
		.rules = rules,
	};
	uint32_t zero = 0;
	uint8_t one = 1;
	if (bpf_map_update_elem(cfg_fd, &zero, &cfg, BPF_ANY) != 0)
		fail("cannot write the config map: %s", strerror(errno));
	for (int i = 0; i < ncomms; i++) {
		char key[16] = {0};
		memcpy(key, comms[i], strlen(comms[i]));
		bpf_map_update_elem(comm_fd, key, &one, BPF_ANY);
	}
	resolve_parents(par_fd);

	struct bpf_link *links[8];
	int nlinks = 0;
	struct bpf_program *prog;
	bpf_object__for_each_program(prog, obj) {
		const char *sec = bpf_program__section_name(prog);
		struct bpf_link *link = bpf_program__attach(prog);
		if (!link) {
			int err = errno;
			for (int i = 0; i < nlinks; i++)
				bpf_link__destroy(links[i]);
			fail("BPF LSM not usable on %s: 'bpf' is an active LSM but %s does not attach "
			     "(%s; %s)", node, sec, strerror(err), libbpf_first);
		}
		if (nlinks < 8)
			links[nlinks++] = link;
	}
	uint64_t t2 = clock_ns(CLOCK_MONOTONIC);

	struct ring_buffer *rb = ring_buffer__new(ev_fd, on_event, NULL, NULL);
	if (!rb)
		fail("cannot open the ring buffer: %s", strerror(errno));

	struct buf b = {.len = 0};
	put(&b, "{\"kind\":\"ready\",\"version\":\"%s\",\"rules\":[", VERSION);
	put(&b, "%s%s", rules & 1 ? "\"etc-file-create\"" : "", rules == 3 ? "," : "");
	put(&b, "%s],\"load_ms\":%.1f,\"attach_ms\":%.1f,\"cgroup2\":\"", rules & 2 ? "\"ptrace-pid1\"" : "",
	    (t1 - t0) / 1e6, (t2 - t1) / 1e6);
	put_escaped(&b, cg2, sizeof(cg2));
	put(&b, "\",\"etc_ino\":%llu,\"etc_dev\":%u}", (unsigned long long)cfg.etc_ino, cfg.etc_dev);
	emit(&b);

	while (!stopping) {
		int n = ring_buffer__poll(rb, 250);
		if (n < 0 && n != -EINTR) {
			fprintf(stderr, "shadowtest-lsm: ring_buffer__poll: %s\n", strerror(-n));
			break;
		}
		resolve_parents(par_fd);
	}
	ring_buffer__consume(rb);
	ring_buffer__free(rb);
	for (int i = 0; i < nlinks; i++)
		bpf_link__destroy(links[i]);
	bpf_object__close(obj);
	fflush(stdout);
	return 0;
}
