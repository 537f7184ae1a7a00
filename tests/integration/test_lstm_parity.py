#!/usr/bin/python3
"""The C forward pass against torch.nn.LSTM plus the linear head (docs/models.md): random
weights and inputs, layers {1, 2}, hidden {16, 64, 128}, features {1, 8}, steps {1, 64}, in
float32; every output must be within 1e-4 relative (|c - t| <= 1e-4 * max(1, |t|)).

    test_lstm_parity.py [--cuda]     the CUDA backend instead of the CPU one (exit 77 when
                                     no device is usable)

Skips (77) when torch is not importable. Needs AD_BUILD_DIR (lstm-run).
"""

import itertools
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
except ImportError:
    print("skipped: torch or numpy is not installed")
    sys.exit(77)

BUILD = os.environ.get("AD_BUILD_DIR", "build")
TOOL = os.path.join(BUILD, "tests", "tools", "lstm-run")
TOLERANCE = 1e-4


class Net(torch.nn.Module):
    def __init__(self, features, hidden, layers):
        super().__init__()
        self.lstm = torch.nn.LSTM(features, hidden, num_layers=layers, batch_first=True)
        self.head = torch.nn.Linear(hidden, features)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1, :])


def write_safetensors(path, tensors):
    """The safetensors layout, written directly: header length, JSON header, raw data."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.detach().contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def run_case(folder, layers, hidden, features, steps, batch, cuda):
    torch.manual_seed(layers * 1000 + hidden * 10 + features + steps)
    net = Net(features, hidden, layers).float()
    with torch.no_grad():
        for p in net.parameters():  # wider than the default init: exercise saturation too
            p.mul_(2.0)
    x = torch.randn(batch, steps, features, dtype=torch.float32) * 1.5
    with torch.no_grad():
        want = net(x).numpy()
    weights = os.path.join(folder, "w.safetensors")
    write_safetensors(weights, net.state_dict())
    inputs = os.path.join(folder, "x.f32")
    x.numpy().astype("<f4").tofile(inputs)
    out = os.path.join(folder, "y.f32")
    args = [TOOL] + (["--cuda"] if cuda else []) + [weights, inputs, str(batch), str(steps), out]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    if r.returncode == 77:
        print("skipped: " + r.stderr.strip())
        sys.exit(77)
    if r.returncode != 0:
        raise AssertionError("lstm-run failed: " + r.stderr)
    got = np.fromfile(out, dtype="<f4").reshape(batch, features)
    error = np.abs(got - want) / np.maximum(1.0, np.abs(want))
    return float(error.max())


def main():
    cuda = "--cuda" in sys.argv[1:]
    worst = 0.0
    failures = []
    with tempfile.TemporaryDirectory() as folder:
        for layers, hidden, features, steps in itertools.product((1, 2), (16, 64, 128), (1, 8),
                                                                 (1, 64)):
            # 300 windows: more than one of the CPU backend's chunks, and not a multiple.
            batch = 300 if steps == 64 else 37
            err = run_case(folder, layers, hidden, features, steps, batch, cuda)
            worst = max(worst, err)
            line = "layers=%d hidden=%3d features=%d steps=%2d batch=%d: max relative error %.2e" % (
                layers, hidden, features, steps, batch, err)
            print(line)
            if not err <= TOLERANCE:
                failures.append(line)
    print("worst: %.2e (tolerance %.0e)" % (worst, TOLERANCE))
    if failures:
        print("FAILED:\n" + "\n".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
