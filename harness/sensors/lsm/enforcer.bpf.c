// SPDX-License-Identifier: GPL-2.0
/*
 * shadowtest-rulepack: lsm-1
 *
 * shadowtest LSM enforcer: BPF LSM programs that DENY (-EPERM) two container attacks
 * before they take effect, and report every denial. CO-RE (libbpf), loaded and attached
 * by enforcer.c; built by ci/lsm-enforcer.sh.
 *
 * Policy (one rule per hook; "container task" = the task's cgroup v2 ancestor at
 * level 1 is one of the container parents the loader put in container_parents,
 * i.e. <cgroup2>/shadowtest/..., <cgroup2>/docker/..., <cgroup2>/kubepods/...):
 *   rule             technique  sev     denies (returns -EPERM)
 *   etc-file-create  T1098      medium  a container task creating a new file directly in
 *                                       the host's /etc (inode_create whose parent
 *                                       directory is the inode+device the loader stat()ed
 *                                       as /etc in the initial mount namespace), unless
 *                                       its comm is an allowed package manager (+path)
 *   ptrace-pid1      T1055.008  high    a container task's PTRACE_MODE_ATTACH access
 *                                       (ptrace attach/seize, /proc/<pid>/mem,
 *                                       process_vm_writev, pidfd_getfd) to a task that is
 *                                       PID 1 of a non-initial PID namespace
 *                                       (+target = host pid, target_vpid = 1, mode)
 * Host tasks (root cgroup, init.scope, system.slice, user sessions) never match, so the
 * host's own processes are never denied. Return values are the constants 0 and -EPERM
 * only (6.12 verifies LSM return ranges; the chained "ret" is never passed through).
 *
 * Events go to one ring buffer (MPSC, ordered): a detection per denial, and a marker
 * per getpgid(0x5ad00000 + token) (the harness's sync marker, as in sensor.bt).
 *
 * LIMITATIONS (accepted, by design of a two-rule policy):
 *   - Only inode_create (open O_CREAT, creat, mknod of a regular file) directly in /etc:
 *     subdirectories (/etc/cron.d/...), writes to existing files, mkdir, symlink, link,
 *     rename into /etc and O_TMPFILE + linkat are not denied.
 *   - /etc is the inode+device the loader sees: a container with its own root file
 *     system has its own /etc (not the host's), which is not protected; a bind mount of
 *     the host's /etc (-v /etc:/host/etc) is the same directory and IS protected.
 *   - The package-manager exception is by comm (dpkg, apt, apt-get), which any process
 *     can take (as in sensor.bt and Falco's "Write below etc").
 *   - Container parents are level-1 cgroups: systemd-driver containers
 *     (system.slice/docker-<id>.scope) are not covered, because system.slice also holds
 *     the host's services. A parent created after start is seen within 250 ms.
 *   - PTRACE_MODE_ATTACH also guards /proc/<pid>/mem, process_vm_writev and pidfd_getfd:
 *     all of them are denied on a container init, from a container task.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "enforcer.h"

#define EPERM 1
#define PTRACE_MODE_ATTACH 0x02
#define MARKER_BASE 0x5ad00000
#define MARKER_LAST 0x5adfffff

#define EV_MARKER 1
#define EV_ETC_FILE_CREATE 2
#define EV_PTRACE_PID1 3


char LICENSE[] SEC("license") = "GPL";

/* written by the loader before load (.rodata would need a skeleton; a map is as cheap) */
struct config {
	u64 etc_ino;     /* stat("/etc").st_ino in the initial mount namespace */
	u32 etc_dev;     /* ... its st_dev as the kernel's dev_t (major << 20 | minor) */
	u32 rules;       /* bit 0: etc-file-create, bit 1: ptrace-pid1 */
};


struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct config);
} config_map SEC(".maps");

/* cgroup ids (inode numbers) of the level-1 cgroups whose subtrees are containers */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, u64);
	__type(value, u8);
} container_parents SEC(".maps");

/* allowed comms (package managers), 16 bytes zero-padded */
struct comm_key {
	char comm[16];
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct comm_key);
	__type(value, u8);
} allowed_comms SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

static __always_inline struct config *get_config(void)
{
	u32 zero = 0;
	return bpf_map_lookup_elem(&config_map, &zero);
}

static __always_inline int in_container(void)
{
	u64 parent = bpf_get_current_ancestor_cgroup_id(1);
	return parent && bpf_map_lookup_elem(&container_parents, &parent) != NULL;
}

static __always_inline void fill_task(struct event *e)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	u64 id = bpf_get_current_pid_tgid();
	struct pid *tp;
	struct upid up = {};
	unsigned int level;

	e->ts_ns = bpf_ktime_get_ns();
	e->cpu = bpf_get_smp_processor_id();
	e->pid = id >> 32;
	e->tid = (u32)id;
	e->uid = (u32)bpf_get_current_uid_gid();
	e->cgroup = bpf_get_current_cgroup_id();
	bpf_get_current_comm(e->comm, sizeof(e->comm));

	struct task_struct *p = BPF_CORE_READ(t, real_parent);
	e->ppid = BPF_CORE_READ(p, tgid);
#pragma unroll
	for (int i = 0; i < ANCESTORS; i++) {
		p = BPF_CORE_READ(p, real_parent);
		e->ancestors[i] = p ? BPF_CORE_READ(p, tgid) : 0;
	}
	tp = BPF_CORE_READ(t, thread_pid);
	level = BPF_CORE_READ(tp, level);
	bpf_core_read(&up, sizeof(up), &tp->numbers[level & 31]);
	e->pidns = BPF_CORE_READ(up.ns, ns.inum);
	e->mntns = BPF_CORE_READ(t, nsproxy, mnt_ns, ns.inum);
}

SEC("lsm/inode_create")
int BPF_PROG(deny_etc_create, struct inode *dir, struct dentry *dentry, umode_t mode)
{
	struct config *cfg = get_config();
	struct comm_key comm = {};
	struct event *e;

	if (!cfg || !(cfg->rules & 1) || !cfg->etc_ino)
		return 0;
	if (BPF_CORE_READ(dir, i_ino) != cfg->etc_ino ||
	    BPF_CORE_READ(dir, i_sb, s_dev) != cfg->etc_dev)
		return 0;
	if (!in_container())
		return 0;
	bpf_get_current_comm(comm.comm, sizeof(comm.comm));
	if (bpf_map_lookup_elem(&allowed_comms, &comm))
		return 0;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (e) {
		__builtin_memset(e, 0, sizeof(*e));
		e->type = EV_ETC_FILE_CREATE;
		fill_task(e);
		e->mode = mode;
		bpf_probe_read_kernel_str(e->name, sizeof(e->name), BPF_CORE_READ(dentry, d_name.name));
		bpf_ringbuf_submit(e, 0);
	}
	return -EPERM;
}

SEC("lsm/ptrace_access_check")
int BPF_PROG(deny_ptrace_pid1, struct task_struct *child, unsigned int mode)
{
	struct config *cfg = get_config();
	struct pid *cp;
	struct upid up = {};
	unsigned int level;
	struct event *e;

	if (!cfg || !(cfg->rules & 2) || !(mode & PTRACE_MODE_ATTACH))
		return 0;
	cp = BPF_CORE_READ(child, thread_pid);
	level = BPF_CORE_READ(cp, level);
	if (level == 0)  /* the initial PID namespace: the machine's own PID 1 is not ours */
		return 0;
	bpf_core_read(&up, sizeof(up), &cp->numbers[level & 31]);
	if (up.nr != 1)
		return 0;
	if (!in_container())
		return 0;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (e) {
		__builtin_memset(e, 0, sizeof(*e));
		e->type = EV_PTRACE_PID1;
		fill_task(e);
		e->target = BPF_CORE_READ(child, tgid);
		e->target_vpid = 1;
		e->mode = mode;
		bpf_ringbuf_submit(e, 0);
	}
	return -EPERM;
}

/* sync markers: getpgid(pid) with pid in [0x5ad00000, 0x5adfffff] */
SEC("tracepoint/syscalls/sys_enter_getpgid")
int marker(struct trace_event_raw_sys_enter *ctx)
{
	long pid = ctx->args[0];
	struct event *e;

	if (pid < MARKER_BASE || pid > MARKER_LAST)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->type = EV_MARKER;
	e->token = pid - MARKER_BASE;
	e->cpu = bpf_get_smp_processor_id();
	e->ts_ns = bpf_ktime_get_ns();
	bpf_ringbuf_submit(e, 0);
	return 0;
}
