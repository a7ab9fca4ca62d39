#!/usr/bin/env bash
# Interop with torchvision (issue #2, item 9): a ResNet-50 written by dsc loads into
# torchvision.models.resnet50 with only fc.* missing, and `dsc embed` gives the same C5 and
# pooled features as torchvision on the same preprocessed real image (Fashion-MNIST photos).
set -u
dsc=${DSC_BIN:-bin/dsc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL $1"; echo "#summary 0 passed, 1 failed"; exit 1; }
# A ResNet-50 after two small training steps: BN running statistics are no longer trivial, and
# the weights stay where eval-mode activations are finite (large steps on the synthetic loss
# make them overflow at 224x224, in PyTorch as in dsc).
"$dsc" selfcheck --arch resnet50 --size 64 --batch 4 --steps 2 --lr 0.0005 --save "$tmp/r50.safetensors" \
  > "$tmp/log" 2>&1 || { cat "$tmp/log"; fail "dsc selfcheck --save"; }
/usr/bin/python3 tools/reference/interop_check.py make-image "$tmp/img.png" || fail "make-image"
"$dsc" embed --weights "$tmp/r50.safetensors" --input "$tmp/img.png" --out "$tmp/emb.safetensors" \
  --layer c5,pool || fail "dsc embed"
# ResNet-18 and -34 load into torchvision too (names and shapes of every tensor).
loads=0
for arch in resnet18 resnet34; do
  "$dsc" selfcheck --arch $arch --size 32 --batch 2 --steps 1 --save "$tmp/$arch.safetensors" \
    > "$tmp/log" 2>&1 || { cat "$tmp/log"; fail "dsc selfcheck --arch $arch --save"; }
  /usr/bin/python3 tools/reference/interop_check.py load $arch "$tmp/$arch.safetensors" \
    > "$tmp/load.log" || { cat "$tmp/load.log"; fail "$arch loads into torchvision"; }
  grep '^ok ' "$tmp/load.log"
  loads=$((loads + 1))
done
/usr/bin/python3 tools/reference/interop_check.py check "$tmp/r50.safetensors" "$tmp/img.png" \
  "$tmp/emb.safetensors" > "$tmp/result"
rc=$?
grep -v '^#summary' "$tmp/result"
p=$(sed -n 's/^#summary \([0-9]*\) passed, \([0-9]*\) failed/\1/p' "$tmp/result")
f=$(sed -n 's/^#summary \([0-9]*\) passed, \([0-9]*\) failed/\2/p' "$tmp/result")
[ -n "$p" ] || { p=0; f=1; }
echo "#summary $((p + loads)) passed, $f failed"
exit $rc
