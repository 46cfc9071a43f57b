/* syscall-probe: tries the syscalls docker's default seccomp profile refuses and prints
 * one "NAME ERRNO" line each (0: it worked). Built static by scripts/build-probes.sh
 * for tests/seccomp.rs, so it runs in any container rootfs. Everything it creates dies with
 * it: the key goes to its own process keyring, the user namespace and clone3 child are its
 * own. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define KEY_SPEC_PROCESS_KEYRING -2
#define KEYCTL_GET_KEYRING_ID 0

static void report(const char *name, long ret) {
    printf("%s %d\n", name, ret < 0 ? errno : 0);
}

int main(void) {
    long r = syscall(SYS_add_key, "user", "wharf-probe", "x", 1, KEY_SPEC_PROCESS_KEYRING);
    report("add_key", r);
    r = syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_PROCESS_KEYRING, 1);
    report("keyctl", r);
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.exit_signal = SIGCHLD;
    r = syscall(SYS_clone3, &args, sizeof args);
    if (r == 0)
        _exit(0);
    if (r > 0)
        waitpid((pid_t)r, NULL, 0);
    report("clone3", r);
    r = mount("none", "/tmp", "tmpfs", 0, NULL);
    report("mount", r);
    r = unshare(CLONE_NEWUSER);
    report("unshare", r);
    return 0;
}
