/* pytorch.h - PyTorch checkpoints (.ckpt, .pt, .pth, .bin) read without
 * running them.
 *
 * torch.save (PyTorch >= 1.6) writes a zip archive: <name>/data.pkl, a
 * pickle of the saved object, whose tensors refer by key to raw storages
 * <name>/data/<key>, stored uncompressed. The archive is read with zlib's
 * minizip and memory-mapped; the pickle is interpreted by a small stack
 * machine that understands the opcodes of protocols 2-4 and builds plain
 * values only: it has a whitelist of the globals a state dict uses
 * (OrderedDict, torch's storage types and _rebuild_tensor_v2 /
 * _rebuild_parameter, numpy's scalar for PyTorch Lightning's global_step,
 * Lightning's ModelCheckpoint as an inert dictionary key). No global is
 * ever imported or called: there is no code to run. Any other global, and
 * any opcode outside that set, refuses the whole file with its name.
 *
 * The state dict is the object itself, or its "state_dict" entry (Lightning
 * checkpoints); its tensors become an st_file (safetensors.h) whose data
 * point into the mapping, so a checkpoint loads like a .safetensors file.
 * Tensors must be contiguous (torch.save of a state dict always is).
 *
 * Limits on everything the file controls: pickle size, stack depth, memo
 * size, objects, string lengths, tensor ranks and sizes against their
 * storage. Fuzzed (tests/fuzz/fuzz_pickle.c).
 */
#ifndef SD_PYTORCH_H
#define SD_PYTORCH_H

#include <stddef.h>
#include <stdint.h>

#include "model/safetensors.h"
#include "util/err.h"

#define PT_MAX_PICKLE (256u << 20) /* bytes of data.pkl */

/* Open a torch.save zip file. *global_step: the Lightning checkpoint's
 * global_step, or -1. */
int pt_open(struct st_file **out, const char *path, long *global_step, struct sd_err *err);

/* What a pickle holds, for pt_open and for tests: the tensors of its state
 * dict (storages unresolved: data NULL, name owned by the result) and
 * global_step. */
struct pt_tensor {
    char *name;
    enum st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    char *storage_key;       /* the data/<key> entry */
    int64_t storage_numel;   /* as the pickle says */
    int64_t offset;          /* elements into the storage */
};

struct pt_state {
    struct pt_tensor *t;
    int n;
    long global_step;
};

/* Interpret a data.pkl; SD_OK and *out, or an error naming the refused
 * global or opcode (SD_ERR_UNSUPPORTED) or the malformed part
 * (SD_ERR_FORMAT). label names the file in messages. */
int pt_parse_pickle(const uint8_t *buf, size_t len, const char *label, struct pt_state *out, struct sd_err *err);
void pt_state_free(struct pt_state *s);

#endif
