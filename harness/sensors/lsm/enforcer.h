/* The record the BPF programs (enforcer.bpf.c) write to the ring buffer and the loader
 * (enforcer.c) reads: one definition for both sides, so they cannot drift apart.
 * Include it after the kernel's fixed-width types: vmlinux.h in the BPF object,
 * <linux/types.h> in the loader. */
#ifndef SHADOWTEST_ENFORCER_H
#define SHADOWTEST_ENFORCER_H

#define NAME_LEN 64
#define ANCESTORS 6

struct event {
	__u32 type;
	__u32 cpu;
	__u64 ts_ns;
	__u32 pid, tid, ppid, uid;
	__u32 ancestors[ANCESTORS];
	__u64 cgroup;
	__u32 pidns, mntns;
	__u32 target, target_vpid, mode, token;
	char comm[16];
	char name[NAME_LEN];
};

#endif
