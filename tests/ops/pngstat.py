#!/usr/bin/env python3
"""pngstat.py -- what a PNG holds, for tests/trainer/plot.sh: decodes an
8-bit RGB/RGBA (non-interlaced) PNG with the standard library alone and
prints one "key value" line each:

    width W / height H             from IHDR
    colours N                      distinct RGB values
    background R,G,B P             the commonest colour and its share (%)
    pixels RRGGBB N                for each RRGGBB given on the command line,
                                   how many pixels are within 24 of it per channel

Exit 1 with a message if the file is not such a PNG.

    pngstat.py FILE.png [RRGGBB...]
"""
import struct
import sys
import zlib


def fail(msg):
    print("pngstat: %s" % msg, file=sys.stderr)
    sys.exit(1)


def decode(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        fail("%s: no PNG signature" % path)
    pos, idat, ihdr = 8, [], None
    while pos + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if len(body) != n:
            fail("%s: truncated %s chunk" % (path, kind.decode("latin-1")))
        if zlib.crc32(kind + body) != struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0]:
            fail("%s: bad CRC in %s chunk" % (path, kind.decode("latin-1")))
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + n
    if not ihdr or not idat:
        fail("%s: no IHDR or IDAT" % path)
    w, h, depth, ctype, _, _, interlace = ihdr
    if depth != 8 or ctype not in (2, 6) or interlace:
        fail("%s: depth %d colour type %d interlace %d: only 8-bit RGB/RGBA" %
             (path, depth, ctype, interlace))
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = w * bpp
    if len(raw) != h * (stride + 1):
        fail("%s: image data is %d bytes, not %d" % (path, len(raw), h * (stride + 1)))
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif f == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 255
        elif f == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif f == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pr = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pr) & 255
        elif f != 0:
            fail("%s: unknown filter %d in row %d" % (path, f, y))
        rows.append(bytes(line))
        prev = line
    return w, h, bpp, rows


def main():
    if len(sys.argv) < 2:
        fail("usage: pngstat.py FILE.png [RRGGBB...]")
    w, h, bpp, rows = decode(sys.argv[1])
    counts = {}
    for line in rows:
        for i in range(0, len(line), bpp):
            px = line[i:i + 3]
            counts[px] = counts.get(px, 0) + 1
    print("width", w)
    print("height", h)
    print("colours", len(counts))
    bg, n = max(counts.items(), key=lambda kv: kv[1])
    print("background %d,%d,%d %d" % (bg[0], bg[1], bg[2], 100 * n // (w * h)))
    for want in sys.argv[2:]:
        t = bytes.fromhex(want)
        near = sum(k for px, k in counts.items()
                   if all(abs(px[j] - t[j]) <= 24 for j in range(3)))
        print("pixels", want, near)


if __name__ == "__main__":
    main()
