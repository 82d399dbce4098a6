/* bigmem MiB [steps] [sleep_ms]
 *
 * A single-threaded program whose state lives everywhere a checkpoint must capture it:
 *   - MiB mebibytes of incompressible heap (one large malloc, i.e. an anonymous mmap),
 *     filled with xorshift output from a fixed seed;
 *   - a brk heap: a linked list of small nodes plus a ring of live buffers that are freed
 *     and reallocated every step (malloc's own state must survive too);
 *   - 1 MiB of bss and some initialised data;
 *   - stack frames: an array in main and one in each of LEVELS recursion levels; the step
 *     loop runs at the deepest level and each frame folds its array into the result on
 *     the way back up (return addresses and frame contents must survive).
 * Each step mutates all of them deterministically and sleeps sleep_ms (default 20), so a
 * checkpoint can land at any instant.
 *
 * stdout: `bigmem ready ...` once the heap is filled, `step K sum=H` every 10 steps (H
 * chains every step's result), `final ...` with a hash over all the state at the end.
 */
#include "common.h"

#define BSS_WORDS (1u << 17) /* 1 MiB */
#define LEVELS 8
#define FRAME_WORDS 512
#define LIST_NODES 2000
#define RING 8

struct node {
    struct node *next;
    uint64_t value[5];
};

struct state {
    uint64_t *heap;
    size_t heap_words;
    uint64_t *frames[LEVELS];
    uint64_t *main_frame;
    struct node *list;
    unsigned char *ring[RING];
    size_t ring_len[RING];
    long steps;
    long sleep;
};

static uint64_t bss[BSS_WORDS];
static uint64_t rng = 0x2545f4914f6cdd1dULL; /* initialised data */
static uint64_t chain = 0x1234;

static uint64_t run_steps(struct state *s)
{
    for (long k = 1; k <= s->steps; k++) {
        uint64_t sum = (uint64_t)k;
        /* heap: 256 words spread over the whole allocation */
        for (int i = 0; i < 256; i++) {
            size_t idx = xorshift64(&rng) % s->heap_words;
            s->heap[idx] ^= xorshift64(&rng);
            sum = mix64(sum, s->heap[idx]);
        }
        /* bss */
        for (int i = 0; i < 64; i++) {
            size_t idx = xorshift64(&rng) % BSS_WORDS;
            bss[idx] += xorshift64(&rng) | 1;
            sum = mix64(sum, bss[idx]);
        }
        /* every stack frame, main's included */
        for (int l = 0; l < LEVELS; l++) {
            size_t idx = xorshift64(&rng) % FRAME_WORDS;
            s->frames[l][idx] = mix64(s->frames[l][idx], sum);
        }
        s->main_frame[k % FRAME_WORDS] ^= sum;
        /* brk heap: walk and change the list, replace one ring buffer */
        struct node *n = s->list;
        for (size_t skip = xorshift64(&rng) % 64; skip > 0 && n->next; skip--)
            n = n->next;
        n->value[k % 5] += sum;
        int r = (int)(k % RING);
        free(s->ring[r]);
        s->ring_len[r] = 1 + xorshift64(&rng) % 60000;
        s->ring[r] = malloc(s->ring_len[r]);
        if (!s->ring[r]) {
            perror("malloc");
            exit(1);
        }
        memset(s->ring[r], (int)(sum & 0xff), s->ring_len[r]);
        sum = mix64(sum, s->ring_len[r]);

        chain = mix64(chain, sum);
        if (k % 10 == 0)
            printf("step %ld sum=%016llx\n", k, (unsigned long long)chain);
        sleep_ms(s->sleep);
    }
    return chain;
}

/* Each level keeps an array on its own stack frame until the steps are done. */
static uint64_t descend(struct state *s, int level)
{
    uint64_t frame[FRAME_WORDS];
    uint64_t seed = 0x9e3779b97f4a7c15ULL * (uint64_t)(level + 1);
    for (int i = 0; i < FRAME_WORDS; i++)
        frame[i] = xorshift64(&seed);
    s->frames[level] = frame;
    uint64_t r = level + 1 < LEVELS ? descend(s, level + 1) : run_steps(s);
    s->frames[level] = NULL;
    return hash_words(mix64(r, (uint64_t)level), frame, FRAME_WORDS);
}

int main(int argc, char **argv)
{
    start_program();
    long mib = arg_long(argc, argv, 1, 256, 1, 1 << 20);
    struct state s = { 0 };
    s.steps = arg_long(argc, argv, 2, 200, 0, 1L << 30);
    s.sleep = arg_long(argc, argv, 3, 20, 0, 10000);

    uint64_t main_frame[FRAME_WORDS];
    for (int i = 0; i < FRAME_WORDS; i++)
        main_frame[i] = (uint64_t)i * 0x100000001b3ULL;
    s.main_frame = main_frame;

    s.heap_words = (size_t)mib << 17;
    s.heap = malloc(s.heap_words * sizeof(uint64_t));
    if (!s.heap) {
        fprintf(stderr, "bigmem: cannot allocate %ld MiB\n", mib);
        return 1;
    }
    uint64_t fill = 0x853c49e6748fea9bULL;
    for (size_t i = 0; i < s.heap_words; i++)
        s.heap[i] = xorshift64(&fill);
    for (size_t i = 0; i < BSS_WORDS; i++)
        bss[i] = i;
    for (int i = 0; i < LIST_NODES; i++) {
        struct node *n = calloc(1, sizeof *n);
        if (!n) {
            perror("calloc");
            return 1;
        }
        n->value[0] = (uint64_t)i;
        n->next = s.list;
        s.list = n;
    }
    printf("bigmem ready mib=%ld steps=%ld\n", mib, s.steps);

    uint64_t h = descend(&s, 0);

    h = hash_words(h, s.heap, s.heap_words);
    h = hash_words(h, bss, BSS_WORDS);
    h = hash_words(h, main_frame, FRAME_WORDS);
    for (struct node *n = s.list; n; n = n->next)
        h = hash_words(h, n->value, 5);
    for (int r = 0; r < RING; r++)
        if (s.ring[r])
            h = hash_bytes(mix64(h, s.ring_len[r]), s.ring[r], s.ring_len[r] < 64 ? s.ring_len[r] : 64);
    printf("final mib=%ld steps=%ld state=%016llx\n", mib, s.steps, (unsigned long long)h);
    return 0;
}
