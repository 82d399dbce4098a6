/* timed_calls [N]: the cost of the runtime's timed-wait wrappers (issue 11, item 4) on
 * their fast path — N calls each of poll(NULL, 0, 0) and epoll_wait(ep, ev, 1, 0), then
 * 1,000 nanosleep({0, 0}) (each sleeps the 50 us timer slack) and 200 poll(NULL, 0, 1)
 * — for `farm-bench` to time
 * natively and under mana_launch (docs/benchmarks.md, "Timed waits").
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    int ep = epoll_create1(0);
    struct epoll_event ev;
    struct timespec zero = { 0, 0 };
    long sum = 0;
    for (long i = 0; i < n; i++) {
        sum += poll(NULL, 0, 0);
        sum += epoll_wait(ep, &ev, 1, 0);
    }
    for (int i = 0; i < 1000; i++)
        sum += nanosleep(&zero, NULL);
    for (int i = 0; i < 200; i++)
        sum += poll(NULL, 0, 1);
    printf("%ld\n", sum);
    return 0;
}
