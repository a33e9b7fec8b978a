/* SPDX-License-Identifier: GPL-2.0 */
/* shadowtest compiled reference sensor: the fixed part of sensor.bpf.c (maps, helpers,
 * the sync-marker program). The rule programs are generated from the rule table. */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "event.h"

char LICENSE[] SEC("license") = "GPL";

/* the detections and markers, in order across CPUs; the loader sizes it (--ringbuf-mb) */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

/* events that found the ring buffer full: the loader reports them as lost_events */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* st_config slot 0: enum st_filter, written by the loader after load (0 until then: report all) */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} st_config SEC(".maps");

/* processes followed: the stage runners that announced themselves
 * (getpgid(ST_ANNOUNCE_BASE + scope)) and everything they forked since, each with its
 * run's loss scope. --filter runs reports only these; every mode attributes their losses
 * to their scope. LRU: never full; an entry is never deleted on exit (a recycled pid may be
 * followed too: more events and a wider loss, never fewer) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} tracked SEC(".maps");

/* events of a followed tree that found the ring buffer full, by loss scope (cumulative;
 * the loader reports the increase). Full (more scopes losing at once than this): the loss
 * is counted in `lost` instead, where it blinds every run */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} lost_scoped SEC(".maps");

/* the path arguments of the running program, read once (too large for the stack) */
struct st_scratch {
	char str[ST_NSTR][ST_STR];
	char aux[ST_STR];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct st_scratch);
} scratch SEC(".maps");

/* v &= mask, kept by the compiler (which may know it is a no-op) for the verifier */
#define st_bound(v, mask) asm volatile("%0 &= " #mask : "+r"(v))

static __always_inline struct st_scratch *st_scratch(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&scratch, &zero);
}

/* s starts with the n bytes of lit (n counts lit's NUL for an exact match) */
static __always_inline int st_prefix(const char *s, const char *lit, int n)
{
	for (int i = 0; i < n && i < ST_STR; i++)
		if (s[i] != lit[i])
			return 0;
	return 1;
}

/* s[off..] starts with the n bytes of lit */
static __always_inline int st_at(const char *s, __u32 off, const char *lit, int n)
{
	for (int i = 0; i < n && i < ST_STR; i++)
		if (s[(off + i) & ST_MASK] != lit[i])
			return 0;
	return 1;
}

/* s[0..end) ends with the n bytes of lit */
static __always_inline int st_suffix(const char *s, __u32 end, const char *lit, int n)
{
	if (end < (__u32)n || end > ST_STR)
		return 0;
	return st_at(s, end - n, lit, n);
}

struct st_scan {
	const char *s;
	__u32 base;
};

static long st_scan_step(__u32 i, void *data)
{
	struct st_scan *scan = data;
	char c = scan->s[i & ST_MASK];
	if (c == 0)
		return 1;
	if (c == '/')
		scan->base = i + 1;
	return 0;
}

/* the offset after the last '/' of the string s (bpf_loop: verified once, not per byte) */
static __always_inline __u32 st_basename(const char *s)
{
	struct st_scan scan = {.s = s, .base = 0};
	bpf_loop(ST_STR, st_scan_step, &scan, 0);
	return scan.base & ST_MASK;
}

/* the inum of the task's active pid namespace: thread_pid->numbers[level].ns */
static __always_inline __u32 st_pidns(struct task_struct *task)
{
	struct pid *pid = BPF_CORE_READ(task, thread_pid);
	unsigned int level = BPF_CORE_READ(pid, level);
	struct upid upid = {};
	bpf_core_read(&upid, sizeof(upid), &pid->numbers[level & 31]);
	return BPF_CORE_READ(upid.ns, ns.inum);
}

/* whether events of the calling task are reported (the --filter; see enum st_filter) */
static __always_inline int st_traced(struct task_struct *task)
{
	__u32 zero = 0, tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 *mode = bpf_map_lookup_elem(&st_config, &zero);
	if (!mode || *mode == ST_FILTER_NONE)
		return 1;
	if (bpf_map_lookup_elem(&tracked, &tgid))
		return 1;
	return *mode == ST_FILTER_RUNS_CONTAINERS && st_pidns(task) != ST_INIT_PIDNS;
}

/* an event that found the ring buffer full: counted against the calling task's run (its
 * loss scope) when it is followed under one, else against every run */
static __always_inline void st_lost(void)
{
	__u32 zero = 0, tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 *scope = bpf_map_lookup_elem(&tracked, &tgid);
	if (scope && *scope) {
		__u32 key = *scope;
		__u64 init = 0, *c = bpf_map_lookup_elem(&lost_scoped, &key);
		if (!c) {
			bpf_map_update_elem(&lost_scoped, &key, &init, BPF_NOEXIST);
			c = bpf_map_lookup_elem(&lost_scoped, &key);
		}
		if (c) {
			__sync_fetch_and_add(c, 1);
			return;
		}
	}
	__u64 *n = bpf_map_lookup_elem(&lost, &zero);
	if (n)
		*n += 1;
}

/* the shared header of a detection of rule index `rule` (a subprogram: one copy) */
static __noinline void st_header(struct st_event *e, struct task_struct *task, __u32 rule)
{
	if (!e)
		return;
	__u64 id = bpf_get_current_pid_tgid();
	e->ts_ns = bpf_ktime_get_ns();
	e->cgroup = bpf_get_current_cgroup_id();
	e->kind = ST_KIND_DETECTION;
	e->rule = rule;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	struct task_struct *p = BPF_CORE_READ(task, real_parent);
	e->ppid = BPF_CORE_READ(p, tgid);
#pragma unroll
	for (int i = 0; i < 6; i++) {
		p = BPF_CORE_READ(p, real_parent);
		e->ancestors[i] = BPF_CORE_READ(p, tgid);
	}
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->pidns = st_pidns(task);
	e->mntns = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->cpu = bpf_get_smp_processor_id();
}

/* a reserved detection of rule index `rule` with the shared header filled in */
static __always_inline struct st_event *st_emit(struct task_struct *task, __u32 rule)
{
	struct st_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		st_lost();
		return 0;
	}
	st_header(e, task, rule);
	return e;
}

/* sync markers: getpgid(pid) with pid in [ST_MARKER_BASE, ST_MARKER_LAST]; and
 * getpgid(ST_ANNOUNCE_BASE + scope): follow the caller's tree from now on (before the call
 * returns), its losses counted against scope */
SEC("tracepoint/syscalls/sys_enter_getpgid")
int st_marker(struct trace_event_raw_sys_enter *ctx)
{
	int pid = (int)ctx->args[0];
	if (pid >= ST_ANNOUNCE_BASE && pid <= ST_ANNOUNCE_LAST) {
		__u32 tgid = bpf_get_current_pid_tgid() >> 32;
		__u32 scope = pid - ST_ANNOUNCE_BASE;
		bpf_map_update_elem(&tracked, &tgid, &scope, BPF_ANY);
		return 0;
	}
	if (pid < ST_MARKER_BASE || pid > ST_MARKER_LAST)
		return 0;
	struct st_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		st_lost();
		return 0;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->kind = ST_KIND_MARKER;
	e->rule = pid - ST_MARKER_BASE;
	e->cpu = bpf_get_smp_processor_id();
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* a followed process's children are followed under its scope (threads too: keyed by
 * their tid, harmless) */
SEC("tracepoint/sched/sched_process_fork")
int st_fork(struct trace_event_raw_sched_process_fork *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32, child = ctx->child_pid;
	__u32 *scope = bpf_map_lookup_elem(&tracked, &tgid);
	if (scope) {
		__u32 inherited = *scope;
		bpf_map_update_elem(&tracked, &child, &inherited, BPF_ANY);
	}
	return 0;
}
