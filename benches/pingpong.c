/* The off-CPU benchmark's workload: two threads pass a byte back and forth through two pipes,
 * so that each blocks once per round trip (two context switches a round trip).
 *
 *   pingpong RATE SECONDS
 *
 * RATE is the context switches a second to aim at (0: as many as it can). Rate-limited, the
 * ping thread does the round trips due so far, then sleeps to the next 1 ms tick (1,000 more
 * switches a second, counted in the aim), so that a profiler's cost shows in the CPU each
 * round trip takes, or as a rate falling short. A third thread prints, every 100 ms until
 * SECONDS pass, one JSON line of running totals:
 *   {"t": CLOCK_MONOTONIC s, "round_trips": n, "switches": n, "voluntary": n, "cpu_s": s}
 * switches and cpu_s are the whole process's (getrusage RUSAGE_SELF: voluntary + involuntary
 * context switches, user + system time), so a reader takes differences between two lines. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define TICK_NS 1000000L

static int ping_pipe[2], pong_pipe[2];
static double rate;     /* round trips a second; 0 = unlimited */
static long round_trips; /* read by the reporter: __atomic */
static volatile int stop;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) static void round_trip(void) {
    char byte = 'x';
    if (write(ping_pipe[1], &byte, 1) != 1 || read(pong_pipe[0], &byte, 1) != 1) abort();
}

static void *pong(void *unused) {
    (void)unused;
    char byte;
    while (read(ping_pipe[0], &byte, 1) == 1)
        if (write(pong_pipe[1], &byte, 1) != 1) abort();
    return NULL;
}

static void *ping(void *unused) {
    (void)unused;
    struct timespec tick;
    clock_gettime(CLOCK_MONOTONIC, &tick);
    double start = now_s();
    long done = 0;
    while (!stop) {
        long due = rate > 0 ? (long)((now_s() - start) * rate) : done + 1000;
        /* After a stall (preempted, profiler starting), catch up by at most 10 ms of work. */
        if (rate > 0 && due - done > rate / 100) done = due - (long)(rate / 100);
        for (; done < due; done++) {
            round_trip();
            __atomic_store_n(&round_trips, __atomic_load_n(&round_trips, __ATOMIC_RELAXED) + 1,
                             __ATOMIC_RELAXED);
        }
        if (rate > 0) {
            tick.tv_nsec += TICK_NS;
            if (tick.tv_nsec >= 1000000000L) tick.tv_sec++, tick.tv_nsec -= 1000000000L;
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &tick, NULL);
        }
    }
    close(ping_pipe[1]); /* pong sees EOF */
    return NULL;
}

static void report(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"t\": %.6f, \"round_trips\": %ld, \"switches\": %ld, \"voluntary\": %ld, "
           "\"cpu_s\": %.6f}\n",
           now_s(), __atomic_load_n(&round_trips, __ATOMIC_RELAXED), ru.ru_nvcsw + ru.ru_nivcsw,
           ru.ru_nvcsw,
           ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
               ru.ru_stime.tv_usec / 1e6);
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: pingpong RATE SECONDS\n");
        return 2;
    }
    double switches = atof(argv[1]), seconds = atof(argv[2]);
    /* Two switches a round trip; the ping thread's sleeps are 1,000 more a second. */
    rate = switches > 0 ? (switches - 1e9 / TICK_NS > 0 ? (switches - 1e9 / TICK_NS) / 2 : 1) : 0;
    if (pipe(ping_pipe) || pipe(pong_pipe)) return 1;
    pthread_t a, b;
    pthread_create(&b, NULL, pong, NULL);
    pthread_create(&a, NULL, ping, NULL);
    double end = now_s() + seconds;
    struct timespec interval = {0, 100000000L};
    report();
    while (now_s() < end) {
        nanosleep(&interval, NULL);
        report();
    }
    stop = 1;
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    return 0;
}
