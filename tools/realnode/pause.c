/*
 * The Pod sandbox's process: holds the Pod's namespaces and does nothing else.
 * As PID 1 of a Pod that shares its process namespace, it reaps orphans; it
 * exits at once on SIGTERM or SIGINT, as the runtime expects when it stops a
 * sandbox. Built static (gcc -static), so that the image is this file alone.
 */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void leave(int signo) {
	(void)signo;
	_exit(0);
}

static void reap(int signo) {
	(void)signo;
	while (waitpid(-1, NULL, WNOHANG) > 0) {
	}
}

int main(void) {
	struct sigaction on_stop = {.sa_handler = leave};
	struct sigaction on_child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
	if (getpid() != 1) {
		/* hostPID Pods: nothing to reap for, but the namespaces are still held. */
		static const char warning[] = "pause: not PID 1; orphans are reaped by the host's init\n";
		(void)!write(2, warning, sizeof warning - 1);
	}
	if (sigaction(SIGINT, &on_stop, NULL) < 0 || sigaction(SIGTERM, &on_stop, NULL) < 0 ||
	    sigaction(SIGCHLD, &on_child, NULL) < 0) {
		return 2;
	}
	for (;;) {
		pause();
	}
}
