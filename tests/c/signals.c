/* signals [steps]
 *
 * Sets up signal state a restored process must still have: a SIGUSR1 handler installed
 * with SA_RESTART and its own sa_mask, SIGHUP ignored, SIGUSR2 and SIGRTMIN+3 blocked.
 * Then it runs `steps` steps of 20 ms (a checkpoint lands in between) and at the end
 * checks, through the kernel, that all of it is still in place, raises SIGUSR1 and
 * SIGUSR2 at itself and counts the deliveries, and checks that glibc's rseq area is
 * still registered with the kernel (re-registering the same area must fail with EBUSY).
 *
 * It also checks that [vdso] (and clock_gettime through it) and the program break are
 * where they were (`vdso in place clock=ok`, `brk continues`).
 * stdout: `signals ready`, `step K` every 10 steps, `rseq STATE` (registered, or
 * disabled when glibc did not register it, e.g. under glibc.pthread.rseq=0; lost or an
 * error otherwise) and `final ...` with every check's result.
 */
#include "common.h"

#include <signal.h>
#include <sys/rseq.h>
#include <sys/syscall.h>
#include <unistd.h>

static volatile sig_atomic_t usr1_count;
static volatile sig_atomic_t usr2_count;

static void on_usr1(int sig)
{
    (void)sig;
    usr1_count++;
}

static void on_usr2(int sig)
{
    (void)sig;
    usr2_count++;
}

static const char *rseq_state(void)
{
    if (__rseq_size == 0)
        return "disabled";
    void *area = (char *)__builtin_thread_pointer() + __rseq_offset;
    /* glibc before 2.40 registers 32 bytes while exporting the same size; later
     * versions export the 20-byte feature size: try what was exported, then 32. */
    unsigned int sizes[2] = { __rseq_size, 32 };
    for (int i = 0; i < 2; i++) {
        long r = syscall(SYS_rseq, area, sizes[i], 0, RSEQ_SIG);
        if (r == -1 && errno == EBUSY)
            return "registered";
        if (r == 0) {
            /* The kernel had none: registration was lost. Undo ours. */
            syscall(SYS_rseq, area, sizes[i], RSEQ_FLAG_UNREGISTER, RSEQ_SIG);
            return "lost";
        }
        if (!(r == -1 && errno == EINVAL))
            break;
    }
    static char msg[64];
    snprintf(msg, sizeof msg, "error errno=%d", errno);
    return msg;
}

/* Start address of [vdso] in /proc/self/maps (0 if none). */
static unsigned long vdso_start(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    unsigned long start = 0, end;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "[vdso]") && sscanf(line, "%lx-%lx", &start, &end) == 2)
            break;
    if (f)
        fclose(f);
    return start;
}

int main(int argc, char **argv)
{
    start_program();
    long steps = arg_long(argc, argv, 1, 100, 0, 1L << 30);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGTERM);
    sigaddset(&sa.sa_mask, SIGALRM);
    if (sigaction(SIGUSR1, &sa, NULL)) {
        perror("sigaction SIGUSR1");
        return 1;
    }
    sa.sa_handler = on_usr2;
    sa.sa_flags = 0;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR2, &sa, NULL)) {
        perror("sigaction SIGUSR2");
        return 1;
    }
    signal(SIGHUP, SIG_IGN);
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR2);
    sigaddset(&block, SIGRTMIN + 3);
    if (sigprocmask(SIG_BLOCK, &block, NULL)) {
        perror("sigprocmask");
        return 1;
    }
    raise(SIGUSR1); /* one delivery before the checkpoint */
    printf("signals ready steps=%ld usr1=%d\n", steps, (int)usr1_count);
    fflush(stdout);
    /* The restart must put [vdso] and the program break back where they were. */
    unsigned long vdso0 = vdso_start();
    char *brk0 = sbrk(0);

    for (long k = 1; k <= steps; k++) {
        sleep_ms(20);
        if (k % 10 == 0)
            printf("step %ld\n", k);
    }

    struct sigaction q;
    sigaction(SIGUSR1, NULL, &q);
    int handler_ok = q.sa_handler == on_usr1 && (q.sa_flags & SA_RESTART) &&
                     sigismember(&q.sa_mask, SIGTERM) == 1 && sigismember(&q.sa_mask, SIGALRM) == 1 &&
                     sigismember(&q.sa_mask, SIGINT) == 0;
    sigaction(SIGUSR2, NULL, &q);
    int usr2_handler_ok = q.sa_handler == on_usr2 && !(q.sa_flags & SA_RESTART);
    sigaction(SIGHUP, NULL, &q);
    int hup_ignored = q.sa_handler == SIG_IGN;

    sigset_t cur;
    sigprocmask(SIG_BLOCK, NULL, &cur);
    int mask_ok = sigismember(&cur, SIGUSR2) == 1 && sigismember(&cur, SIGRTMIN + 3) == 1 &&
                  sigismember(&cur, SIGUSR1) == 0 && sigismember(&cur, SIGTERM) == 0;

    raise(SIGUSR1);
    raise(SIGUSR1);
    int usr1 = (int)usr1_count;

    raise(SIGUSR2); /* blocked: stays pending until unblocked */
    sigset_t pending;
    sigpending(&pending);
    int usr2_pending = sigismember(&pending, SIGUSR2) == 1 && usr2_count == 0;
    sigset_t unblock;
    sigemptyset(&unblock);
    sigaddset(&unblock, SIGUSR2);
    sigprocmask(SIG_UNBLOCK, &unblock, NULL);
    int usr2 = (int)usr2_count;

    printf("rseq %s\n", rseq_state());
    struct timespec ts;
    int clock_ok = clock_gettime(CLOCK_MONOTONIC, &ts) == 0 && ts.tv_sec > 0; /* through the vDSO */
    printf("vdso %s clock=%s\n", vdso_start() == vdso0 ? "in place" : "MOVED", clock_ok ? "ok" : "BROKEN");
    char *brk1 = sbrk(0);
    char *grown = sbrk(8192);
    int brk_ok = brk1 == brk0 && grown == brk0 && (char *)sbrk(0) == brk0 + 8192;
    if (brk_ok)
        memset(grown, 1, 8192);
    printf("brk %s\n", brk_ok ? "continues" : "LOST");
    printf("final usr1_handler=%s usr2_handler=%s sighup=%s mask=%s usr1_delivered=%d "
           "usr2_pending=%s usr2_delivered=%d\n",
           handler_ok ? "ok" : "LOST", usr2_handler_ok ? "ok" : "LOST",
           hup_ignored ? "ignored" : "LOST", mask_ok ? "ok" : "LOST", usr1,
           usr2_pending ? "yes" : "NO", usr2);
    return 0;
}
