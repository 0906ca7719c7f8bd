"""A reader of apk v3 packages (apk-tools 3, "ADB" files), for the tests.

Written from the format's description, independently of tools/mkapk.py (no shared code):
apk-tools doc/apk-v3.5.scd (tags, types, blocks), doc/apk-package.5.scd (fields), the
schema tables of src/apk_adb.h and src/apk_adb.c (field numbers and kinds), and the rules
the apk reader applies (src/adb.c, src/extract_v3.c: block order, data blocks naming
their path and file in order, sizes and digests checked). It is stricter than apk: it
also wants what apk's own writer produces (values aligned to their unit, no trailing null
slots, sorted paths, files and dependencies, zero padding), so that a package it accepts
is one apk reads the way we mean.

    pkg = read(path)      # raises FormatError with the reason and the offset
    pkg.info["name"], pkg.scripts["post-install"], pkg.files()["/etc/config/wormhole"]
"""

import hashlib
import struct
import zlib


class FormatError(AssertionError):
    pass


# Type codes: the high 4 bits of a 32-bit tag.
SPECIAL, INT, INT32, INT64, BLOB8, BLOB16, BLOB32, ARRAY, OBJECT = 0, 1, 2, 3, 8, 9, 10, 13, 14
BLOB_PREFIX = {BLOB8: 1, BLOB16: 2, BLOB32: 4}
ADB, SIG, DATA, DATAX = 0, 1, 2, 3

# Schemas: {slot: (field name, kind)}; a kind is "str", "hex", "int", a schema name, or
# ("array", item kind). From apk_adb.c.
DEPENDS = ("array", "dependency")
SCHEMAS = {
    "package": {1: ("info", "pkginfo"), 2: ("paths", ("array", "dir")), 3: ("scripts", "scripts"),
                4: ("triggers", ("array", "str")), 5: ("replaces-priority", "int")},
    "pkginfo": {1: ("name", "str"), 2: ("version", "str"), 3: ("hashes", "hex"), 4: ("description", "str"),
                5: ("arch", "str"), 6: ("license", "str"), 7: ("origin", "str"), 8: ("maintainer", "str"),
                9: ("url", "str"), 10: ("repo-commit", "hex"), 11: ("build-time", "int"),
                12: ("installed-size", "int"), 13: ("file-size", "int"), 14: ("provider-priority", "int"),
                15: ("depends", DEPENDS), 16: ("provides", DEPENDS), 17: ("replaces", DEPENDS),
                18: ("install-if", DEPENDS), 19: ("recommends", DEPENDS), 20: ("layer", "int"),
                21: ("tags", ("array", "str"))},
    "dependency": {1: ("name", "str"), 2: ("version", "str"), 3: ("match", "int")},
    "dir": {1: ("name", "str"), 2: ("acl", "acl"), 3: ("files", ("array", "file"))},
    "acl": {1: ("mode", "int"), 2: ("user", "str"), 3: ("group", "str"), 4: ("xattrs", ("array", "hex"))},
    "file": {1: ("name", "str"), 2: ("acl", "acl"), 3: ("size", "int"), 4: ("mtime", "int"),
             5: ("hash", "hex"), 6: ("target", "hex")},
    "scripts": {1: ("trigger", "str"), 2: ("pre-install", "str"), 3: ("post-install", "str"),
                4: ("pre-deinstall", "str"), 5: ("post-deinstall", "str"), 6: ("pre-upgrade", "str"),
                7: ("post-upgrade", "str")},
}
ID_LEN = 20


def u32(buf, at):
    if at < 0 or at + 4 > len(buf):
        raise FormatError("a 32-bit word at %d runs past the end (%d bytes)" % (at, len(buf)))
    return struct.unpack_from("<I", buf, at)[0]


# --- the container ----------------------------------------------------------------------------

def decompress(raw):
    """The 'ADB.' stream inside a file: stored as is, or after 'ADBd' as raw deflate."""
    if raw[:4] == b"ADB.":
        return raw
    if raw[:4] == b"ADBd":
        d = zlib.decompressobj(-15)
        out = d.decompress(raw[4:]) + d.flush()
        if not d.eof or d.unused_data:
            raise FormatError("the deflate stream is truncated or followed by %d stray bytes" % len(d.unused_data))
        return out
    if raw[:4] == b"ADBc":
        raise FormatError("compression %r (ADBc) is not one this reader knows" % raw[4:6])
    raise FormatError("not an apk v3 file: starts with %r" % raw[:4])


def blocks(stream):
    """[(type, payload)] after the 'ADB.' + schema header, with the padding checked."""
    out, pos = [], 8
    while pos < len(stream):
        word = u32(stream, pos)
        kind, raw_size, head = word >> 30, word & 0x3FFFFFFF, 4
        if kind == DATAX:
            raise FormatError("block at %d: type 3 (extended/DATAX) is not expected in a package" % pos)
        if raw_size < head:
            raise FormatError("block at %d: size %d is smaller than its header" % (pos, raw_size))
        padded = (raw_size + 7) // 8 * 8
        if pos + padded > len(stream):
            raise FormatError("block at %d: %d bytes announced, %d left" % (pos, padded, len(stream) - pos))
        if any(stream[pos + raw_size:pos + padded]):
            raise FormatError("block at %d: padding is not zero" % pos)
        out.append((kind, stream[pos + head:pos + raw_size]))
        pos += padded
    return out


def check_order(found):
    """One ADB block, then signatures, then data (apk's reader refuses anything else)."""
    kinds = [k for k, _ in found]
    if not kinds or kinds[0] != ADB:
        raise FormatError("the first block must be the ADB block, found types %s" % kinds)
    rest = kinds[1:]
    sigs = len([k for k in rest if k == SIG])
    if rest != [SIG] * sigs + [DATA] * (len(rest) - sigs):
        raise FormatError("blocks out of order (ADB, SIG*, DATA*): %s" % kinds)


# --- values in the ADB block ----------------------------------------------------------------------

class Adb:
    def __init__(self, buf):
        if len(buf) < 8:
            raise FormatError("ADB block of %d bytes has no header" % len(buf))
        if buf[0] != 0:
            raise FormatError("ADB compat version %d (readers know 0)" % buf[0])
        self.buf = buf
        self.root = u32(buf, 4)

    def _at(self, tag, unit):
        offset = tag & 0x0FFFFFFF
        if offset < 8:
            raise FormatError("tag %#010x points into the ADB header" % tag)
        if offset % unit:
            raise FormatError("tag %#010x: offset %d is not aligned to %d" % (tag, offset, unit))
        return offset

    def integer(self, tag):
        kind = tag >> 28
        if kind == INT:
            return tag & 0x0FFFFFFF
        if kind == INT32:
            return u32(self.buf, self._at(tag, 4))
        if kind == INT64:
            at = self._at(tag, 4)
            return u32(self.buf, at) | u32(self.buf, at + 4) << 32
        raise FormatError("tag %#010x is not an integer" % tag)

    def blob(self, tag):
        kind = tag >> 28
        if kind not in BLOB_PREFIX:
            raise FormatError("tag %#010x is not a blob" % tag)
        unit = BLOB_PREFIX[kind]
        at = self._at(tag, unit)
        if at + unit > len(self.buf):
            raise FormatError("blob length at %d runs past the end" % at)
        size = int.from_bytes(self.buf[at:at + unit], "little")
        if at + unit + size > len(self.buf):
            raise FormatError("blob at %d: %d bytes announced, block ends first" % (at, size))
        if size == 0:
            raise FormatError("blob at %d is empty (an empty value is written as null)" % at)
        return bytes(self.buf[at + unit:at + unit + size])

    def slots(self, tag, want):
        kind = tag >> 28
        if kind != want:
            raise FormatError("tag %#010x: type %d, expected %s" % (tag, kind, "array" if want == ARRAY else "object"))
        at = self._at(tag, 4)
        count = u32(self.buf, at)
        if count < 1:
            raise FormatError("object at %d has slot count 0 (slot 0 counts itself)" % at)
        values = [u32(self.buf, at + 4 * i) for i in range(1, count)]
        if not values:
            raise FormatError("object at %d is empty (an empty object is written as null)" % at)
        if values[-1] == 0:
            raise FormatError("object at %d ends in a null slot" % at)
        return values

    def decode(self, tag, kind):
        """The value of tag read as kind; None for null."""
        if tag == 0:
            return None
        if tag >> 28 == SPECIAL:
            raise FormatError("special value %#x where a %s was expected" % (tag, kind))
        if kind == "int":
            return self.integer(tag)
        if kind == "str":
            return self.blob(tag).decode("utf-8")
        if kind == "hex":
            return self.blob(tag)
        if isinstance(kind, tuple):
            items = [self.decode(v, kind[1]) for v in self.slots(tag, ARRAY)]
            if None in items:
                raise FormatError("an array holds a null item")
            return items
        schema = SCHEMAS[kind]
        out = {}
        for index, value in enumerate(self.slots(tag, OBJECT), 1):
            if index not in schema:
                if value:
                    raise FormatError("%s: slot %d is not in the schema" % (kind, index))
                continue
            name, field_kind = schema[index]
            decoded = self.decode(value, field_kind)
            if decoded is not None:
                out[name] = decoded
        return out


# --- the package --------------------------------------------------------------------------------

class File:
    __slots__ = ("path", "mode", "user", "group", "size", "mtime", "sha256", "data")

    def __init__(self, path, entry):
        acl = entry.get("acl", {})
        self.path = path
        self.mode, self.user, self.group = acl.get("mode"), acl.get("user"), acl.get("group")
        self.size, self.mtime = entry.get("size", 0), entry.get("mtime")
        self.sha256 = entry.get("hash")
        self.data = b""


class Package:
    def __init__(self, raw):
        stream = decompress(raw)
        if stream[4:8] != b"pckg":
            raise FormatError("schema %r, a package is 'pckg'" % stream[4:8])
        found = blocks(stream)
        check_order(found)
        self.adb_bytes = bytes(found[0][1])
        self.signatures = [p for k, p in found if k == SIG]
        adb = Adb(self.adb_bytes)
        root = adb.decode(adb.root, "package")
        if root is None:
            raise FormatError("the root value is null")
        self.info = root.get("info", {})
        self.paths = root.get("paths", [])
        self.scripts = root.get("scripts", {})
        self.triggers = root.get("triggers", [])
        self._check_info()
        self._check_sorted()
        self._files = self._attach([p for k, p in found if k == DATA])

    def _check_info(self):
        for field in ("name", "version"):
            if field not in self.info:
                raise FormatError("package info has no %s" % field)
        if len(self.info.get("hashes", b"")) != ID_LEN:
            raise FormatError("package id (info.hashes) must be %d bytes" % ID_LEN)

    def _check_sorted(self):
        names = [d.get("name", "").encode() for d in self.paths]
        if names != sorted(set(names)):
            raise FormatError("directories not sorted and unique: %s" % names)
        for d in self.paths:
            files = [f["name"].encode() for f in d.get("files", [])]
            if files != sorted(set(files)):
                raise FormatError("files of %r not sorted and unique" % d.get("name", ""))
        deps = [dep["name"] for dep in self.info.get("depends", [])]
        if deps != sorted(set(deps)):
            raise FormatError("depends not sorted and unique: %s" % deps)

    def _attach(self, data_blocks):
        """{device path: File}, the data blocks matched to files in (directory, file) order."""
        files, expected = {}, []
        for d_idx, d in enumerate(self.paths, 1):
            for f_idx, entry in enumerate(d.get("files", []), 1):
                path = "/" + "/".join(p for p in (d.get("name", ""), entry["name"]) if p)
                f = files[path] = File(path, entry)
                if "target" in entry:
                    raise FormatError("%s: links and devices are not expected here" % path)
                if f.sha256 is None or len(f.sha256) != 32:
                    raise FormatError("%s: a regular file needs a SHA-256 hash" % path)
                if f.size:
                    expected.append((d_idx, f_idx, f))
        if len(data_blocks) != len(expected):
            raise FormatError("%d data blocks for %d non-empty files" % (len(data_blocks), len(expected)))
        for payload, (d_idx, f_idx, f) in zip(data_blocks, expected):
            if len(payload) < 8 or struct.unpack_from("<II", payload) != (d_idx, f_idx):
                raise FormatError("data block for %s names %r, expected (%d, %d)"
                                  % (f.path, struct.unpack_from("<II", payload) if len(payload) >= 8 else payload,
                                     d_idx, f_idx))
            f.data = bytes(payload[8:])
            if len(f.data) != f.size:
                raise FormatError("%s: %d bytes of data, %d in its entry" % (f.path, len(f.data), f.size))
        for f in files.values():
            if hashlib.sha256(f.data).digest() != f.sha256:
                raise FormatError("%s: content does not match its SHA-256" % f.path)
        return files

    def files(self):
        return dict(self._files)

    def directories(self):
        """{'/' or '/etc/...': acl dict} of every directory entry."""
        return {"/" + d.get("name", ""): d.get("acl", {}) for d in self.paths}

    def unique_id_matches(self):
        """mkpkg's id: the first 20 bytes of the SHA-256 of the ADB block with the id zeroed."""
        ident = self.info["hashes"]
        at = self.adb_bytes.find(bytes([ID_LEN]) + ident)
        if at < 0 or self.adb_bytes.count(bytes([ID_LEN]) + ident) != 1:
            raise FormatError("the package id is not found once in the ADB block")
        zeroed = self.adb_bytes[:at + 1] + b"\0" * ID_LEN + self.adb_bytes[at + 1 + ID_LEN:]
        return hashlib.sha256(zeroed).digest()[:ID_LEN] == ident


def read(path_or_bytes):
    if isinstance(path_or_bytes, (bytes, bytearray)):
        return Package(bytes(path_or_bytes))
    with open(path_or_bytes, "rb") as f:
        return Package(f.read())
