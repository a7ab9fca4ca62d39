#!/usr/bin/env bash
# End-to-end checks of `dsc data check` and `dsc bench data` on fixture folders made here with
# /usr/bin/python3 + PIL: a clean folder exits 0; a folder with every kind of bad file lists each
# one with its reason and exits 1; usage errors exit 2; an empty folder is an error naming it.
set -u
. "$(dirname "$0")/lib.sh"

/usr/bin/python3 - "$tmp" <<'PY'
import os, sys
from PIL import Image
t = sys.argv[1]
for d in ["good/a", "good/b", "bad/sub", "empty"]:
    os.makedirs(os.path.join(t, d), exist_ok=True)
def img(w, h, seed):
    return Image.frombytes("RGB", (w, h), bytes((seed * 7 + i) % 256 for i in range(w * h * 3)))
for i in range(6):
    img(40 + i, 30, i).save(os.path.join(t, "good/a" if i % 2 else "good/b", "g%d.jpg" % i), quality=90)
img(20, 20, 9).save(os.path.join(t, "good/p.png"))
img(1, 1, 3).save(os.path.join(t, "good/one.png"))
open(os.path.join(t, "good/readme.txt"), "w").write("not an image")
b = os.path.join(t, "bad")
img(64, 48, 1).save(os.path.join(b, "ok.jpg"), quality=90)
data = open(os.path.join(b, "ok.jpg"), "rb").read()
open(os.path.join(b, "truncated.jpg"), "wb").write(data[: len(data) // 2])
img(16, 16, 2).save(os.path.join(b, "sub/ok.png"))
png = bytearray(open(os.path.join(b, "sub/ok.png"), "rb").read())
for i in range(45, len(png) - 12):
    png[i] ^= 0x5A
open(os.path.join(b, "sub/corrupt.png"), "wb").write(png)
open(os.path.join(b, "zero.jpg"), "wb").close()
open(os.path.join(b, "text.jpg"), "w").write("hello\n")
# a PNG whose IHDR claims 100000 x 100000 pixels
import struct, zlib
def chunk(k, d):
    return struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d) & 0xFFFFFFFF)
huge = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)) \
    + chunk(b"IDAT", zlib.compress(b"\0" * 7)) + chunk(b"IEND", b"")
open(os.path.join(b, "huge.png"), "wb").write(huge)
os.symlink(os.path.join(b, "nowhere.jpg"), os.path.join(b, "dangling.jpg"))
os.symlink("..", os.path.join(b, "sub/loop"))
os.makedirs(os.path.join(b, "dir.jpg"))
PY

expect check_clean 0 "checked 8 files: 8 usable, 0 problems, 1 other files skipped" "$dsc" data check "$tmp/good"
expect check_bad_summary 1 "checked 8 files: 2 usable, 7 problems" "$dsc" data check "$tmp/bad" --max-pixels 1000000
for needle in "truncated.jpg" "corrupt.png" "zero.jpg: empty file" "text.jpg: not a JPEG or PNG" \
              "huge.png: image is 100000x100000" "dangling.jpg: cannot open" "sub/loop: directory already visited"; do
  if grep -qF -- "$needle" "$tmp/out"; then ok "check_lists $needle"; else bad "check_lists $needle ($(cat "$tmp/out"))"; fi
done
expect check_empty 1 "empty dataset" "$dsc" data check "$tmp/empty"
expect check_missing 1 "cannot open dataset directory" "$dsc" data check "$tmp/missing"
expect check_usage_no_dir 2 "one directory" "$dsc" data check
expect check_usage_sub 2 '"verify"' "$dsc" data verify "$tmp/good"
expect check_usage_format 2 'unknown data.format "coco"' "$dsc" data check "$tmp/good" --format coco
expect check_usage_option 2 "--frob" "$dsc" data check "$tmp/good" --frob
expect check_help 0 "usage: dsc data check" "$dsc" data --help
expect bench_data 0 '"batches_per_s"' "$dsc" bench data --path "$tmp/good" --size 32 --batch 4 --threads 1,2 \
  --warmup 1 --batches 3 --json
expect bench_data_no_path 2 "--path" "$dsc" bench data
expect bench_data_threads 2 "comma-separated" "$dsc" bench data --path "$tmp/good" --threads 1,x

finish
