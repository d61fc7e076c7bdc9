/* The benchmark workload: fixed CPU work on N threads (both cores busy), built with frame
 * pointers so that every profiler sees the same stacks.
 *
 *   workload ROUNDS THREADS
 *
 * Each thread runs ROUNDS rounds of main -> worker -> compute -> {mix_a, mix_b}. Fixed work,
 * not fixed time, so that a profiler's cost shows as a longer run. */
#include <pthread.h>
#include <stdlib.h>

static long rounds;
volatile unsigned long sink;

__attribute__((noinline)) unsigned long mix_a(unsigned long x) {
    for (int i = 0; i < 3000; i++) x = x * 6364136223846793005UL + 1442695040888963407UL;
    return x;
}

__attribute__((noinline)) unsigned long mix_b(unsigned long x) {
    for (int i = 0; i < 1000; i++) x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return x;
}

__attribute__((noinline)) unsigned long compute(unsigned long x) { return mix_b(mix_a(x)); }

__attribute__((noinline)) void *worker(void *arg) {
    unsigned long x = (unsigned long)arg + 1;
    for (long r = 0; r < rounds; r++) x = compute(x);
    sink += x;
    return NULL;
}

int main(int argc, char **argv) {
    rounds = argc > 1 ? atol(argv[1]) : 100000;
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    pthread_t ids[64];
    if (threads < 1) threads = 1;
    if (threads > 64) threads = 64;
    for (int i = 1; i < threads; i++) pthread_create(&ids[i], NULL, worker, (void *)(long)i);
    worker(NULL);
    for (int i = 1; i < threads; i++) pthread_join(ids[i], NULL);
    return 0;
}
