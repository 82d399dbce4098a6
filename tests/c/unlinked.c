/* unlinked: files without a name across checkpoints (issue 11, item 2).
 *
 * A memfd (sealed against shrinking and growing) mapped MAP_SHARED, a tmpfile() (O_TMPFILE
 * in /tmp) and a file opened then unlinked (as gfortran does with STATUS='SCRATCH'), plus a
 * read-only second descriptor of that file. Each round: a record appended to both scratch
 * files, the memfd changed through the descriptor (pwrite) and through the mapping, each
 * side checked against the other (they share pages), the scratch files read back whole
 * and summed, the read-only descriptor's own offset moved. stdout: `unlinked ready`,
 * `round N: …`, `final …`.
 */
#define _GNU_SOURCE
#include "common.h"

#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>

#ifndef MEMFD_SIZE
#define MEMFD_SIZE (256 * 1024)
#endif

static uint64_t sum_file(int fd, off_t *size)
{
    struct stat st;
    fstat(fd, &st);
    *size = st.st_size;
    uint64_t sum = 0;
    unsigned char buf[4096];
    for (off_t at = 0; at < st.st_size;) {
        ssize_t n = pread(fd, buf, sizeof buf, at);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            sum = sum * 131 + buf[i];
        at += n;
    }
    return sum;
}

int main(int argc, char **argv)
{
    start_program();
    long rounds = arg_long(argc, argv, 1, 40, 1, 100000);
    long ms = arg_long(argc, argv, 2, 50, 0, 10000);

    int mfd = memfd_create("mana-test-memfd", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (mfd < 0 || ftruncate(mfd, MEMFD_SIZE) != 0)
        return 1;
    unsigned char *map = mmap(NULL, MEMFD_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (map == MAP_FAILED)
        return 1;
    for (int i = 0; i < MEMFD_SIZE; i++)
        map[i] = (unsigned char)(i * 7);
    fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);

    FILE *tmp = tmpfile();
    char path[64];
    snprintf(path, sizeof path, "/tmp/mana-unlinked-%d", (int)getpid());
    int scratch = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    int reader = open(path, O_RDONLY);
    if (!tmp || scratch < 0 || reader < 0)
        return 1;
    unlink(path);
    printf("unlinked ready\n");

    uint64_t total = 0;
    for (long r = 1; r <= rounds; r++) {
        char rec[100];
        int len = snprintf(rec, sizeof rec, "record %ld of the scratch file\n", r);
        if (write(scratch, rec, len) != len || fwrite(rec, 1, len, tmp) != (size_t)len)
            return 1;
        fflush(tmp);
        /* The memfd, changed through each side and seen through the other. */
        size_t at = (size_t)(r * 4093) % MEMFD_SIZE;
        unsigned char v = (unsigned char)(r * 13);
        pwrite(mfd, &v, 1, at);
        int agree = map[at] == v;
        map[(at + 1) % MEMFD_SIZE] = (unsigned char)(v + 1);
        unsigned char back = 0;
        pread(mfd, &back, 1, (at + 1) % MEMFD_SIZE);
        agree = agree && back == (unsigned char)(v + 1);
        int seals = fcntl(mfd, F_GET_SEALS);
        usleep(ms * 1000);
        off_t n1, n2, nm;
        uint64_t s1 = sum_file(scratch, &n1), s2 = sum_file(fileno(tmp), &n2), sm = sum_file(mfd, &nm);
        char c;
        ssize_t got = read(reader, &c, 1); /* its own offset walks the file */
        off_t pos = lseek(reader, 0, SEEK_CUR);
        total += s1 ^ s2 ^ sm;
        printf("round %ld: scratch %lld bytes sum %016llx, tmpfile %lld sum %016llx, memfd %lld sum %016llx "
               "shared %s, seals %d, reader at %lld (%zd)\n",
               r, (long long)n1, (unsigned long long)s1, (long long)n2, (unsigned long long)s2,
               (long long)nm, (unsigned long long)sm, agree ? "yes" : "NO", seals, (long long)pos, got);
    }
    printf("final %016llx\n", (unsigned long long)total);
    return 0;
}
