/* fuzz_safetensors.c: libFuzzer harness for the safetensors reader (docs/fuzzing.md).
 *
 * Each input is taken as a whole file: dsc_st_open_memory either rejects it (the message
 * must be one line naming the label) or accepts it, and then every tensor's bytes, every
 * lookup, every float conversion and every metadata entry are touched so AddressSanitizer
 * sees any read outside the file. Any violated expectation aborts, which libFuzzer reports
 * as a crash.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/safetensors.h"

#define FUZZ_LABEL "fuzz.safetensors"

static void fuzz_expect(int cond) {
  if (!cond) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  dsc_safetensors *f = NULL;
  dsc_status *st = dsc_st_open_memory(data, size, FUZZ_LABEL, &f);
  if (st) {
    fuzz_expect(f == NULL);
    fuzz_expect(strncmp(st->msg, FUZZ_LABEL ": ", strlen(FUZZ_LABEL) + 2) == 0);
    fuzz_expect(strchr(st->msg, '\n') == NULL);
    dsc_status_free(st);
    return 0;
  }
  unsigned checksum = 0;
  uint64_t expected_begin = 0;
  for (int i = 0; i < dsc_st_count(f); i++) {
    const dsc_st_tensor *t = dsc_st_get(f, i);
    fuzz_expect(t && t->begin == expected_begin && t->end >= t->begin);
    expected_begin = t->end;
    fuzz_expect(dsc_st_find(f, t->name) == t);
    const unsigned char *bytes = dsc_st_data(f, t);
    for (size_t b = 0; b < dsc_st_nbytes(t); b++) checksum += bytes[b];
    size_t numel = dsc_st_numel(t);
    fuzz_expect(numel * dsc_dtype_size(t->dtype) == dsc_st_nbytes(t));
    float *values = malloc(numel ? numel * sizeof *values : 1);
    fuzz_expect(values != NULL);
    st = dsc_st_read_f32(f, t->name, values, numel);
    int is_float = t->dtype == DSC_F32 || t->dtype == DSC_F64 || t->dtype == DSC_F16 ||
                   t->dtype == DSC_BF16;
    fuzz_expect((st == NULL) == is_float);
    dsc_status_free(st);
    st = dsc_st_read_f32(f, t->name, values, numel + 1);
    fuzz_expect(st != NULL);
    dsc_status_free(st);
    free(values);
  }
  fuzz_expect(dsc_st_get(f, dsc_st_count(f)) == NULL);
  for (int i = 0; i < dsc_st_meta_count(f); i++) {
    const char *key = dsc_st_meta_key(f, i);
    const char *value = dsc_st_meta(f, key);
    fuzz_expect(key && value);
    checksum += (unsigned)strlen(key) + (unsigned)strlen(value);
  }
  fuzz_expect(dsc_st_meta_key(f, dsc_st_meta_count(f)) == NULL);
  dsc_st_close(f);
  volatile unsigned sink = checksum; /* keeps the reads from being optimized away */
  (void)sink;
  return 0;
}
