/* SPDX-License-Identifier: GPL-2.0 */
/* shadowtest compiled reference sensor: one ring-buffer record, shared by the BPF object
 * (sensor.bpf.c, prelude.bpf.h) and its loader (loader.c). Plain C types: vmlinux.h and
 * the loader's headers both define the __u* types. */
#ifndef ST_EVENT_H
#define ST_EVENT_H

#define ST_STR 256          /* bytes of one string field (a power of two: ST_MASK) */
#define ST_MASK (ST_STR - 1)
#define ST_NSTR 3           /* string fields of one event (MAX_STR in generate.py) */
#define ST_NNUM 3           /* integer fields of one event (MAX_INT in generate.py) */
#define ST_MARKER_BASE 0x5ad00000
#define ST_MARKER_LAST 0x5adfffff
#define ST_INIT_PIDNS 4026531836U  /* PROC_PID_INIT_INO: the initial pid namespace */
/* getpgid(ST_ANNOUNCE_BASE + scope): "follow my tree; its losses are scope's" (the stage
 * runner's ANNOUNCE_BASE; scope: 16 bits of its run id, 0 for no run) */
#define ST_ANNOUNCE_BASE 0x5b000000
#define ST_ANNOUNCE_LAST 0x5b00ffff

/* what the programs report (the loader's --filter; config map slot 0) */
enum st_filter { ST_FILTER_NONE = 0, ST_FILTER_RUNS = 1, ST_FILTER_RUNS_CONTAINERS = 2 };

enum st_kind { ST_KIND_MARKER = 1, ST_KIND_DETECTION = 2 };

struct st_event {
	unsigned long long ts_ns;     /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	unsigned long long cgroup;    /* cgroup v2 id of the task */
	unsigned int kind;            /* enum st_kind */
	unsigned int rule;            /* index in rules.h (detections); token (markers) */
	int pid, tid, ppid;           /* host ids: tgid, pid, parent's tgid */
	int ancestors[6];             /* grandparent, great-grandparent, ... (0 past init) */
	unsigned int pidns, mntns, uid, cpu;
	long long num[ST_NNUM];
	char comm[16];
	char str[ST_NSTR][ST_STR];
};

/* the loader's view of one rule (rules.h) */
struct st_field {
	const char *name;
	char type;                    /* 'i' int, 'l' long, 'u' uint, 's' str */
	unsigned char slot;           /* index in num[] or str[] */
};

struct st_rule {
	const char *name, *technique, *severity, *module;
	unsigned char nfields;
	struct st_field fields[ST_NSTR + ST_NNUM];
};

/* a BPF program of an optional module of the rule pack (rules.h's st_optional) */
struct st_program {
	const char *name, *module;
};

#endif
