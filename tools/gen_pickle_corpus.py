#!/usr/bin/env python3
"""Seed corpus for the pickle fuzz target (tests/fuzz/corpus/pickle/), which
the unit tests also read: files named ok-* must parse, evil-* must be refused
as unsupported (naming the global or opcode), bad-* refused as malformed.

    python3 tools/gen_pickle_corpus.py       (needs torch and numpy)

The ok-* pickles are what torch.save writes (data.pkl of its zip archive):
a small state dict in protocols 2 and 4, a PyTorch Lightning style
checkpoint (numpy global_step, a ModelCheckpoint callback key), and the
tiny SD 2.x checkpoint's. The evil-* ones are the classic ways a pickle runs
code on load.
"""
import collections
import io
import os
import pickle
import sys
import types
import zipfile

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus", "pickle")


def data_pkl(obj, **kw):
    buf = io.BytesIO()
    torch.save(obj, buf, **kw)
    z = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    return z.read([n for n in z.namelist() if n.endswith("/data.pkl")][0])


def state_dict():
    g = torch.Generator().manual_seed(0)
    return collections.OrderedDict([
        ("a.weight", torch.randn(3, 4, generator=g)),
        ("a.bias", torch.randn(3, generator=g).half()),
        ("b.weight", torch.randn(2, 2, 1, 1, generator=g).bfloat16()),
        ("position_ids", torch.arange(5).unsqueeze(0)),
        ("scalar", torch.tensor(2.5)),
        ("param", torch.nn.Parameter(torch.ones(2))),
    ])


class Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


def main():
    os.makedirs(OUT, exist_ok=True)
    put = lambda name, data: open(os.path.join(OUT, name), "wb").write(data)
    put("ok-state-dict.pkl", data_pkl(state_dict()))
    put("ok-proto4.pkl", data_pkl(state_dict(), pickle_protocol=4))
    # A Lightning checkpoint: its callback class is only named, never needed.
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"):
        sys.modules[name] = types.ModuleType(name)
    mod = sys.modules["pytorch_lightning.callbacks.model_checkpoint"]
    ModelCheckpoint = type("ModelCheckpoint", (), {"__module__": mod.__name__})
    mod.ModelCheckpoint = ModelCheckpoint
    sys.modules["pytorch_lightning"].callbacks = sys.modules["pytorch_lightning.callbacks"]
    sys.modules["pytorch_lightning.callbacks"].model_checkpoint = mod
    ckpt = {"epoch": 3, "global_step": np.int64(875000), "pytorch-lightning_version": "1.4.2",
            "callbacks": {ModelCheckpoint: {"best_model_score": None, "monitor": None}},
            "state_dict": state_dict()}
    put("ok-lightning.pkl", data_pkl(ckpt))
    tiny = os.path.join(ROOT, "tests", "data", "single", "tiny-sd2.ckpt")
    z = zipfile.ZipFile(tiny)
    put("ok-tiny-sd2.pkl", z.read("tiny-sd2/data.pkl"))
    put("evil-os-system.pkl", pickle.dumps(Evil(os.system, "echo pwned"), protocol=2))
    put("evil-eval.pkl", pickle.dumps(Evil(eval, "1+1"), protocol=4))
    put("evil-inst-proto0.pkl", b"(S'echo pwned'\nios\nsystem\n.")
    put("evil-torch-load.pkl", pickle.dumps(Evil(torch.load, "x"), protocol=2))
    put("evil-setattr.pkl", b"\x80\x02cbuiltins\nsetattr\nq\x00.")
    ok = open(os.path.join(OUT, "ok-state-dict.pkl"), "rb").read()
    put("bad-truncated.pkl", ok[: len(ok) // 2])
    put("bad-empty.pkl", b"")
    put("bad-no-stop.pkl", b"\x80\x02}q\x00")
    put("bad-memo.pkl", b"\x80\x02h\x05.")
    put("bad-setitems.pkl", b"\x80\x02(u.")
    for f in sorted(os.listdir(OUT)):
        print(f, os.path.getsize(os.path.join(OUT, f)))


if __name__ == "__main__":
    main()
