#!/usr/bin/env python3
"""Writes the small .safetensors files read by tests/unit/test_safetensors.c.

    python3 tests/data/st/make_testdata.py      (from the repository root)

basic.safetensors     written by the reference `safetensors` package (torch),
                      one tensor per interesting dtype/shape, plus metadata.
unaligned.safetensors hand-built: a 13-byte-padded header so the data buffer
                      starts at an odd offset (old writers did this).
The values are exactly representable, so the C test hard-codes them.
"""
import json
import os
import struct

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))

tensors = {
    "f32": torch.arange(6, dtype=torch.float32).reshape(2, 3) * 0.5 - 1,
    "f16": torch.tensor([1.5, -2.0, 65504.0, 2.0**-24, float("-inf"), float("nan")],
                        dtype=torch.float16),
    "bf16": torch.tensor([1.0, -3.140625, 2.0**-133, 3.0e38], dtype=torch.bfloat16),
    "f64": torch.tensor([1.0 / 3, 1e300, -1e-50], dtype=torch.float64),
    "i64": torch.arange(4, dtype=torch.int64).reshape(1, 4),
    "scalar": torch.tensor(3.25, dtype=torch.float32),
    "empty": torch.zeros(0, 3, dtype=torch.float32),
    "u8": torch.tensor([[1, 2], [3, 255]], dtype=torch.uint8),
}
save_file(tensors, os.path.join(HERE, "basic.safetensors"),
          metadata={"format": "pt", "note": "h\u00e9llo"})

# Unaligned: two F32 tensors and one F16, header padded to 13 bytes mod 8.
data = struct.pack("<3f", 1.0, -2.5, 1e-40) + struct.pack("<2e", 0.5, -65504.0)
hdr = {
    "a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
    "h": {"dtype": "F16", "shape": [2], "data_offsets": [12, 16]},
}
h = json.dumps(hdr, separators=(",", ":")).encode()
while (8 + len(h)) % 8 != 5:
    h += b" "
with open(os.path.join(HERE, "unaligned.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + data)
