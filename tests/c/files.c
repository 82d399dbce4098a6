/* files OUT IN [steps]
 *
 * Keeps two descriptors open for its whole life: OUT, created (truncated) for reading and
 * writing, and IN, an existing input file read sequentially. Every step reads the next
 * chunk of IN (wrapping at its end) and appends one line to OUT with write(2) at the
 * current offset, so both offsets must survive a checkpoint/restart for the output to be
 * right. At the end it reads OUT back from the start through the same descriptor.
 *
 * stdout: `files ready ...`, `step K out=OFF in=OFF` every 10 steps, and
 * `final written=N sum=H in=H` (N and H from what was read back).
 */
#include "common.h"

#include <fcntl.h>

static void write_full(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            perror("files: write");
            exit(1);
        }
        buf += n;
        len -= (size_t)n;
    }
}

/* Reads exactly len bytes of IN, starting over at its beginning when it ends. */
static void read_wrapping(int fd, unsigned char *buf, size_t len)
{
    int wrapped = 0;
    while (len > 0) {
        ssize_t n = read(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            perror("files: read");
            exit(1);
        }
        if (n == 0) {
            if (wrapped++) {
                fprintf(stderr, "files: input file is empty\n");
                exit(1);
            }
            lseek(fd, 0, SEEK_SET);
            continue;
        }
        buf += n;
        len -= (size_t)n;
    }
}

int main(int argc, char **argv)
{
    start_program();
    if (argc < 3) {
        fprintf(stderr, "usage: files OUT IN [steps]\n");
        return 2;
    }
    long steps = arg_long(argc, argv, 3, 150, 0, 1L << 30);
    int out = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (out < 0) {
        perror(argv[1]);
        return 1;
    }
    int in = open(argv[2], O_RDONLY);
    if (in < 0) {
        perror(argv[2]);
        return 1;
    }
    printf("files ready steps=%ld\n", steps);

    uint64_t in_hash = 7;
    for (long k = 1; k <= steps; k++) {
        unsigned char chunk[128];
        size_t len = 13 + (size_t)(k * 7) % 100;
        read_wrapping(in, chunk, len);
        in_hash = hash_bytes(in_hash, chunk, len);
        off_t off = lseek(out, 0, SEEK_CUR);
        char line[128];
        int n = snprintf(line, sizeof line, "%06ld off=%lld in=%016llx\n", k, (long long)off,
                         (unsigned long long)in_hash);
        write_full(out, line, (size_t)n);
        if (k % 10 == 0)
            printf("step %ld out=%lld in=%lld\n", k, (long long)lseek(out, 0, SEEK_CUR),
                   (long long)lseek(in, 0, SEEK_CUR));
        sleep_ms(20);
    }

    off_t total = lseek(out, 0, SEEK_CUR);
    lseek(out, 0, SEEK_SET);
    uint64_t h = 11;
    long long got = 0;
    for (;;) {
        unsigned char buf[4096];
        ssize_t n = read(out, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            perror("files: read back");
            return 1;
        }
        if (n == 0)
            break;
        h = hash_bytes(h, buf, (size_t)n);
        got += n;
    }
    if (got != (long long)total)
        printf("mismatch: offset was %lld but %lld bytes read back\n", (long long)total, got);
    printf("final written=%lld sum=%016llx in=%016llx\n", got, (unsigned long long)h,
           (unsigned long long)in_hash);
    return 0;
}
