/* fuzz_pth.c: libFuzzer harness for the PyTorch checkpoint reader (include/dsc/pth.h).
 *
 * Each input is taken as a whole .pth file (zip or legacy): dsc_pth_read_memory either
 * rejects it (the message must be one line starting with the label, and no file is handed
 * out) or accepts it, and then every tensor's bytes are touched and checked against its
 * dtype and shape, so AddressSanitizer sees any read outside the result. dsc_pth_sniff runs
 * on every prefix length up to 8. Any violated expectation aborts, which libFuzzer reports
 * as a crash. Seeds: small files written by tools/reference/make_pth_fixtures.py.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dsc/pth.h"

#define FUZZ_LABEL "fuzz.pth"

static void fuzz_expect(int cond) {
  if (!cond) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  for (size_t n = 0; n <= size && n <= 8; n++) (void)dsc_pth_sniff(data, n);
  dsc_safetensors *f = NULL;
  dsc_status *st = dsc_pth_read_memory(data, size, FUZZ_LABEL, &f);
  if (st) {
    fuzz_expect(f == NULL);
    fuzz_expect(strncmp(st->msg, FUZZ_LABEL ": ", strlen(FUZZ_LABEL) + 2) == 0);
    fuzz_expect(strchr(st->msg, '\n') == NULL);
    dsc_status_free(st);
    return 0;
  }
  fuzz_expect(f != NULL);
  unsigned checksum = 0;
  for (int i = 0; i < dsc_st_count(f); i++) {
    const dsc_st_tensor *t = dsc_st_get(f, i);
    fuzz_expect(t && t->ndim >= 0 && t->ndim <= DSC_MAX_DIMS);
    fuzz_expect(dsc_st_numel(t) * dsc_dtype_size(t->dtype) == dsc_st_nbytes(t));
    const unsigned char *bytes = dsc_st_data(f, t);
    for (size_t b = 0; b < dsc_st_nbytes(t); b++) checksum += bytes[b];
  }
  dsc_st_close(f);
  volatile unsigned sink = checksum; /* keeps the reads from being optimized away */
  (void)sink;
  return 0;
}
