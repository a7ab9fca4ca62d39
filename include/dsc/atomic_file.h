/* atomic_file.h: writing a file so that a crash never leaves a torn one.
 *
 * The bytes go to PATH.tmp.<pid>, are flushed and fsync'ed, and the temporary file is renamed
 * over PATH (then the directory is synced, best effort). On any error the temporary file is
 * removed and PATH is left as it was. Used by every writer of checkpoints and exports.
 */
#ifndef DSC_ATOMIC_FILE_H
#define DSC_ATOMIC_FILE_H

#include <stddef.h>

#include "dsc/status.h"

/* Writes the n parts (parts[i], lens[i] bytes; a part may be NULL when its length is 0) one
 * after the other as the whole content of `path`. Errors start with the path. */
dsc_status *dsc_file_write_atomic(const char *path, int n, const void *const *parts,
                                  const size_t *lens);

#endif
