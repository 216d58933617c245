// vmpod-memcheck: write a deterministic pattern over N MiB of anonymous
// memory, optionally wait for a file to appear (e.g. while the host migrates
// or restores the VM), then read every byte back and verify it.
//
// usage: vmpod-memcheck --size-mib N --seed S [--wait-file PATH] [--rounds R]
//
// The pattern of 64-bit word i (bytes 8i..8i+7, little endian) in round r is
// splitmix64(seed_r + (i + 1) * 0x9E3779B97F4A7C15) with
// seed_r = S + r * 0xD1B54A32D192ED03 (so round 0 uses the seed itself).
// The checksum is FNV-1a-64 over the words (word-wise, not byte-wise):
// h = 0xcbf29ce484222325; for each word: h = (h ^ w) * 0x100000001b3.
//
// Output (stdout, flushed per line):
//   MEMCHECK written size_mib=N checksum=<16 hex digits>
//   MEMCHECK verified ok checksum=<16 hex digits>
//   MEMCHECK verify FAILED at offset X expected=0x.. got=0x..
// With --rounds R > 1 every line gets a " round=r" suffix (r from 1) and a
// final "MEMCHECK done rounds=R" line is printed.
// Exit status: 0 ok, 1 verify failed, 2 usage or allocation error.
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define GOLDEN 0x9E3779B97F4A7C15ULL
#define ROUND_STEP 0xD1B54A32D192ED03ULL
#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

static void usage(void) {
  fprintf(stderr,
          "usage: vmpod-memcheck --size-mib N --seed S [--wait-file PATH] "
          "[--rounds R]\n");
  exit(2);
}

static uint64_t parse_u64(const char *s, const char *what) {
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 0);
  if (errno != 0 || end == s || *end != '\0' || s[0] == '-') {
    fprintf(stderr, "vmpod-memcheck: bad %s: %s\n", what, s);
    usage();
  }
  return (uint64_t)v;
}

static void wait_for_file(const char *path) {
  struct stat st;
  const struct timespec ts = {0, 50 * 1000 * 1000};
  while (stat(path, &st) != 0) nanosleep(&ts, NULL);
}

static void suffix(char *buf, size_t n, uint64_t rounds, uint64_t r) {
  if (rounds > 1)
    snprintf(buf, n, " round=%" PRIu64, r + 1);
  else
    buf[0] = '\0';
}

int main(int argc, char **argv) {
  uint64_t size_mib = 0, seed = 0, rounds = 1;
  int have_size = 0, have_seed = 0;
  const char *wait_file = NULL;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) usage();
    if (i + 1 >= argc) usage();
    if (strcmp(a, "--size-mib") == 0) {
      size_mib = parse_u64(argv[++i], "size");
      have_size = 1;
    } else if (strcmp(a, "--seed") == 0) {
      seed = parse_u64(argv[++i], "seed");
      have_seed = 1;
    } else if (strcmp(a, "--wait-file") == 0) {
      wait_file = argv[++i];
    } else if (strcmp(a, "--rounds") == 0) {
      rounds = parse_u64(argv[++i], "rounds");
    } else {
      usage();
    }
  }
  if (!have_size || !have_seed || size_mib == 0 || rounds == 0 ||
      size_mib > (1ULL << 24))
    usage();

  const size_t bytes = (size_t)size_mib << 20;
  const size_t words = bytes / 8;
  uint64_t *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    printf("MEMCHECK mmap of %" PRIu64 " MiB failed: %s\n", size_mib,
           strerror(errno));
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);

  for (uint64_t r = 0; r < rounds; r++) {
    char sfx[32];
    suffix(sfx, sizeof sfx, rounds, r);
    const uint64_t base = seed + r * ROUND_STEP;

    uint64_t h = FNV_OFFSET;
    uint64_t x = base;
    for (size_t i = 0; i < words; i++) {
      x += GOLDEN;
      const uint64_t w = mix64(x);
      mem[i] = w;
      h = (h ^ w) * FNV_PRIME;
    }
    printf("MEMCHECK written size_mib=%" PRIu64 " checksum=%016" PRIx64 "%s\n",
           size_mib, h, sfx);
    fflush(stdout);

    if (wait_file) wait_for_file(wait_file);

    const volatile uint64_t *vm = mem;
    uint64_t hv = FNV_OFFSET;
    x = base;
    for (size_t i = 0; i < words; i++) {
      x += GOLDEN;
      const uint64_t want = mix64(x);
      const uint64_t got = vm[i];
      if (got != want) {
        // Find the first differing byte inside the word.
        size_t off = i * 8;
        for (int b = 0; b < 8; b++) {
          if (((got >> (8 * b)) & 0xff) != ((want >> (8 * b)) & 0xff)) {
            off += (size_t)b;
            break;
          }
        }
        printf("MEMCHECK verify FAILED at offset %zu expected=0x%016" PRIx64
               " got=0x%016" PRIx64 "%s\n",
               off, want, got, sfx);
        fflush(stdout);
        return 1;
      }
      hv = (hv ^ got) * FNV_PRIME;
    }
    printf("MEMCHECK verified ok checksum=%016" PRIx64 "%s\n", hv, sfx);
    fflush(stdout);
  }
  if (rounds > 1) printf("MEMCHECK done rounds=%" PRIu64 "\n", rounds);
  munmap(mem, bytes);
  return 0;
}
