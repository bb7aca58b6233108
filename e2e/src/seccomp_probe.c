/*
 * Seccomp probe: tells, for each syscall in its table, whether the
 * container's seccomp filter lets it through to the kernel, without ever
 * running it.
 *
 * It stacks a filter of its own under the container's: every probed
 * syscall is turned into a user notification, which a supervisor thread
 * answers with a distinctive errno (ENOTRECOVERABLE). Seccomp runs all
 * filters and the strictest action wins, so a syscall the container's
 * filter answers with ERRNO never reaches ours, and one it allows reaches
 * ours and stops there. So the syscall's errno says where it ended:
 * ENOTRECOVERABLE = passed the container's filter ("reached"), anything
 * else = answered by it. Nothing probed has any effect, so the probe can
 * ask for mount, reboot or kexec safely.
 *
 * Output, one line per probe: "<name> reached" or "<name> blocked
 * <errno>". Built with gcc -static by the e2e fixture.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/audit.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_clone3
#define SYS_clone3 435
#endif

struct probe {
	const char *name;
	long nr;
	unsigned long arg0;
};

static const struct probe probes[] = {
	{"clone_thread", SYS_clone, CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD},
	{"clone_process", SYS_clone, SIGCHLD},
	{"clone_newuser", SYS_clone, CLONE_NEWUSER | SIGCHLD},
	{"clone_newns", SYS_clone, CLONE_NEWNS | SIGCHLD},
	{"clone_newnet", SYS_clone, CLONE_NEWNET | SIGCHLD},
	{"clone_newpid", SYS_clone, CLONE_NEWPID | SIGCHLD},
	{"clone3", SYS_clone3, 0},
	{"unshare", SYS_unshare, CLONE_NEWUSER},
	{"setns", SYS_setns, 0},
	{"mount", SYS_mount, 0},
	{"umount2", SYS_umount2, 0},
	{"pivot_root", SYS_pivot_root, 0},
	{"open_tree", 428, 0},
	{"move_mount", 429, 0},
	{"fsopen", 430, 0},
	{"fsconfig", 431, 0},
	{"fsmount", 432, 0},
	{"fspick", 433, 0},
	{"mount_setattr", 442, 0},
	{"add_key", SYS_add_key, 0},
	{"request_key", SYS_request_key, 0},
	{"keyctl", SYS_keyctl, 0},
	{"bpf", SYS_bpf, 0},
	{"perf_event_open", SYS_perf_event_open, 0},
	{"userfaultfd", SYS_userfaultfd, 0},
	{"pidfd_getfd", 438, 0},
	{"process_vm_readv", SYS_process_vm_readv, 0},
	{"process_vm_writev", SYS_process_vm_writev, 0},
	{"kcmp", SYS_kcmp, 0},
	{"ptrace", SYS_ptrace, 0},
	{"personality_query", SYS_personality, 0xffffffffUL},
	{"personality_linux", SYS_personality, 0},
	{"personality_linux32", SYS_personality, 8},
	{"personality_read_implies_exec", SYS_personality, 0x0400000},
	{"personality_addr_no_randomize", SYS_personality, 0x0040000},
	{"reboot", SYS_reboot, 0},
	{"init_module", SYS_init_module, 0},
	{"finit_module", SYS_finit_module, 0},
	{"delete_module", SYS_delete_module, 0},
	{"kexec_load", SYS_kexec_load, 0},
	{"kexec_file_load", SYS_kexec_file_load, 0},
	{"swapon", SYS_swapon, 0},
	{"swapoff", SYS_swapoff, 0},
	{"acct", SYS_acct, 0},
	{"settimeofday", SYS_settimeofday, 0},
	{"clock_settime", SYS_clock_settime, 0},
	{"clock_adjtime", SYS_clock_adjtime, 0},
	{"adjtimex", SYS_adjtimex, 0},
	{"iopl", SYS_iopl, 0},
	{"ioperm", SYS_ioperm, 0},
	{"open_by_handle_at", SYS_open_by_handle_at, 0},
	{"name_to_handle_at", SYS_name_to_handle_at, 0},
	{"quotactl", SYS_quotactl, 0},
	{"syslog", SYS_syslog, 0},
	{"sethostname", SYS_sethostname, 0},
	{"setdomainname", SYS_setdomainname, 0},
	{"lookup_dcookie", SYS_lookup_dcookie, 0},
	{"fanotify_init", SYS_fanotify_init, 0},
	{"io_uring_setup", 425, 0},
	{"modify_ldt", SYS_modify_ldt, 0},
	{"uselib", SYS_uselib, 0},
	{"ustat", SYS_ustat, 0},
	{"sysfs", SYS_sysfs, 0},
	{"vhangup", SYS_vhangup, 0},
	{"mbind", SYS_mbind, 0},
	{"set_mempolicy", SYS_set_mempolicy, 0},
	{"get_mempolicy", SYS_get_mempolicy, 0},
	{"move_pages", SYS_move_pages, 0},
	{"migrate_pages", SYS_migrate_pages, 0},
	{"chroot", SYS_chroot, 0},
	{"socket_inet", SYS_socket, AF_INET},
	{"socket_vsock", SYS_socket, 40},
	{"mknodat", SYS_mknodat, 0},
	{"getppid", SYS_getppid, 0},
	{"uname", SYS_uname, 0},
	{"memfd_create", SYS_memfd_create, 0},
	{"landlock_create_ruleset", 444, 0},
	{"pidfd_open", SYS_pidfd_open, 0},
	{"setuid", SYS_setuid, 0},
	{"capset", SYS_capset, 0},
	{"prctl", SYS_prctl, 0},
	{"getcwd", SYS_getcwd, 0},
};

#define NPROBES (sizeof(probes) / sizeof(probes[0]))
#define REACHED ENOTRECOVERABLE

static int listener = -1;
static int ready[2];

static void *supervise(void *unused)
{
	(void)unused;
	if (read(ready[0], &listener, sizeof(listener)) != sizeof(listener))
		return NULL;
	for (;;) {
		struct seccomp_notif req;
		struct seccomp_notif_resp resp;
		memset(&req, 0, sizeof(req));
		if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &req) < 0) {
			if (errno == EINTR)
				continue;
			return NULL;
		}
		memset(&resp, 0, sizeof(resp));
		resp.id = req.id;
		resp.error = -REACHED;
		ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &resp);
	}
}

int main(void)
{
	/* The filter: probed syscall numbers notify, everything else (and
	 * any other ABI) passes. Two instructions per probe. */
	struct sock_filter f[4 + 2 * NPROBES + 1];
	size_t n = 0;
	f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
	f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
	f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
	for (size_t i = 0; i < NPROBES; i++) {
		f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, probes[i].nr, 0, 1);
		f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF);
	}
	f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	struct sock_fprog prog = {.len = (unsigned short)n, .filter = f};

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (pipe(ready) < 0) {
		perror("probe: pipe");
		return 2;
	}
	/* The supervisor exists before the filter, which then binds only
	 * this thread: the supervisor's own calls are never held. */
	pthread_t t;
	if (pthread_create(&t, NULL, supervise, NULL) != 0) {
		fprintf(stderr, "probe: pthread_create failed\n");
		return 2;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		perror("probe: no_new_privs");
		return 2;
	}
	int fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
	if (fd < 0) {
		perror("probe: seccomp");
		return 2;
	}
	if (write(ready[1], &fd, sizeof(fd)) != sizeof(fd)) {
		perror("probe: handing over the listener");
		return 2;
	}
	for (size_t i = 0; i < NPROBES; i++) {
		errno = 0;
		long r = syscall(probes[i].nr, probes[i].arg0, 0, 0, 0, 0, 0);
		int e = errno;
		if (r == -1 && e == REACHED)
			printf("%s reached\n", probes[i].name);
		else if (r == -1)
			printf("%s blocked %d\n", probes[i].name, e);
		else
			printf("%s unexpected-success %ld\n", probes[i].name, r);
	}
	printf("probe done\n");
	fflush(stdout);
	_exit(0);
}
