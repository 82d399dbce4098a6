/* The gate between application threads and the lower half (mana_wrap.h explains the
 * token). The checkpointer closes it before it drains messages, and opens it when the
 * job resumes. A thread arriving at a closed gate parks outside the lower half (a futex
 * on the gate word), where stopping it for the image is safe. */
#include "mana_wrap.h"
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

volatile int mana_gate_closed;
int mana_gate_fenced;
__thread struct mana_gate_slot *mana_tls_gate __attribute__((tls_model("initial-exec"), visibility("hidden")));

/* Every thread's slot, linked at registration, never freed (a slot is a few bytes; an
 * exited thread's slot stays at 0). */
static struct mana_gate_slot *slots;
static pthread_once_t membarrier_once = PTHREAD_ONCE_INIT;

static void register_membarrier(void)
{
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) != 0)
        mana_gate_fenced = 1;
}

struct mana_gate_slot *mana_gate_register(void)
{
    pthread_once(&membarrier_once, register_membarrier);
    struct mana_gate_slot *g = mmap(NULL, sizeof *g, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g == MAP_FAILED) {
        fprintf(stderr, "mana: out of memory registering a thread at the MPI gate\n");
        abort();
    }
    struct mana_gate_slot *head = __atomic_load_n(&slots, __ATOMIC_ACQUIRE);
    do
        g->next = head;
    while (!__atomic_compare_exchange_n(&slots, &head, g, 1, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
    mana_tls_gate = g;
    return g;
}

void mana_gate_park(void)
{
    while (__atomic_load_n(&mana_gate_closed, __ATOMIC_ACQUIRE))
        syscall(SYS_futex, &mana_gate_closed, FUTEX_WAIT_PRIVATE, 1, NULL, NULL, 0);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* Closes the gate and waits (up to `timeout` seconds) until no other thread is inside
 * the lower half; the calling thread then holds the gate (its own calls pass) until
 * mana_gate_open. Returns 0, or -1 (gate open again) if some thread stayed. */
int mana_gate_close(double timeout)
{
    pthread_once(&membarrier_once, register_membarrier);
    __atomic_store_n(&mana_gate_closed, 1, __ATOMIC_SEQ_CST);
    if (!mana_gate_fenced)
        syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
    struct mana_gate_slot *own = mana_tls_gate ? mana_tls_gate : mana_gate_register();
    double deadline = now() + timeout;
    for (struct mana_gate_slot *g = __atomic_load_n(&slots, __ATOMIC_ACQUIRE); g; g = g->next) {
        if (g == own)
            continue;
        while (__atomic_load_n(&g->in, __ATOMIC_ACQUIRE)) {
            if (now() > deadline) {
                mana_gate_open();
                return -1;
            }
            sched_yield();
        }
    }
    /* The closing thread holds the gate from now on: its own calls pass. */
    own->in++;
    return 0;
}

void mana_gate_open(void)
{
    struct mana_gate_slot *own = mana_tls_gate;
    if (own && own->in > 0 && mana_gate_closed)
        own->in--;
    __atomic_store_n(&mana_gate_closed, 0, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, &mana_gate_closed, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0);
}

void mana_gate_each(void (*f)(struct mana_gate_slot *g, void *arg), void *arg)
{
    for (struct mana_gate_slot *g = __atomic_load_n(&slots, __ATOMIC_ACQUIRE); g; g = g->next)
        f(g, arg);
}
