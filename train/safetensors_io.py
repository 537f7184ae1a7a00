"""The safetensors format (docs/models.md), written and read without the safetensors package.

The daemon's loader (gpu/safetensors.h) is the other side of this file. Owning both ends keeps
the trainer to the exact layout the loader checks, spares every trainer image a dependency,
and gives the tests a reader that checks offsets the way the loader does.

Layout: an 8-byte little-endian header length N, N bytes of a JSON object (padded with spaces
so that the data starts 8-byte aligned), then the raw little-endian, row-major tensor data.
Each header entry holds dtype, shape and data_offsets [begin, end) relative to the end of the
header; the optional "__metadata__" entry maps strings to strings.
"""

import json
import struct

import numpy as np

ALIGNMENT = 8
METADATA = "__metadata__"
DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}


class FormatError(ValueError):
    """A file that does not follow the format; the message names the tensor at fault."""


def encode(tensors, metadata=None):
    """Returns the bytes of a safetensors file holding tensors, a sequence of (name, array),
    as float32 in the given order (the header lists them in that order too). Building the
    bytes first lets the caller hash them before anything reaches the disk."""
    header = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError("metadata must map strings to strings")
        header[METADATA] = dict(metadata)
    blobs, offset = [], 0
    for name, array in tensors:
        if name == METADATA or name in header:
            raise ValueError("tensor name %r is reserved or used twice" % name)
        data = np.ascontiguousarray(array, dtype=DTYPES["F32"]).tobytes()
        header[name] = {"dtype": "F32", "shape": list(np.shape(array)),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % ALIGNMENT)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


class Entry:
    """One tensor's header entry: dtype, shape and its [begin, end) in the data section."""

    def __init__(self, dtype, shape, begin, end):
        self.dtype, self.shape, self.begin, self.end = dtype, shape, begin, end


class SafeTensors:
    """A parsed file: entries in header order, the metadata, and where the data starts."""

    def __init__(self, buf, entries, metadata, data_start):
        self.buf = buf
        self.entries = entries
        self.metadata = metadata
        self.data_start = data_start

    def tensor(self, name):
        """The tensor as a float32 array of its shape (F16 and BF16 converted, as the daemon
        does on load)."""
        e = self.entries[name]
        raw = self.buf[self.data_start + e.begin:self.data_start + e.end]
        values = np.frombuffer(raw, dtype=DTYPES[e.dtype])
        if e.dtype == "BF16":
            values = (values.astype(np.uint32) << 16).view(np.float32)
        return values.astype(np.float32).reshape(e.shape)


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise FormatError("the header names a key twice")
    return dict(pairs)


def parse(buf):
    """Parses a whole file's bytes, checking every entry, offset and size against the buffer
    and that no two tensors overlap, so a truncated or hostile file is an error, never a
    wrong read."""
    if len(buf) < 8:
        raise FormatError("shorter than the 8-byte header length")
    (n,) = struct.unpack_from("<Q", buf)
    if n > len(buf) - 8:
        raise FormatError("header length %d runs past the end of the file" % n)
    try:
        header = json.loads(buf[8:8 + n].decode("utf-8"), object_pairs_hook=_no_duplicates)
    except ValueError as e:
        raise FormatError("header is not JSON: %s" % e) from None
    if not isinstance(header, dict):
        raise FormatError("header is not a JSON object")
    metadata = header.pop(METADATA, {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FormatError("__metadata__ must map strings to strings")
    data_len = len(buf) - 8 - n
    entries = {}
    for name, e in header.items():
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise FormatError("%s: entry needs exactly dtype, shape and data_offsets" % name)
        dtype, shape, offsets = e["dtype"], e["shape"], e["data_offsets"]
        if dtype not in DTYPES:
            raise FormatError("%s: unsupported dtype %r" % (name, dtype))
        if not isinstance(shape, list) or not all(_count(d) for d in shape):
            raise FormatError("%s: shape must be a list of counts" % name)
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_count, offsets))
                and offsets[0] <= offsets[1] <= data_len):
            raise FormatError("%s: data_offsets %r outside the %d data bytes"
                              % (name, offsets, data_len))
        size = int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype].itemsize
        if offsets[1] - offsets[0] != size:
            raise FormatError("%s: %d bytes for shape %r of %s, which needs %d"
                              % (name, offsets[1] - offsets[0], shape, dtype, size))
        entries[name] = Entry(dtype, tuple(shape), offsets[0], offsets[1])
    ordered = sorted(entries.items(), key=lambda item: (item[1].begin, item[1].end))
    for (a, ea), (b, eb) in zip(ordered, ordered[1:]):
        if eb.begin < ea.end:
            raise FormatError("%s overlaps %s" % (b, a))
    return SafeTensors(buf, entries, metadata, 8 + n)


def _count(x):
    return type(x) is int and x >= 0


def read(path):
    """Reads and parses the file at path."""
    with open(path, "rb") as f:
        return parse(f.read())
