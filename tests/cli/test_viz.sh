#!/usr/bin/env bash
# End-to-end checks of `dsc viz curves` and `dsc viz maps` (docs/viz.md): PNG sizes as documented
# (decoded with /usr/bin/python3 + PIL), identical bytes for identical inputs, the image and mask
# columns holding the data's pixels, the dense-probe column, and clear errors for empty metrics,
# missing runs, wrong layouts and usage mistakes. Data are made here: metrics.jsonl files and a
# tiny seg-layout dataset (32x32 PNG scenes with palette masks); weights are random (small stem).
set -u
. "$(dirname "$0")/lib.sh"

/usr/bin/python3 - "$tmp" <<'PY'
import json, os, sys
from PIL import Image
t = sys.argv[1]
def run(name, lines, method=None):
    d = os.path.join(t, name)
    os.makedirs(d)
    with open(os.path.join(d, "metrics.jsonl"), "w") as f:
        for l in lines:
            f.write(json.dumps(l) + "\n")
    if method:
        open(os.path.join(d, "config.ini"), "w").write("[method]\nname = %s\n" % method)
run("run_a", [{"step": s, "epoch": 0, "lr": 0.1, "loss": 9 - s * 0.05, "loss_ins": 8 - s * 0.04,
               "loss_pix": 7 - s * 0.03, "loss_sem": 6 - s * 0.02} for s in range(0, 100, 5)], "dsc-km")
run("run_b", [{"step": s, "loss": 8 - s * 0.01, "loss_ins": 7.5} for s in range(0, 60, 3)], "moco-v2")
run("single", [{"step": 4, "loss": 3.0}])
run("empty", [])
# seg layout: 6 train and 4 val scenes, each a background with two coloured squares (classes 1..3)
root = os.path.join(t, "seg")
for d in ["JPEGImages", "SegmentationClass", "ImageSets/Segmentation"]:
    os.makedirs(os.path.join(root, d))
pal = [0] * 768
for k, c in enumerate([(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)]):
    pal[3 * k:3 * k + 3] = c
pal[765:768] = [224, 224, 192]
for split, n in [("train", 6), ("val", 4)]:
    ids = []
    for i in range(n):
        ident = "%s_%02d" % (split, i)
        ids.append(ident)
        img = Image.new("RGB", (32, 32), (40 + 20 * i, 90, 140))
        mask = Image.new("P", (32, 32), 0)
        mask.putpalette(pal)
        for j, (x, y, cls, col) in enumerate([(2 + i, 4, 1 + i % 3, (230, 40, 40)), (16, 14 + i % 5, 1 + (i + 1) % 3, (30, 200, 60))]):
            for yy in range(y, y + 12):
                for xx in range(x, x + 12):
                    img.putpixel((xx, yy), col)
                    mask.putpixel((xx, yy), cls)
        mask.putpixel((0, 0), 255)
        img.save(os.path.join(root, "JPEGImages", ident + ".png"))
        mask.save(os.path.join(root, "SegmentationClass", ident + ".png"))
    open(os.path.join(root, "ImageSets/Segmentation", split + ".txt"), "w").write("\n".join(ids) + "\n")
PY

# size_is NAME FILE W H: FILE is a PNG of W x H pixels
size_is() {
  local got
  got=$(/usr/bin/python3 -c 'import sys; from PIL import Image; im = Image.open(sys.argv[1]); print("%dx%d %s" % (im.size[0], im.size[1], im.mode))' "$2" 2>&1)
  if [ "$got" = "$3x$4 RGB" ]; then ok "$1"; else bad "$1 (got $got, want $3x$4 RGB)"; fi
}

# curves: 4 panels (2 x 2 of 480 x 300) and 3 legend rows: 960 x (600 + 8 + 3 * 14)
expect curves_runs 0 "3 run(s), 4 panel(s)" "$dsc" viz curves "$tmp/run_a" "$tmp/run_b" "$tmp/single/metrics.jsonl" --out "$tmp/c.png"
size_is curves_size "$tmp/c.png" 960 650
expect curves_smooth 0 "1 run(s), 1 panel(s)" "$dsc" viz curves "$tmp/run_a" --key loss --smooth 4 --out "$tmp/c1.png"
size_is curves_one_panel_size "$tmp/c1.png" 480 322
expect curves_three_keys 0 "2 run(s), 3 panel(s)" "$dsc" viz curves "$tmp/run_a" "$tmp/run_b" --key loss,lr,nope --out "$tmp/c3.png"
size_is curves_three_keys_size "$tmp/c3.png" 960 636
"$dsc" viz curves "$tmp/run_a" "$tmp/run_b" "$tmp/single/metrics.jsonl" --out "$tmp/c2.png" > /dev/null 2>&1
if cmp -s "$tmp/c.png" "$tmp/c2.png"; then ok curves_deterministic; else bad curves_deterministic; fi
expect curves_empty 1 "empty/metrics.jsonl: no metrics" "$dsc" viz curves "$tmp/run_a" "$tmp/empty" --out "$tmp/x.png"
expect curves_missing 1 "$tmp/nowhere: no such run folder" "$dsc" viz curves "$tmp/nowhere" --out "$tmp/x.png"
expect curves_no_out 2 "--out" "$dsc" viz curves "$tmp/run_a"
expect curves_no_run 2 "at least one run" "$dsc" viz curves --out "$tmp/x.png"
expect curves_bad_smooth 2 "smooth" "$dsc" viz curves "$tmp/run_a" --smooth 0 --out "$tmp/x.png"
if [ ! -e "$tmp/x.png" ]; then ok curves_error_writes_nothing; else bad curves_error_writes_nothing; fi

# maps: 32 px scenes, tiles of 128 px (cell 128 / 32 = 4x); columns image, mask, 2 per weights
# (PCA, k-means), + 1 per weights with --probe; width 4 + cols * 132, height 28 + images * 132
small="--arch resnet18 --stem small --threads 2"
expect maps_one 0 "4 image(s) x 1 weights at 32x32" "$dsc" viz maps --data "$tmp/seg" --weights random $small --out "$tmp/m1.png"
size_is maps_one_size "$tmp/m1.png" 532 556
expect maps_two 0 "3 image(s) x 2 weights" "$dsc" viz maps --data "$tmp/seg" --images 3 --weights random \
  --weights=random --seed 3 $small --clusters 2 --out "$tmp/m2.png"
size_is maps_two_size "$tmp/m2.png" 796 424
"$dsc" viz maps --data "$tmp/seg" --weights random $small --out "$tmp/m1b.png" > /dev/null 2>&1
if cmp -s "$tmp/m1.png" "$tmp/m1b.png"; then ok maps_deterministic; else bad maps_deterministic; fi
# the image column is the scene magnified 4x, the mask column its VOC colours
check=$(/usr/bin/python3 - "$tmp" <<'PY'
import sys
from PIL import Image
t = sys.argv[1]
m = Image.open(t + "/m1.png").convert("RGB")
bad = 0
for row in range(4):
    img = Image.open(t + "/seg/JPEGImages/val_%02d.png" % row).convert("RGB")
    mask = Image.open(t + "/seg/SegmentationClass/val_%02d.png" % row)
    pal = mask.getpalette()
    for y in range(0, 128, 5):
        for x in range(0, 128, 5):
            if m.getpixel((4 + x, 28 + row * 132 + y)) != img.getpixel((x // 4, y // 4)):
                bad += 1
            v = mask.getpixel((x // 4, y // 4))
            want = (224, 224, 192) if v == 255 else tuple(pal[3 * v:3 * v + 3])
            if m.getpixel((136 + x, 28 + row * 132 + y)) != want:
                bad += 1
print(bad)
PY
)
if [ "$check" = "0" ]; then ok maps_image_and_mask_columns; else bad "maps_image_and_mask_columns ($check wrong pixels)"; fi
expect maps_probe 0 "dense probe" "$dsc" viz maps --data "$tmp/seg" --images 2 --weights random $small --probe --out "$tmp/m3.png"
size_is maps_probe_size "$tmp/m3.png" 664 292
expect maps_not_seg 1 "not in the seg layout" "$dsc" viz maps --data "$tmp/run_a" --weights random $small --out "$tmp/y.png"
expect maps_bad_weights 1 "$tmp/none.safetensors" "$dsc" viz maps --data "$tmp/seg" --weights "$tmp/none.safetensors" --out "$tmp/y.png"
expect maps_no_weights 2 "--weights" "$dsc" viz maps --data "$tmp/seg" --out "$tmp/y.png"
expect maps_bad_arch 2 "--arch" "$dsc" viz maps --data "$tmp/seg" --weights random --arch vgg --out "$tmp/y.png"
expect viz_unknown 2 '"plot"' "$dsc" viz plot
expect viz_help 0 "curves" "$dsc" viz --help
expect maps_help 0 "usage: dsc viz maps" "$dsc" viz maps --help
finish
