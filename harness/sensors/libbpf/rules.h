/* GENERATED from harness/sensors/bpftrace/rules.py by
 *   python -m harness.sensors.libbpf.generate
 * The loader's view of the rule table: index (the BPF programs' rule number) ->
 * name, technique, severity, module, fields ('i' int, 'l' long, 'u' uint, 's' str
 * and their slot in the event's num[] or str[]). */
#define ST_RULEPACK "3"
#define ST_NRULES 26
static const struct st_rule st_rules[ST_NRULES] = {
	{"ptrace-pid1", "T1055.008", "high", "", 2, {{"request", 'l', 0}, {"target", 'l', 1}}},
	{"ptrace-poke", "T1055.008", "high", "", 2, {{"request", 'l', 0}, {"target", 'l', 1}}},
	{"container-setns-mnt", "T1611", "high", "", 2, {{"fd", 'i', 0}, {"nstype", 'i', 1}}},
	{"container-setns-ns", "T1611", "high", "", 2, {{"fd", 'i', 0}, {"nstype", 'i', 1}}},
	{"container-mount-blockdev", "T1611", "high", "", 3, {{"path", 's', 0}, {"fstype", 's', 1}, {"target", 's', 2}}},
	{"container-cgroup-v1-mount", "T1611", "medium", "", 3, {{"path", 's', 0}, {"fstype", 's', 1}, {"target", 's', 2}}},
	{"release-agent-write", "T1611", "high", "", 2, {{"path", 's', 0}, {"flags", 'i', 0}}},
	{"core-pattern-write", "T1611", "high", "", 2, {{"path", 's', 0}, {"flags", 'i', 0}}},
	{"usermode-helper-exec", "T1611", "high", "", 1, {{"path", 's', 0}}},
	{"container-runtime-socket", "T1611", "high", "", 1, {{"path", 's', 0}}},
	{"process-vm-write", "T1055", "high", "", 1, {{"target", 'l', 0}}},
	{"proc-mem-write", "T1055.009", "high", "", 2, {{"path", 's', 0}, {"flags", 'i', 0}}},
	{"etc-file-create", "T1098", "medium", "", 1, {{"path", 's', 0}}},
	{"sudoers-write", "T1548.003", "high", "", 2, {{"path", 's', 0}, {"flags", 'i', 0}}},
	{"cron-write", "T1053.003", "high", "", 2, {{"path", 's', 0}, {"flags", 'i', 0}}},
	{"systemd-unit-write", "T1543.002", "high", "", 2, {{"path", 's', 0}, {"flags", 'i', 0}}},
	{"shell-profile-write", "T1546.004", "medium", "", 2, {{"path", 's', 0}, {"flags", 'i', 0}}},
	{"ld-preload-write", "T1574.006", "high", "", 2, {{"path", 's', 0}, {"flags", 'i', 0}}},
	{"shadow-read", "T1003.008", "high", "", 2, {{"path", 's', 0}, {"flags", 'i', 0}}},
	{"k8s-sa-token-read", "T1528", "high", "", 2, {{"path", 's', 0}, {"flags", 'i', 0}}},
	{"proc-environ-read", "T1057", "low", "", 2, {{"path", 's', 0}, {"flags", 'i', 0}}},
	{"fileless-exec-memfd", "T1620", "high", "", 2, {{"path", 's', 0}, {"filename", 's', 1}}},
	{"setuid-bit-set", "T1548.001", "high", "", 2, {{"path", 's', 0}, {"mode", 'i', 0}}},
	{"log-file-delete", "T1070.002", "medium", "", 1, {{"path", 's', 0}}},
	{"stdio-socket-redirect", "T1059.004", "high", "", 3, {{"oldfd", 'i', 0}, {"newfd", 'i', 1}, {"family", 'i', 2}}},
	{"setuid-root-gain", "T1548.001", "high", "kprobes", 2, {{"old_euid", 'u', 0}, {"new_euid", 'u', 1}}},
};
/* programs of optional modules (loaded only with --module NAME) */
#define ST_NOPTIONAL 1
static const struct st_program st_optional[ST_NOPTIONAL] = {
	{"st_commit_creds", "kprobes"},
};
