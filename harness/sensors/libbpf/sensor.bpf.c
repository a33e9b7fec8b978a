// SPDX-License-Identifier: GPL-2.0
/* shadowtest-rulepack: 3 (compiled engine)
 *
 * GENERATED from harness/sensors/bpftrace/rules.py by
 *   python -m harness.sensors.libbpf.generate
 * Edit the table, not this file (a unit test fails when this file is stale).
 */
#include "prelude.bpf.h"

/* ptrace: ptrace-pid1, ptrace-poke */
SEC("tracepoint/syscalls/sys_enter_ptrace")
int st_ptrace(struct trace_event_raw_sys_enter *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct st_scratch *s = st_scratch();
	if (!s)
		return 0;
	if (!st_traced(task))
		return 0;
	long a_request = (long)ctx->args[0];
	long a_pid = (long)ctx->args[1];

	/* ptrace-pid1 (T1055.008): ptrace ATTACH/SEIZE of pid 1 */
	{
		if ((a_request == 16 || a_request == 0x4206) && a_pid == 1) {
			struct st_event *e = st_emit(task, 0);
			if (e) {
				e->num[0] = a_request;
				e->num[1] = a_pid;
				bpf_ringbuf_submit(e, 0);
			}
		}
	}

	/* ptrace-poke (T1055.008): ptrace POKETEXT/POKEDATA */
	{
		if ((a_request == 4 || a_request == 5)) {
			struct st_event *e = st_emit(task, 1);
			if (e) {
				e->num[0] = a_request;
				e->num[1] = a_pid;
				bpf_ringbuf_submit(e, 0);
			}
		}
	}
	return 0;
}

/* setns: container-setns-mnt, container-setns-ns */
SEC("tracepoint/syscalls/sys_enter_setns")
int st_setns(struct trace_event_raw_sys_enter *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct st_scratch *s = st_scratch();
	if (!s)
		return 0;
	if (!st_traced(task))
		return 0;
	int a_fd = (int)ctx->args[0];
	int a_flags = (int)ctx->args[1];

	/* container-setns-mnt (T1611): container setns into a mnt ns */
	{
		if ((a_flags == 0 || a_flags == 0x20000) && st_pidns(task) != 4026531836U) {
			struct st_event *e = st_emit(task, 2);
			if (e) {
				e->num[0] = a_fd;
				e->num[1] = a_flags;
				bpf_ringbuf_submit(e, 0);
			}
		}
	}

	/* container-setns-ns (T1611): container setns, any other ns type */
	{
		if (a_flags != 0 && a_flags != 0x20000 && st_pidns(task) != 4026531836U) {
			struct st_event *e = st_emit(task, 3);
			if (e) {
				e->num[0] = a_fd;
				e->num[1] = a_flags;
				bpf_ringbuf_submit(e, 0);
			}
		}
	}
	return 0;
}

/* openat: release-agent-write, core-pattern-write, proc-mem-write, etc-file-create, sudoers-write, cron-write, systemd-unit-write, shell-profile-write, ld-preload-write, shadow-read, k8s-sa-token-read, proc-environ-read */
SEC("tracepoint/syscalls/sys_enter_openat")
int st_openat(struct trace_event_raw_sys_enter *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct st_scratch *s = st_scratch();
	if (!s)
		return 0;
	if (!st_traced(task))
		return 0;
	unsigned long a_path = (unsigned long)ctx->args[1];
	int a_flags = (int)ctx->args[2];
	bpf_probe_read_user_str(s->str[0], ST_STR, (void *)a_path);
	__u32 base0 = st_basename(s->str[0]);
	char comm[16];
	bpf_get_current_comm(comm, sizeof(comm));

	/* release-agent-write (T1611): open for write of .../release_agent */
	{
		if ((a_flags & 0x43) != 0 && (st_at(s->str[0], base0, "release_agent", 14))) {
			struct st_event *e = st_emit(task, 6);
			if (e) {
				bpf_probe_read_kernel_str(e->str[0], ST_STR, s->str[0]);
				e->num[0] = a_flags;
				bpf_ringbuf_submit(e, 0);
			}
		}
	}

	/* core-pattern-write (T1611): open for write of /proc/sys/kernel/core_pattern */
	{
		if ((a_flags & 0x43) != 0 && (st_prefix(s->str[0], "/proc/sys/kernel/core_pattern", 30))) {
			struct st_event *e = st_emit(task, 7);
			if (e) {
				bpf_probe_read_kernel_str(e->str[0], ST_STR, s->str[0]);
				e->num[0] = a_flags;
				bpf_ringbuf_submit(e, 0);
			}
		}
	}

	/* proc-mem-write (T1055.009): open for write of /proc/<pid>/mem */
	{
		if ((a_flags & 0x43) != 0 && (st_prefix(s->str[0], "/proc/", 6)) && (st_at(s->str[0], base0, "mem", 4))) {
			struct st_event *e = st_emit(task, 11);
			if (e) {
				bpf_probe_read_kernel_str(e->str[0], ST_STR, s->str[0]);
				e->num[0] = a_flags;
				bpf_ringbuf_submit(e, 0);
			}
		}
	}

	/* etc-file-create (T1098): O_CREAT under /etc/ (open, openat, openat2, creat; not by dpkg/apt/rpm/dnf/yum) */
	{
		if ((a_flags & 0x40) != 0 && (st_prefix(s->str[0], "/etc/", 5)) && !st_prefix(comm, "dpkg", 5) && !st_prefix(comm, "apt", 4) && !st_prefix(comm, "apt-get", 8) && !st_prefix(comm, "rpm", 4) && !st_prefix(comm, "dnf", 4) && !st_prefix(comm, "yum", 4)) {
			struct st_event *e = st_emit(task, 12);
			if (e) {
				bpf_probe_read_kernel_str(e->str[0], ST_STR, s->str[0]);
				bpf_ringbuf_submit(e, 0);
			}
		}
	}

	/* sudoers-write (T1548.003): open for write under /etc/sudoers.d/ or of /etc/sudoers */
	{
		if ((a_flags & 0x43) != 0 && (st_prefix(s->str[0], "/etc/sudoers.d/", 15) || st_prefix(s->str[0], "/etc/sudoers", 13))) {
			struct st_event *e = st_emit(task, 13);
			if (e) {
				bpf_probe_read_kernel_str(e->str[0], ST_STR, s->str[0]);
				e->num[0] = a_flags;
				bpf_ringbuf_submit(e, 0);
			}
		}
	}

	/* cron-write (T1053.003): open for write under /etc/cron.d/ or of /etc/crontab */
	{
		if ((a_flags & 0x43) != 0 && (st_prefix(s->str[0], "/etc/cron.d/", 12) || st_prefix(s->str[0], "/etc/crontab", 13))) {
			struct st_event *e = st_emit(task, 14);
			if (e) {
				bpf_probe_read_kernel_str(e->str[0], ST_STR, s->str[0]);
				e->num[0] = a_flags;
				bpf_ringbuf_submit(e, 0);
			}
		}
	}

	/* systemd-unit-write (T1543.002): open for write under /etc/systemd/system/ */
	{
		if ((a_flags & 0x43) != 0 && (st_prefix(s->str[0], "/etc/systemd/system/", 20))) {
			struct st_event *e = st_emit(task, 15);
			if (e) {
				bpf_probe_read_kernel_str(e->str[0], ST_STR, s->str[0]);
				e->num[0] = a_flags;
				bpf_ringbuf_submit(e, 0);
			}
		}
	}

	/* shell-profile-write (T1546.004): open for write under /etc/profile.d/ */
	{
		if ((a_flags & 0x43) != 0 && (st_prefix(s->str[0], "/etc/profile.d/", 15))) {
			struct st_event *e = st_emit(task, 16);
			if (e) {
				bpf_probe_read_kernel_str(e->str[0], ST_STR, s->str[0]);
				e->num[0] = a_flags;
				bpf_ringbuf_submit(e, 0);
			}
		}
	}

	/* ld-preload-write (T1574.006): open for write of /etc/ld.so.preload */
	{
		if ((a_flags & 0x43) != 0 && (st_prefix(s->str[0], "/etc/ld.so.preload", 19))) {
			struct st_event *e = st_emit(task, 17);
			if (e) {
				bpf_probe_read_kernel_str(e->str[0], ST_STR, s->str[0]);
				e->num[0] = a_flags;
				bpf_ringbuf_submit(e, 0);
			}
		}
	}

	/* shadow-read (T1003.008): open for read of /etc/shadow or /etc/gshadow */
	{
		if ((a_flags & 0x43) == 0 && (st_prefix(s->str[0], "/etc/shadow", 12) || st_prefix(s->str[0], "/etc/gshadow", 13))) {
			struct st_event *e = st_emit(task, 18);
			if (e) {
				bpf_probe_read_kernel_str(e->str[0], ST_STR, s->str[0]);
				e->num[0] = a_flags;
				bpf_ringbuf_submit(e, 0);
			}
		}
	}

	/* k8s-sa-token-read (T1528): open for read under /var/run/secrets/kube... or /run/secrets/kube... (kubernetes.io service-account tokens) */
	{
		if ((a_flags & 0x43) == 0 && (st_prefix(s->str[0], "/var/run/secrets/kube", 21) || st_prefix(s->str[0], "/run/secrets/kube", 17))) {
			struct st_event *e = st_emit(task, 19);
			if (e) {
				bpf_probe_read_kernel_str(e->str[0], ST_STR, s->str[0]);
				e->num[0] = a_flags;
				bpf_ringbuf_submit(e, 0);
			}
		}
	}

	/* proc-environ-read (T1057): open for read of /proc/<pid>/environ, pid not self or thread-self */
	{
		if ((a_flags & 0x43) == 0 && (st_prefix(s->str[0], "/proc/", 6)) && !(st_prefix(s->str[0], "/proc/self/", 11) || st_prefix(s->str[0], "/proc/thread-self/", 18)) && (st_at(s->str[0], base0, "environ", 8))) {
			struct st_event *e = st_emit(task, 20);
			if (e) {
				bpf_probe_read_kernel_str(e->str[0], ST_STR, s->str[0]);
				e->num[0] = a_flags;
				bpf_ringbuf_submit(e, 0);
			}
		}
	}
	return 0;
}

/* open: etc-file-create */
SEC("tracepoint/syscalls/sys_enter_open")
int st_open(struct trace_event_raw_sys_enter *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct st_scratch *s = st_scratch();
	if (!s)
		return 0;
	if (!st_traced(task))
		return 0;
	unsigned long a_path = (unsigned long)ctx->args[0];
	int a_flags = (int)ctx->args[1];
	bpf_probe_read_user_str(s->str[0], ST_STR, (void *)a_path);
	char comm[16];
	bpf_get_current_comm(comm, sizeof(comm));

	/* etc-file-create (T1098): O_CREAT under /etc/ (open, openat, openat2, creat; not by dpkg/apt/rpm/dnf/yum) */
	{
		if ((a_flags & 0x40) != 0 && (st_prefix(s->str[0], "/etc/", 5)) && !st_prefix(comm, "dpkg", 5) && !st_prefix(comm, "apt", 4) && !st_prefix(comm, "apt-get", 8) && !st_prefix(comm, "rpm", 4) && !st_prefix(comm, "dnf", 4) && !st_prefix(comm, "yum", 4)) {
			struct st_event *e = st_emit(task, 12);
			if (e) {
				bpf_probe_read_kernel_str(e->str[0], ST_STR, s->str[0]);
				bpf_ringbuf_submit(e, 0);
			}
		}
	}
	return 0;
}

/* openat2: etc-file-create */
SEC("tracepoint/syscalls/sys_enter_openat2")
int st_openat2(struct trace_event_raw_sys_enter *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct st_scratch *s = st_scratch();
	if (!s)
		return 0;
	if (!st_traced(task))
		return 0;
	unsigned long a_path = (unsigned long)ctx->args[1];
	long a_flags = 0;
	bpf_probe_read_user(&a_flags, sizeof(a_flags), (void *)ctx->args[2]);  /* struct open_how: flags first */
	bpf_probe_read_user_str(s->str[0], ST_STR, (void *)a_path);
	char comm[16];
	bpf_get_current_comm(comm, sizeof(comm));

	/* etc-file-create (T1098): O_CREAT under /etc/ (open, openat, openat2, creat; not by dpkg/apt/rpm/dnf/yum) */
	{
		if ((a_flags & 0x40) != 0 && (st_prefix(s->str[0], "/etc/", 5)) && !st_prefix(comm, "dpkg", 5) && !st_prefix(comm, "apt", 4) && !st_prefix(comm, "apt-get", 8) && !st_prefix(comm, "rpm", 4) && !st_prefix(comm, "dnf", 4) && !st_prefix(comm, "yum", 4)) {
			struct st_event *e = st_emit(task, 12);
			if (e) {
				bpf_probe_read_kernel_str(e->str[0], ST_STR, s->str[0]);
				bpf_ringbuf_submit(e, 0);
			}
		}
	}
	return 0;
}

/* creat: etc-file-create */
SEC("tracepoint/syscalls/sys_enter_creat")
int st_creat(struct trace_event_raw_sys_enter *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct st_scratch *s = st_scratch();
	if (!s)
		return 0;
	if (!st_traced(task))
		return 0;
	unsigned long a_path = (unsigned long)ctx->args[0];
	bpf_probe_read_user_str(s->str[0], ST_STR, (void *)a_path);
	char comm[16];
	bpf_get_current_comm(comm, sizeof(comm));

	/* etc-file-create (T1098): O_CREAT under /etc/ (open, openat, openat2, creat; not by dpkg/apt/rpm/dnf/yum) */
	{
		if ((st_prefix(s->str[0], "/etc/", 5)) && !st_prefix(comm, "dpkg", 5) && !st_prefix(comm, "apt", 4) && !st_prefix(comm, "apt-get", 8) && !st_prefix(comm, "rpm", 4) && !st_prefix(comm, "dnf", 4) && !st_prefix(comm, "yum", 4)) {
			struct st_event *e = st_emit(task, 12);
			if (e) {
				bpf_probe_read_kernel_str(e->str[0], ST_STR, s->str[0]);
				bpf_ringbuf_submit(e, 0);
			}
		}
	}
	return 0;
}

/* mount: container-mount-blockdev, container-cgroup-v1-mount */
SEC("tracepoint/syscalls/sys_enter_mount")
int st_mount(struct trace_event_raw_sys_enter *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct st_scratch *s = st_scratch();
	if (!s)
		return 0;
	if (!st_traced(task))
		return 0;
	unsigned long a_source = (unsigned long)ctx->args[0];
	unsigned long a_fstype = (unsigned long)ctx->args[2];
	unsigned long a_target = (unsigned long)ctx->args[1];
	bpf_probe_read_user_str(s->str[0], ST_STR, (void *)a_source);
	bpf_probe_read_user_str(s->str[1], ST_STR, (void *)a_fstype);

	/* container-mount-blockdev (T1611): container mount of a /dev/ source */
	{
		if ((st_prefix(s->str[0], "/dev/", 5)) && st_pidns(task) != 4026531836U) {
			struct st_event *e = st_emit(task, 4);
			if (e) {
				bpf_probe_read_kernel_str(e->str[0], ST_STR, s->str[0]);
				bpf_probe_read_kernel_str(e->str[1], ST_STR, s->str[1]);
				bpf_probe_read_user_str(e->str[2], ST_STR, (void *)a_target);
				bpf_ringbuf_submit(e, 0);
			}
		}
	}

	/* container-cgroup-v1-mount (T1611): container mount of a cgroup v1 hierarchy */
	{
		if ((st_prefix(s->str[1], "cgroup", 7)) && st_pidns(task) != 4026531836U) {
			struct st_event *e = st_emit(task, 5);
			if (e) {
				bpf_probe_read_kernel_str(e->str[0], ST_STR, s->str[0]);
				bpf_probe_read_kernel_str(e->str[1], ST_STR, s->str[1]);
				bpf_probe_read_user_str(e->str[2], ST_STR, (void *)a_target);
				bpf_ringbuf_submit(e, 0);
			}
		}
	}
	return 0;
}

/* connect: container-runtime-socket */
SEC("tracepoint/syscalls/sys_enter_connect")
int st_connect(struct trace_event_raw_sys_enter *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct st_scratch *s = st_scratch();
	if (!s)
		return 0;
	if (!st_traced(task))
		return 0;
	unsigned long a_addr = (unsigned long)ctx->args[1];
	int a_addrlen = (int)ctx->args[2];

	/* container-runtime-socket (T1611): connect() to a unix socket named docker.sock, containerd.sock or crio.sock */
	{
		if (a_addrlen > 13 && a_addrlen <= 110) {
			/* RAW (not table data): an AF_UNIX sockaddr whose path ends in docker.sock, containerd.sock or crio.sock (addrlen = 2 + strlen(path), +1 when the caller counts the NUL) */
			__u64 len = (__u32)a_addrlen;
			st_bound(len, 0x7f);
			bpf_probe_read_user(s->aux, len, (void *)a_addr);
			__u16 fam = *(__u16 *)s->aux;
			__u32 end = len;
			if (s->aux[(end - 1) & ST_MASK] == 0)
				end = end - 1;
			if ((fam == 1 && (st_suffix(s->aux, end, "docker.sock", 11) || st_suffix(s->aux, end, "containerd.sock", 15) || st_suffix(s->aux, end, "crio.sock", 9)))) {
				struct st_event *e = st_emit(task, 9);
				if (e) {
					bpf_probe_read_user_str(e->str[0], ST_STR, (void *)(a_addr + 2));
					bpf_ringbuf_submit(e, 0);
				}
			}
		}
	}
	return 0;
}

/* process_vm_writev: process-vm-write */
SEC("tracepoint/syscalls/sys_enter_process_vm_writev")
int st_process_vm_writev(struct trace_event_raw_sys_enter *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct st_scratch *s = st_scratch();
	if (!s)
		return 0;
	if (!st_traced(task))
		return 0;
	int a_pid = (int)ctx->args[0];

	/* process-vm-write (T1055): process_vm_writev into another process */
	{
		if (a_pid != (long)(bpf_get_current_pid_tgid() >> 32)) {
			struct st_event *e = st_emit(task, 10);
			if (e) {
				e->num[0] = a_pid;
				bpf_ringbuf_submit(e, 0);
			}
		}
	}
	return 0;
}

/* exec: usermode-helper-exec, fileless-exec-memfd */
SEC("tracepoint/sched/sched_process_exec")
int st_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct st_scratch *s = st_scratch();
	if (!s)
		return 0;
	int traced = st_traced(task);
	unsigned long a_filename = (unsigned long)ctx + (ctx->__data_loc_filename & 0xFFFF);

	/* usermode-helper-exec (T1611): exec by a kernel usermode helper (a child of kthreadd: release_agent, core_pattern pipe, modprobe) */
	{
		if (BPF_CORE_READ(task, real_parent, tgid) == 2) {
			struct st_event *e = st_emit(task, 8);
			if (e) {
				bpf_probe_read_kernel_str(e->str[0], ST_STR, (void *)a_filename);
				bpf_ringbuf_submit(e, 0);
			}
		}
	}

	/* fileless-exec-memfd (T1620): exec of a memfd (exe dentry "memfd:...") */
	{
		if (traced) {
			/* RAW (not table data): the new image is a memfd: its exe dentry is named "memfd:..." */
			bpf_probe_read_kernel_str(s->aux, ST_STR, BPF_CORE_READ(task, mm, exe_file, f_path.dentry, d_name.name));
			if ((st_prefix(s->aux, "memfd:", 6))) {
				struct st_event *e = st_emit(task, 21);
				if (e) {
					bpf_probe_read_kernel_str(e->str[0], ST_STR, s->aux);
					bpf_probe_read_kernel_str(e->str[1], ST_STR, (void *)a_filename);
					bpf_ringbuf_submit(e, 0);
				}
			}
		}
	}
	return 0;
}

/* unlinkat: log-file-delete */
SEC("tracepoint/syscalls/sys_enter_unlinkat")
int st_unlinkat(struct trace_event_raw_sys_enter *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct st_scratch *s = st_scratch();
	if (!s)
		return 0;
	if (!st_traced(task))
		return 0;
	unsigned long a_path = (unsigned long)ctx->args[1];
	bpf_probe_read_user_str(s->str[0], ST_STR, (void *)a_path);

	/* log-file-delete (T1070.002): unlink/unlinkat under /var/log/ */
	{
		if ((st_prefix(s->str[0], "/var/log/", 9))) {
			struct st_event *e = st_emit(task, 23);
			if (e) {
				bpf_probe_read_kernel_str(e->str[0], ST_STR, s->str[0]);
				bpf_ringbuf_submit(e, 0);
			}
		}
	}
	return 0;
}

/* unlink: log-file-delete */
SEC("tracepoint/syscalls/sys_enter_unlink")
int st_unlink(struct trace_event_raw_sys_enter *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct st_scratch *s = st_scratch();
	if (!s)
		return 0;
	if (!st_traced(task))
		return 0;
	unsigned long a_path = (unsigned long)ctx->args[0];
	bpf_probe_read_user_str(s->str[0], ST_STR, (void *)a_path);

	/* log-file-delete (T1070.002): unlink/unlinkat under /var/log/ */
	{
		if ((st_prefix(s->str[0], "/var/log/", 9))) {
			struct st_event *e = st_emit(task, 23);
			if (e) {
				bpf_probe_read_kernel_str(e->str[0], ST_STR, s->str[0]);
				bpf_ringbuf_submit(e, 0);
			}
		}
	}
	return 0;
}

/* fchmodat: setuid-bit-set */
SEC("tracepoint/syscalls/sys_enter_fchmodat")
int st_fchmodat(struct trace_event_raw_sys_enter *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct st_scratch *s = st_scratch();
	if (!s)
		return 0;
	if (!st_traced(task))
		return 0;
	unsigned long a_path = (unsigned long)ctx->args[1];
	int a_mode = (int)ctx->args[2];

	/* setuid-bit-set (T1548.001): chmod/fchmodat with S_ISUID|S_ISGID */
	{
		if ((a_mode & 0xc00) != 0) {
			struct st_event *e = st_emit(task, 22);
			if (e) {
				bpf_probe_read_user_str(e->str[0], ST_STR, (void *)a_path);
				e->num[0] = a_mode;
				bpf_ringbuf_submit(e, 0);
			}
		}
	}
	return 0;
}

/* chmod: setuid-bit-set */
SEC("tracepoint/syscalls/sys_enter_chmod")
int st_chmod(struct trace_event_raw_sys_enter *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct st_scratch *s = st_scratch();
	if (!s)
		return 0;
	if (!st_traced(task))
		return 0;
	unsigned long a_path = (unsigned long)ctx->args[0];
	int a_mode = (int)ctx->args[1];

	/* setuid-bit-set (T1548.001): chmod/fchmodat with S_ISUID|S_ISGID */
	{
		if ((a_mode & 0xc00) != 0) {
			struct st_event *e = st_emit(task, 22);
			if (e) {
				bpf_probe_read_user_str(e->str[0], ST_STR, (void *)a_path);
				e->num[0] = a_mode;
				bpf_ringbuf_submit(e, 0);
			}
		}
	}
	return 0;
}

/* dup2: stdio-socket-redirect */
SEC("tracepoint/syscalls/sys_enter_dup2")
int st_dup2(struct trace_event_raw_sys_enter *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct st_scratch *s = st_scratch();
	if (!s)
		return 0;
	if (!st_traced(task))
		return 0;
	int a_oldfd = (int)ctx->args[0];
	int a_newfd = (int)ctx->args[1];

	/* stdio-socket-redirect (T1059.004): dup2/dup3 of an AF_INET/AF_INET6 socket onto fd 0, 1 or 2 */
	{
		if (a_newfd <= 2 && a_oldfd > 2) {
			/* RAW (not table data): oldfd is an AF_INET/AF_INET6 socket (the caller's fd table, the socket's family) */
			struct file **fds = BPF_CORE_READ(task, files, fdt, fd);
			struct file *file = 0;
			bpf_probe_read_kernel(&file, sizeof(file), fds + (a_oldfd & 0xffffff));
			__u16 fam = 0;
			if (file && (BPF_CORE_READ(file, f_inode, i_mode) & 0xf000) == 0xc000) {
				struct socket *sock = (struct socket *)BPF_CORE_READ(file, private_data);
				fam = BPF_CORE_READ(sock, sk, __sk_common.skc_family);
			}
			if ((fam == 2 || fam == 10)) {
				struct st_event *e = st_emit(task, 24);
				if (e) {
					e->num[0] = a_oldfd;
					e->num[1] = a_newfd;
					e->num[2] = fam;
					bpf_ringbuf_submit(e, 0);
				}
			}
		}
	}
	return 0;
}

/* dup3: stdio-socket-redirect */
SEC("tracepoint/syscalls/sys_enter_dup3")
int st_dup3(struct trace_event_raw_sys_enter *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct st_scratch *s = st_scratch();
	if (!s)
		return 0;
	if (!st_traced(task))
		return 0;
	int a_oldfd = (int)ctx->args[0];
	int a_newfd = (int)ctx->args[1];

	/* stdio-socket-redirect (T1059.004): dup2/dup3 of an AF_INET/AF_INET6 socket onto fd 0, 1 or 2 */
	{
		if (a_newfd <= 2 && a_oldfd > 2) {
			/* RAW (not table data): oldfd is an AF_INET/AF_INET6 socket (the caller's fd table, the socket's family) */
			struct file **fds = BPF_CORE_READ(task, files, fdt, fd);
			struct file *file = 0;
			bpf_probe_read_kernel(&file, sizeof(file), fds + (a_oldfd & 0xffffff));
			__u16 fam = 0;
			if (file && (BPF_CORE_READ(file, f_inode, i_mode) & 0xf000) == 0xc000) {
				struct socket *sock = (struct socket *)BPF_CORE_READ(file, private_data);
				fam = BPF_CORE_READ(sock, sk, __sk_common.skc_family);
			}
			if ((fam == 2 || fam == 10)) {
				struct st_event *e = st_emit(task, 24);
				if (e) {
					e->num[0] = a_oldfd;
					e->num[1] = a_newfd;
					e->num[2] = fam;
					bpf_ringbuf_submit(e, 0);
				}
			}
		}
	}
	return 0;
}

/* commit_creds: setuid-root-gain (module kprobes: loaded only where the node has it) */
SEC("kprobe/commit_creds")
int st_commit_creds(struct pt_regs *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct st_scratch *s = st_scratch();
	if (!s)
		return 0;
	if (!st_traced(task))
		return 0;

	/* setuid-root-gain (T1548.001): commit_creds raising euid to 0 (needs kprobes and BTF for struct cred) */
	{
		/* RAW (not table data): a task whose effective uid is not 0 commits credentials with euid 0 (a setuid-root exec, su or sudo raising privilege) */
		struct cred *new = (struct cred *)PT_REGS_PARM1(ctx);
		if ((BPF_CORE_READ(new, euid.val) == 0 && BPF_CORE_READ(task, cred, euid.val) != 0)) {
			struct st_event *e = st_emit(task, 25);
			if (e) {
				e->num[0] = BPF_CORE_READ(task, cred, euid.val);
				e->num[1] = BPF_CORE_READ(new, euid.val);
				bpf_ringbuf_submit(e, 0);
			}
		}
	}
	return 0;
}
