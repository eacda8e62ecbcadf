/*
 * The pause process of the test cluster's real node: the first process of every pod sandbox,
 * holding the pod's namespaces while its containers come and go. As PID 1 of the pod it reaps
 * orphaned children, and it exits when the runtime stops the sandbox (SIGTERM or SIGINT).
 * Built static by aliasop_dev.cluster.realnode (no registry here to pull registry.k8s.io/pause from).
 */
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) {
    (void)sig;
    _exit(0);
}

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(void) {
    struct sigaction on_stop = {.sa_handler = stop};
    struct sigaction on_child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
    sigemptyset(&on_stop.sa_mask);
    sigemptyset(&on_child.sa_mask);
    if (sigaction(SIGTERM, &on_stop, NULL) || sigaction(SIGINT, &on_stop, NULL) ||
        sigaction(SIGCHLD, &on_child, NULL)) {
        perror("pause: sigaction");
        return 1;
    }
    if (getpid() != 1) {
        fputs("pause: warning: not PID 1, so orphans are not reparented here\n", stderr);
    }
    for (;;) {
        pause();
    }
}
