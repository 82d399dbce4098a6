/* odd_memory steps [sleep_ms]
 *
 * Memory layouts a legitimate process has that a header validator must not refuse:
 *   - a JIT: an RWX mapping holding machine code it rewrites and calls every step;
 *   - a PROT_NONE reservation (64 MiB) with a few pages inside made read-write and used,
 *     as a managed runtime's heap does;
 *   - a guard page (PROT_NONE) between two used read-write pages;
 *   - threads whose stacks are not where threads usually run: one on a stack in the bss,
 *     one on a stack in the brk heap (malloc), each stopped at the checkpoint while
 *     running on it (stack pointer in an ordinary writable region).
 *
 * stdout: `odd_memory ready`, `step K h=H` every 10 steps, `final h=H`.
 */
#include "common.h"
#include <pthread.h>
#include <sys/mman.h>

#define STACK_BYTES (256 * 1024)

static unsigned char bss_stack[STACK_BYTES] __attribute__((aligned(4096)));
static volatile uint64_t worker_sum[2];
static volatile int stop;

static void *worker(void *arg)
{
    long id = (long)arg;
    uint64_t frame[64];
    uint64_t x = (uint64_t)id + 1;
    for (int i = 0; i < 64; i++)
        frame[i] = x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    while (!stop) {
        for (int i = 0; i < 64; i++)
            frame[i] = mix64(frame[i], frame[(i + 1) % 64]);
        worker_sum[id] = hash_words(0, frame, 64);
        sleep_ms(1);
    }
    return NULL;
}

/* mov eax, imm32 ; ret */
static void jit_emit(unsigned char *code, uint32_t imm)
{
    code[0] = 0xb8;
    memcpy(code + 1, &imm, 4);
    code[5] = 0xc3;
}

int main(int argc, char **argv)
{
    start_program();
    long steps = arg_long(argc, argv, 1, 100, 1, 1000000);
    long sleep = arg_long(argc, argv, 2, 20, 0, 10000);

    unsigned char *jit = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    size_t reserve = 64u << 20;
    unsigned char *heap = mmap(NULL, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                               -1, 0);
    unsigned char *guarded = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (jit == MAP_FAILED || heap == MAP_FAILED || guarded == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    /* Pages 100..103 of the reservation in use. */
    uint64_t *used = (uint64_t *)(heap + 100 * 4096);
    if (mprotect(used, 4 * 4096, PROT_READ | PROT_WRITE) || mprotect(guarded + 4096, 4096, PROT_NONE)) {
        perror("mprotect");
        return 1;
    }
    uint64_t *below = (uint64_t *)guarded, *above = (uint64_t *)(guarded + 2 * 4096);

    pthread_t t[2];
    pthread_attr_t a;
    void *heap_stack = NULL;
    if (posix_memalign(&heap_stack, 4096, STACK_BYTES)) {
        perror("posix_memalign");
        return 1;
    }
    void *stacks[2] = { bss_stack, heap_stack };
    for (long i = 0; i < 2; i++) {
        pthread_attr_init(&a);
        pthread_attr_setstack(&a, stacks[i], STACK_BYTES);
        if (pthread_create(&t[i], &a, worker, (void *)i)) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
        pthread_attr_destroy(&a);
    }

    uint64_t h = 0x0dd;
    uint64_t rng = 0x9e3779b97f4a7c15ULL;
    printf("odd_memory ready\n");
    for (long k = 1; k <= steps; k++) {
        uint32_t imm = (uint32_t)xorshift64(&rng);
        jit_emit(jit, imm);
        __builtin___clear_cache((char *)jit, (char *)jit + 6);
        uint32_t got = ((uint32_t(*)(void))jit)();
        if (got != imm) {
            printf("jit returned %08x, wrote %08x\n", got, imm);
            return 1;
        }
        used[k % 2048] = mix64(used[(k + 7) % 2048], got);
        below[k % 512] = mix64(below[k % 512], used[k % 2048]);
        above[k % 512] = mix64(above[k % 512], below[k % 512]);
        h = mix64(h, above[k % 512]);
        if (k % 10 == 0)
            printf("step %ld h=%016llx\n", k, (unsigned long long)h);
        sleep_ms(sleep);
    }
    stop = 1;
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    h = hash_words(h, used, 2048);
    h = hash_words(h, below, 512);
    h = hash_words(h, above, 512);
    printf("final h=%016llx\n", (unsigned long long)h);
    return 0;
}
