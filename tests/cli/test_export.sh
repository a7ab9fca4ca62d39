#!/usr/bin/env bash
# Export and import (issue #7): `dsc export` to torchvision safetensors, PyTorch .pth and
# detectron2 .pkl, each read back by the framework's own reader (torch.load with and without
# weights_only, torchvision's load_state_dict, pickle as detectron2 loads it) and compared
# bitwise with the checkpoint; detectron2's names against the fixture of its ResNet-50 names;
# round trips dsc -> file -> dsc; PyTorch files written by torch.save (zip and legacy, bare,
# under "state_dict", "model" or "module.") imported by model.init, dsc embed and dsc export;
# the load report and --allow-partial; bad files and options give clear errors, never a crash.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/tests/cli/lib.sh"
py=/usr/bin/python3
chk="$py $root/tools/reference/check_export.py"
if ! $py -c "import torch, torchvision" 2>/dev/null; then
  bad "python3-torch and python3-torchvision are needed (scripts/deps.sh installs them)"
  echo "#summary $passed passed, $failed failed"
  exit 1
fi
# check NAME CMD...: a checker run; its "ok" lines are shown, a failure shows its output.
check() {
  local name=$1
  shift
  if "$@" > "$tmp/chk" 2>&1; then ok "$name: $(tr '\n' ';' < "$tmp/chk" | sed 's/^ok //; s/;ok /; /g; s/;$//')"
  else bad "$name: $(tail -c 1200 "$tmp/chk")"; fi
}
# crashless NAME NEEDLE CMD...: CMD fails with exit 1 or 2 (an error, not a signal) and says NEEDLE.
crashless() {
  local name=$1 needle=$2
  shift 2
  "$@" > "$tmp/out" 2>&1
  local rc=$?
  if { [ $rc -eq 1 ] || [ $rc -eq 2 ]; } && grep -qF -- "$needle" "$tmp/out"; then ok "$name"
  else bad "$name (exit $rc, output: $(tail -c 800 "$tmp/out"))"; fi
}

# ---- a small dsc checkpoint: 2 steps of dsc-km, resnet18 with the small stem ----
"$dsc" data scenes --out "$tmp/scn" --train 8 --val 2 --size 16 --threads 2 > "$tmp/out" 2>&1 ||
  bad "dsc data scenes: $(tail -c 800 "$tmp/out")"
if "$dsc" pretrain data.path="$tmp/scn/JPEGImages" model.arch=resnet18 model.stem=small data.size=16 \
     data.batch=4 method.bn_groups=2 method.queue=8 model.dim=16 method.clusters=3 method=dsc-km \
     optim.steps=2 run.threads=2 data.workers=2 run.out="$tmp/run" > "$tmp/out" 2>&1; then
  ok "2-step pretraining for the checkpoint"
else bad "pretraining: $(tail -c 1500 "$tmp/out")"; fi
ck="$tmp/run/checkpoint.safetensors"

# ---- the three formats, each read by its framework ----
expect "export torchvision" 0 "resnet18, small stem, online encoder, step 2" \
  "$dsc" export --ckpt "$ck" --format torchvision --out "$tmp/tv.safetensors"
check "torchvision export = the checkpoint's backbone.*" $chk tv "$tmp/tv.safetensors" "$ck" backbone.
expect "export pth" 0 "(pth)" "$dsc" export --ckpt "$ck" --format pth --out "$tmp/ck.pth"
check ".pth read by torch.load" $chk pth "$tmp/ck.pth" "$tmp/tv.safetensors"
expect "export detectron2" 0 "(detectron2)" "$dsc" export --ckpt "$ck" --format detectron2 --out "$tmp/ck.pkl"
check "detectron2 .pkl read by pickle" $chk d2 "$tmp/ck.pkl" "$tmp/tv.safetensors"
expect "export the momentum encoder" 0 "momentum encoder" \
  "$dsc" export --ckpt "$ck" --format torchvision --encoder momentum --out "$tmp/mom.safetensors"
check "momentum export = the checkpoint's momentum.backbone.*" $chk tv "$tmp/mom.safetensors" "$ck" momentum.backbone.

# ---- ResNet-50: detectron2's names, torchvision's standard stem ----
"$dsc" selfcheck --arch resnet50 --size 32 --batch 2 --steps 1 --save "$tmp/r50.safetensors" > "$tmp/out" 2>&1 ||
  bad "selfcheck resnet50: $(tail -c 800 "$tmp/out")"
"$dsc" export --ckpt "$tmp/r50.safetensors" --format torchvision --out "$tmp/r50tv.safetensors" --quiet &&
  "$dsc" export --ckpt "$tmp/r50.safetensors" --format detectron2 --out "$tmp/r50.pkl" --quiet &&
  "$dsc" export --ckpt "$tmp/r50.safetensors" --format pth --out "$tmp/r50.pth" --quiet ||
  bad "resnet50 exports"
check "resnet50 detectron2 names = detectron2's backbone names" \
  $chk d2 "$tmp/r50.pkl" "$tmp/r50tv.safetensors" "$root/tests/golden/detectron2_r50_names.txt"
check "resnet50 .pth loads into torchvision.models.resnet50" $chk pth "$tmp/r50.pth" "$tmp/r50tv.safetensors"

# ---- round trips dsc -> file -> dsc ----
"$dsc" export --ckpt "$tmp/ck.pth" --format torchvision --out "$tmp/back.safetensors" --quiet ||
  bad "export from the .pth"
check "checkpoint -> .pth -> dsc -> safetensors is exact" $chk same "$tmp/back.safetensors" "$tmp/tv.safetensors"
if "$dsc" embed --weights "$ck" --input "$tmp/scn/JPEGImages" --size 16 --resize 16 --threads 2 \
     --out "$tmp/e1.safetensors" > "$tmp/out" 2>&1 &&
   "$dsc" embed --weights "$tmp/ck.pth" --input "$tmp/scn/JPEGImages" --size 16 --resize 16 --threads 2 \
     --out "$tmp/e2.safetensors" >> "$tmp/out" 2>&1; then
  check "dsc embed of the .pth = of the checkpoint" $chk same "$tmp/e1.safetensors" "$tmp/e2.safetensors"
else bad "embed: $(tail -c 800 "$tmp/out")"; fi
expect "dsc info reads a .pth" 0 "layer4.1.bn2.running_var" "$dsc" info "$tmp/ck.pth"

# ---- torchvision weights saved by torch.save, imported ----
for v in "resnet18 none zip" "resnet18 state_dict legacy" "resnet34 model zip" "resnet18 module zip" "resnet18 none legacy"; do
  set -- $v
  f="$tmp/tsave_$1_$2_$3.pth"
  if $chk torchsave "$f" "$tmp/ref_$1_$2_$3.safetensors" "$1" "$2" "$3" > "$tmp/out" 2>&1 &&
     "$dsc" export --ckpt "$f" --format torchvision --out "$tmp/imp.safetensors" --quiet > "$tmp/out" 2>&1; then
    check "torch.save'd $1 ($2, $3 format) imported exactly" $chk same "$tmp/imp.safetensors" "$tmp/ref_$1_$2_$3.safetensors"
  else bad "import of $f: $(tail -c 800 "$tmp/out")"; fi
done
init="$tmp/tsave_resnet18_state_dict_legacy.pth"
if "$dsc" pretrain data.path="$tmp/scn/JPEGImages" model.arch=resnet18 data.size=32 data.batch=4 \
     method.bn_groups=2 method.queue=8 model.dim=16 method=densecl optim.steps=2 run.threads=2 \
     data.workers=2 model.init="$init" run.out="$tmp/run2" run.dump_step="$tmp/dump" > "$tmp/out" 2>&1 &&
   grep -q "model.init: backbone loaded from" "$tmp/out"; then
  check "model.init=.pth: the first step starts from exactly those weights" \
    $chk under "$tmp/dump/step.safetensors" backbone. "$tmp/ref_resnet18_state_dict_legacy.safetensors"
else bad "pretrain model.init=.pth: $(tail -c 1200 "$tmp/out")"; fi

# ---- the load report and --allow-partial ----
$chk misfit "$tmp/misfit.pth" > "$tmp/out" 2>&1 || bad "misfit fixture: $(cat "$tmp/out")"
crashless "a mis-fitting file is refused with its load report" "1 missing [layer4.1.bn2.bias], 1 unexpected [layer5.0.conv1.weight], 1 mis-shaped [conv1.weight (file [64,3,5,5], model [64,3,7,7])]" \
  "$dsc" embed --weights "$tmp/misfit.pth" --input "$tmp/scn/JPEGImages" --out "$tmp/e3.safetensors" --size 32
if grep -q "^  mis-shaped conv1.weight" "$tmp/out" && grep -q "^  unexpected layer5.0.conv1.weight" "$tmp/out"; then
  ok "the load report lists every tensor by name"
else bad "load report: $(tail -c 800 "$tmp/out")"; fi
expect "--allow-partial loads what matches" 0 "partial load allowed" \
  "$dsc" embed --weights "$tmp/misfit.pth" --input "$tmp/scn/JPEGImages" --out "$tmp/e3.safetensors" --size 32 --allow-partial
crashless "pretrain model.init with a mis-fitting file" "does not match the model" \
  "$dsc" pretrain data.path="$tmp/scn/JPEGImages" model.arch=resnet18 data.size=32 data.batch=4 method.bn_groups=2 \
  method.queue=8 model.dim=16 method=densecl optim.steps=1 model.init="$tmp/misfit.pth" run.out="$tmp/run3"
expect "pretrain --allow-partial" 0 "partial load allowed" \
  "$dsc" pretrain data.path="$tmp/scn/JPEGImages" model.arch=resnet18 data.size=32 data.batch=4 method.bn_groups=2 \
  method.queue=8 model.dim=16 method=densecl optim.steps=1 model.init="$tmp/misfit.pth" run.out="$tmp/run4" --allow-partial
crashless "resnet18 weights for a resnet50" "holds a resnet18" \
  "$dsc" pretrain data.path="$tmp/scn/JPEGImages" model.arch=resnet50 model.init="$tmp/ck.pth" run.out="$tmp/run5" \
  data.size=32 data.batch=4 method.bn_groups=2 method.queue=8 optim.steps=1

# ---- bad files and options ----
head -c 3000 "$tmp/ck.pth" > "$tmp/trunc.pth"
crashless "a truncated .pth" "trunc.pth" "$dsc" export --ckpt "$tmp/trunc.pth" --format pth --out "$tmp/x.pth"
head -c 100 "$tmp/tsave_resnet18_none_legacy.pth" > "$tmp/trunc_legacy.pth"
crashless "a truncated legacy .pth" "trunc_legacy.pth" "$dsc" export --ckpt "$tmp/trunc_legacy.pth" --format pth --out "$tmp/x.pth"
$py -c "import torch; torch.save([1, 2, 3], '$tmp/list.pth')"
crashless "a .pth holding no state dict" "list.pth" "$dsc" embed --weights "$tmp/list.pth" --input "$tmp/scn/JPEGImages" --out "$tmp/x.safetensors"
printf 'PK\003\004 not a zip at all' > "$tmp/garbage.pth"
crashless "a file that only starts like a zip" "garbage.pth" "$dsc" export --ckpt "$tmp/garbage.pth" --format torchvision --out "$tmp/x.safetensors"
$py -c "import pickle; pickle.dump({'state_dict': {'conv1.weight': 3}}, open('$tmp/wrongpickle.pth', 'wb'), protocol=2)"
crashless "a pickle without tensors" "wrongpickle.pth" "$dsc" export --ckpt "$tmp/wrongpickle.pth" --format torchvision --out "$tmp/x.safetensors"
crashless "an unknown --format" "--format onnx" "$dsc" export --ckpt "$ck" --format onnx --out "$tmp/x"
crashless "--out is the source" "is the source itself" "$dsc" export --ckpt "$ck" --format torchvision --out "$ck"
crashless "--encoder momentum of torchvision weights" "needs a dsc checkpoint" \
  "$dsc" export --ckpt "$tmp/tv.safetensors" --format torchvision --encoder momentum --out "$tmp/x.safetensors"
for fmt in torchvision pth detectron2; do
  crashless "unwritable --out ($fmt)" "$tmp/nodir/x" "$dsc" export --ckpt "$ck" --format $fmt --out "$tmp/nodir/x"
done
[ ! -e "$tmp/nodir" ] && [ -z "$(ls "$tmp" | grep '\.tmp\.')" ] && ok "failed exports leave nothing behind" ||
  bad "failed exports left files: $(ls "$tmp")"
crashless "export without --out" "needs --out" "$dsc" export --ckpt "$ck" --format pth

echo "#summary $passed passed, $failed failed"
[ $failed -eq 0 ]
